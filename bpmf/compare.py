"""Run several models on the same folds and tabulate their accuracy and cost.

``compare(models, data, folds=5)`` fits every model on every training fold, predicts the
held-out ratings and returns one row per (model, fold): RMSE, MAE, the coverage of the
central ``prob`` predictive intervals (for models with ``predict_interval``), and the
seconds spent fitting and predicting. :func:`summarize` reduces it to mean and standard
deviation over folds.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from bpmf import metrics
from bpmf._config import config_context, get_config, resolve_progressbar
from bpmf._validation import check_prob, check_random_state, describe, warn
from bpmf.datasets import Split, kfold, load_dataset, load_movielens_folds
from bpmf.datasets._movielens import MOVIELENS
from bpmf.datasets._ratings import Ratings, as_ratings
from bpmf.registry import make_model

__all__ = ["compare", "summarize", "calibration_table", "to_markdown"]

#: Official ML-100K protocol: the five disjoint 80/20 folds u1-u5 (ua/ub are another protocol).
OFFICIAL_FOLDS = ("u1", "u2", "u3", "u4", "u5")

#: Columns of every result row (then one ``coverage_XX`` per calibration level, and ``error``).
RESULT_COLUMNS = [
    "model",
    "fold",
    "n_train",
    "n_test",
    "n_unseen",
    "rmse",
    "mae",
    "coverage",
    "fit_seconds",
    "predict_seconds",
]


def compare(
    models,
    data=None,
    *,
    folds=5,
    prob=0.9,
    calibration=(0.5, 0.8, 0.95),
    preset="default",
    random_state=None,
    data_home=None,
    callback=None,
    progress=None,
    checkpoint=None,
    resume=False,
    n_jobs=None,
    backend=None,
):
    """Fit and score several models on the same train/test folds.

    Parameters
    ----------
    models : str, estimator, list or dict
        The models. Each one is a registered name (``"bpmf"``, ``"user-mean"``, see
        :func:`bpmf.registry.list_models`), a ``(name, params)`` tuple with constructor
        arguments, or an unfitted estimator instance (cloned for every fold from its
        ``get_params()``). A dict maps the labels used in the results to such models; in a
        list, labels are the names, or the class names for instances.
    data : Ratings, DataFrame or str, optional
        The ratings to split, or a dataset name/path for :func:`bpmf.datasets.load_dataset`.
        May be omitted when ``folds`` already holds the splits.
    folds : int, "official", Split, list of Split or dict of Split, default 5
        An integer ``k`` for a seeded k-fold split of ``data``; ``"official"`` for the
        official MovieLens folds u1-u5 (``data`` must name the release, e.g. ``"ml-100k"``);
        or ready-made :class:`~bpmf.datasets.Split` objects (a dict keeps its fold names).
    prob : float, default 0.9
        Probability mass of the central predictive intervals scored in ``coverage``.
    calibration : sequence of float, default (0.5, 0.8, 0.95)
        Further interval probabilities whose coverage is reported as ``coverage_50`` etc.
        (the points of a calibration curve); empty to skip.
    preset : str, default "default"
        Preset of settings for models given by name (see :data:`bpmf.registry.PRESETS`).
    random_state : int, optional
        Seeds the k-fold split and every model given by name that takes a ``random_state``.
    data_home : str or Path, optional
        Where MovieLens lives, for ``data``/``folds`` that name it.
    callback : callable, optional
        Called as ``callback(label, fold, model, split)`` after each model is scored, e.g. to
        keep a fitted model for plots (``compare`` itself keeps none). With ``n_jobs`` the
        fitted models travel back from the workers for it.
    progress : bool, optional
        Print one line per finished (model, fold) to stderr, as it finishes; ``None`` follows
        the package setting (:func:`bpmf.set_config`).
    checkpoint : str or Path, optional
        A CSV file that receives every finished (model, fold) row as soon as it finishes, so
        that an interrupted or failing run loses no finished work. At the end it is rewritten
        in grid order (rows of other models or folds already in it are kept after those).
    resume : bool, default False
        Skip the (model, fold) pairs that ``checkpoint`` already holds without an error (their
        rows are reused). Without it, an existing non-empty ``checkpoint`` is an error.
    n_jobs : int, optional
        Run the fold x model grid through :mod:`joblib` on this many workers (``-1``: all).
        ``None`` or 1 runs serially in this process, unless ``backend`` is given.
    backend : str, optional
        A joblib backend: ``"loky"`` (processes, the default for ``n_jobs > 1``),
        ``"threading"``, ``"dask"`` (needs a ``dask.distributed.Client``; the grid then runs
        on its cluster) or ``"ray"`` (needs ``ray.util.joblib.register_ray()``). The results
        do not depend on it: every (model, fold) gets the same split and seed as serially.

    Returns
    -------
    pandas.DataFrame
        One row per (model, fold) with columns ``model, fold, n_train, n_test, n_unseen,
        rmse, mae, coverage, fit_seconds, predict_seconds``, one ``coverage_XX`` column per
        calibration level and ``error``. Coverage is NaN for models without predictive
        intervals. ``n_unseen`` counts test pairs whose user or item is absent from training
        (predicted from the population level). A model that raises on a fold gets a row with
        NaN metrics and the exception in ``error`` (empty otherwise), the other fits go on,
        and a :class:`UserWarning` says how many failed.

    See Also
    --------
    summarize : mean and standard deviation over folds.

    Examples
    --------
    >>> from bpmf import compare, datasets
    >>> ratings = datasets.load_food_world_cup()
    >>> results = compare(["user-mean", "item-mean"], ratings, folds=3, random_state=0)
    >>> list(results["model"].unique())
    ['user-mean', 'item-mean']
    """
    _check_prob(prob, "prob")
    levels = sorted({float(p) for p in calibration} - {float(prob)})
    for level in levels:
        _check_prob(level, "calibration level")
    random_state = check_random_state(random_state)
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs == 0
    ):
        raise ValueError(f"n_jobs must be a non-zero integer (-1 for all cores), got {n_jobs!r}.")
    splits = resolve_folds(data, folds, random_state=random_state, data_home=data_home)
    entries = _resolve_models(models)
    show = resolve_progressbar(progress)
    columns = RESULT_COLUMNS + [_coverage_column(p) for p in levels] + ["error"]
    grid = [(label, fold) for label, _ in entries for fold in splits]

    store = _Checkpoint(checkpoint, columns) if checkpoint is not None else None
    done = store.load(resume, splits) if store is not None else {}
    todo = [
        (label, make, fold, split)
        for label, make in entries
        for fold, split in splits.items()
        if (label, fold) not in done
    ]
    if show and done:
        _progress(f"resuming: {len(done)} of {len(grid)} results already in {checkpoint}")

    rows = dict(done)
    finished = len(done)
    model_settings = get_config()
    if backend is not None or (n_jobs is not None and n_jobs != 1):
        # Progress bars of models running side by side in workers would interleave; the
        # per-fit lines below report progress instead.
        model_settings["progressbar"] = False
    for label, fold, row, model, caught in _run_grid(
        todo, preset, random_state, prob, levels, callback is not None, n_jobs, backend,
        model_settings,
    ):
        row = {"model": label, "fold": fold, **row}
        rows[(label, fold)] = row
        if store is not None:
            store.append(row)
        finished += 1
        for category, message in caught:
            warn(f"{label}, {fold}: {message}", category)
        if show:
            _progress(_progress_line(row, finished, len(grid)))
        if callback is not None and model is not None:
            callback(label, fold, model, splits[fold])
    results = pd.DataFrame([rows[key] for key in grid], columns=columns)
    results["error"] = results["error"].fillna("").astype(str)
    results.attrs["prob"] = float(prob)
    if store is not None:
        store.finish(results)
    failed = results[results["error"] != ""]
    if len(failed):
        first = failed.iloc[0]
        warn(
            f"{len(failed)} of {len(results)} fits failed (e.g. {first['model']} on "
            f"{first['fold']}: {first['error']}); their rows have NaN metrics and the message "
            "in the 'error' column."
        )
    return results


def _progress(message):
    print(f"[bpmf compare] {message}", file=sys.stderr, flush=True)


def _progress_line(row, finished, total):
    where = f"({finished}/{total}) {row['model']:>16s} {row['fold']:>6s}"
    if row["error"]:
        return f"{where}  FAILED: {row['error']}"
    return f"{where}  rmse {row['rmse']:.4f}  fit {row['fit_seconds']:.1f}s"


def _run_grid(todo, preset, random_state, prob, levels, keep_models, n_jobs, backend, settings):
    """Yield ``(label, fold, row, model or None, warnings)`` as each (model, fold) finishes."""
    tasks = [
        (label, fold, make, split, preset, random_state, prob, levels, keep_models, settings)
        for label, make, fold, split in todo
    ]
    if backend is None and (n_jobs is None or n_jobs == 1):
        for task in tasks:
            yield _run_task(*task)
        return
    try:
        import joblib
    except ImportError as exc:  # pragma: no cover - joblib is a dependency
        raise ImportError("n_jobs/backend need joblib: pip install joblib.") from exc
    n_jobs = -1 if n_jobs is None else int(n_jobs)
    _prepare_backend(backend)
    config = joblib.parallel_config(backend=backend) if backend is not None else nullcontext()
    with config:
        jobs = (joblib.delayed(_run_task)(*task) for task in tasks)
        # Results in the order they finish where the backend can stream them; the
        # multiprocessing backend cannot, and delivers them all at the end.
        for return_as in ("generator_unordered", "generator", "list"):
            try:
                stream = joblib.Parallel(n_jobs=n_jobs, return_as=return_as)(jobs)
                break
            except ValueError as exc:
                if f"return_as={return_as}" not in str(exc):
                    raise
                jobs = (joblib.delayed(_run_task)(*task) for task in tasks)
        yield from stream


def _prepare_backend(backend):
    """Register the optional backends, with an install hint when their package is missing."""
    if backend == "ray":
        try:
            from ray.util.joblib import register_ray
        except ImportError as exc:
            raise ImportError("backend='ray' needs ray: pip install 'bpmf[ray]'.") from exc
        register_ray()
    elif backend == "dask":
        try:
            from distributed import default_client
        except ImportError as exc:
            raise ImportError(
                "backend='dask' needs dask.distributed: pip install 'bpmf[dask]'."
            ) from exc
        try:
            default_client()
        except ValueError:
            raise ValueError(
                "backend='dask' runs on a dask.distributed Client: create one first, "
                "Client() for a local cluster or Client('scheduler-address:8786') for a "
                "running one."
            ) from None


def _run_task(label, fold, make, split, preset, random_state, prob, levels, keep_model, settings):
    """Fit and score one (model, fold); never raises for a failing model (see ``error``)."""
    with config_context(**settings), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        model = None
        try:
            model = make(preset, random_state)
            row = {**_score(model, split, prob, levels), "error": ""}
        except Exception as exc:  # a failing model is reported, the grid goes on
            row = _failed_row(split, prob, levels, exc)
            model = None
    messages = [(w.category, str(w.message)) for w in caught]
    return label, fold, row, (model if keep_model else None), messages


def _failed_row(split, prob, levels, exc):
    message = " ".join(str(exc).split())
    row = {
        "n_train": split.train.n_ratings,
        "n_test": split.test.n_ratings,
        "n_unseen": split.unseen["pairs"],
        **{c: np.nan for c in ("rmse", "mae", "coverage", "fit_seconds", "predict_seconds")},
        **{_coverage_column(p): np.nan for p in levels},
        "error": f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
    }
    return row


class _Checkpoint:
    """The CSV that receives every finished (model, fold) row at once."""

    def __init__(self, path, columns):
        self.path = Path(path)
        self.columns = columns
        self.previous = pd.DataFrame(columns=columns)
        if self.path.is_dir():
            raise ValueError(f"checkpoint {str(self.path)!r} is a folder; give a CSV file path.")
        if not self.path.parent.is_dir():
            raise ValueError(f"The folder of checkpoint {str(self.path)!r} does not exist.")

    def load(self, resume, splits):
        """``{(model, fold): row}`` of the reusable rows; checks they fit the current folds."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return {}
        if not resume:
            raise FileExistsError(
                f"{str(self.path)!r} already holds results of an earlier run; pass resume=True "
                "to continue it (finished fits are skipped), or write elsewhere."
            )
        try:
            old = pd.read_csv(
                self.path, dtype={"model": str, "fold": str, "error": str}, keep_default_na=False,
                na_values={c: [""] for c in self.columns if c not in ("model", "fold", "error")},
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"Cannot resume from {str(self.path)!r}: {exc}") from exc
        if list(old.columns) != self.columns:
            raise ValueError(
                f"Cannot resume from {str(self.path)!r}: its columns {list(old.columns)} are "
                f"not those of this run {self.columns} (another prob or calibration?)."
            )
        old["error"] = old["error"].fillna("")
        old = old.drop_duplicates(["model", "fold"], keep="last")
        self.previous = old
        done = {}
        for row in old.to_dict("records"):
            split = splits.get(row["fold"])
            if split is None or row["error"]:
                continue
            if (row["n_train"], row["n_test"]) != (split.train.n_ratings, split.test.n_ratings):
                raise ValueError(
                    f"Cannot resume from {str(self.path)!r}: its row for {row['model']} on "
                    f"{row['fold']} has {row['n_train']}/{row['n_test']} train/test ratings but "
                    f"this run's fold has {split.train.n_ratings}/{split.test.n_ratings} "
                    "(other data, folds or seed); write elsewhere or drop resume."
                )
            done[(row["model"], row["fold"])] = row
        return done

    def append(self, row):
        header = not self.path.is_file() or self.path.stat().st_size == 0
        frame = pd.DataFrame([row], columns=self.columns)
        with open(self.path, "a", newline="") as handle:
            frame.to_csv(handle, header=header, index=False)
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, results):
        """Rewrite in grid order, keeping the rows of other (model, fold) pairs after them."""
        keys = set(zip(results["model"], results["fold"], strict=True))
        others = self.previous[
            [(m, f) not in keys for m, f in zip(self.previous["model"], self.previous["fold"],
                                                 strict=True)]
        ]
        frame = pd.concat([results, others], ignore_index=True) if len(others) else results
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        frame.to_csv(temporary, index=False)
        os.replace(temporary, self.path)


def _check_prob(value, what):
    check_prob(value, what)


def _coverage_column(level):
    return f"coverage_{round(100 * level):d}"


def _score(model, split, prob, levels):
    train, test = split
    start = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with warnings.catch_warnings():
        # Unseen users/items are counted in n_unseen; the per-call warning would only repeat it.
        warnings.filterwarnings("ignore", message=r".*unseen in training", category=UserWarning)
        predicted = np.asarray(model.predict(test), dtype=np.float64)
        intervals = {}
        # whole-rating (ordinal) predictions take their ranges from predict_interval, which
        # picks them by probability; quantiles of a discrete distribution over-cover
        discrete = hasattr(model, "classes_")
        if hasattr(model, "predict_quantiles") and not discrete:  # one pass, every level
            tails = {level: (1.0 - level) / 2.0 for level in (prob, *levels)}
            quantiles = model.predict_quantiles(
                test, sorted({q for t in tails.values() for q in (t, 1.0 - t)})
            )
            for level, tail in tails.items():
                intervals[level] = (
                    np.asarray(quantiles[tail], dtype=np.float64),
                    np.asarray(quantiles[1.0 - tail], dtype=np.float64),
                )
        elif hasattr(model, "predict_interval"):
            for level in (prob, *levels):
                interval = model.predict_interval(test, prob=level)
                intervals[level] = (
                    np.asarray(interval["lower"], dtype=np.float64),
                    np.asarray(interval["upper"], dtype=np.float64),
                )
    predict_seconds = time.perf_counter() - start

    if predicted.shape != (test.n_ratings,):
        raise ValueError(
            f"{type(model).__name__}.predict returned shape {predicted.shape} for "
            f"{test.n_ratings} test pairs; it must return one value per pair."
        )
    y_true = test.values
    row = {
        "n_train": train.n_ratings,
        "n_test": test.n_ratings,
        "n_unseen": split.unseen["pairs"],
        "rmse": metrics.rmse(y_true, predicted),
        "mae": metrics.mae(y_true, predicted),
        "coverage": np.nan,
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
    }
    for level in (prob, *levels):
        column = "coverage" if level == prob else _coverage_column(level)
        row[column] = metrics.coverage(y_true, *intervals[level]) if intervals else np.nan
    return row


def resolve_folds(data=None, folds=5, *, random_state=None, data_home=None):
    """Turn ``data`` and a ``folds`` specification into ``{fold name: Split}``.

    See :func:`compare` for the accepted forms.
    """
    if isinstance(folds, Split):
        return {"fold1": folds}
    if isinstance(folds, Mapping):
        splits = dict(folds)
        _check_splits(splits.values())
        if not splits:
            raise ValueError("folds is an empty dict; give at least one Split.")
        return {str(name): split for name, split in splits.items()}
    if isinstance(folds, list | tuple):
        _check_splits(folds)
        if not folds:
            raise ValueError("folds is empty; give at least one Split.")
        return {f"fold{k + 1}": split for k, split in enumerate(folds)}
    if isinstance(folds, str) and folds.strip().lower() == "official":
        name = data if isinstance(data, str) else None
        if name not in MOVIELENS or not MOVIELENS[name].folds:
            official = [n for n, spec in MOVIELENS.items() if spec.folds]
            raise ValueError(
                f"folds='official' needs data naming a MovieLens release with official folds "
                f"({', '.join(official)}), got data={describe(data)}. Use an integer number of "
                "folds for other data."
            )
        every = load_movielens_folds(name, data_home=data_home, download=False)
        return {fold: every[fold] for fold in OFFICIAL_FOLDS}
    if isinstance(folds, str) and folds.strip().isdigit():
        folds = int(folds)
    if isinstance(folds, int | np.integer) and not isinstance(folds, bool):
        if data is None:
            raise ValueError(f"folds={folds} needs data to split; pass the ratings as data.")
        ratings = _load(data, data_home)
        return kfold(ratings, n_splits=int(folds), random_state=random_state)
    raise ValueError(
        "folds must be an integer, 'official', a Split, or a list/dict of Splits; got "
        f"{describe(folds)}."
    )


def _load(data, data_home):
    if isinstance(data, str):
        return load_dataset(data, data_home=data_home)
    return as_ratings(data)


def _check_splits(splits):
    for split in splits:
        if not (isinstance(split, Split) or _is_pair_of_ratings(split)):
            raise ValueError(
                "Every fold must be a bpmf.datasets.Split(train, test); got "
                f"{type(split).__name__}."
            )


def _is_pair_of_ratings(split):
    return (
        isinstance(split, tuple)
        and len(split) == 2
        and all(isinstance(part, Ratings) for part in split)
    )


def _resolve_models(models):
    """``[(label, factory(preset, random_state) -> fresh estimator), ...]`` with unique labels."""
    if isinstance(models, str):
        models = [name.strip() for name in models.split(",") if name.strip()]
    if isinstance(models, Mapping):
        entries = [(str(label), _factory(model)) for label, model in models.items()]
    elif isinstance(models, list | tuple) and not _is_named_params(models):
        entries = [(_default_label(model), _factory(model)) for model in models]
    else:
        entries = [(_default_label(models), _factory(models))]
    if not entries:
        raise ValueError("No models to compare; give at least one model name or estimator.")
    return _unique_labels(entries)


def _is_named_params(model):
    return (
        isinstance(model, tuple)
        and len(model) == 2
        and isinstance(model[0], str)
        and isinstance(model[1], Mapping)
    )


def _default_label(model):
    if isinstance(model, str):
        return model.strip().lower()
    if _is_named_params(model):
        return model[0].strip().lower()
    return type(model).__name__


def _unique_labels(entries):
    seen = {}
    unique = []
    for label, factory in entries:
        seen[label] = seen.get(label, 0) + 1
        unique.append((label if seen[label] == 1 else f"{label}-{seen[label]}", factory))
    return unique


def _factory(model):
    if isinstance(model, str):
        return _NamedFactory(model, {})
    if _is_named_params(model):
        return _NamedFactory(model[0], dict(model[1]))
    if hasattr(model, "fit") and hasattr(model, "predict") and hasattr(model, "get_params"):
        # Fitted or not, an instance is cloned from its settings and refitted on every fold.
        return _CloneFactory(type(model), model.get_params())
    raise ValueError(
        f"Cannot use {describe(model)} as a model: give a registered name, a (name, params) "
        "tuple or an estimator with fit/predict/get_params."
    )


class _NamedFactory:
    """``factory(preset, random_state)`` -> a fresh registered model (picklable, for workers)."""

    def __init__(self, name, params):
        # Fail on an unknown name or parameter now, before any fitting starts.
        make_model(name, params=params)
        self.name, self.params = name, params

    def __call__(self, preset, random_state):
        return make_model(self.name, preset=preset, params=self.params, random_state=random_state)


class _CloneFactory:
    """``factory(preset, random_state)`` -> a fresh instance with the given settings."""

    def __init__(self, cls, params):
        self.cls, self.params = cls, params

    def __call__(self, preset, random_state):
        return self.cls(**self.params)


def summarize(results):
    """Mean and standard deviation over folds of every metric, one row per model.

    Parameters
    ----------
    results : pandas.DataFrame
        The output of :func:`compare`.

    Returns
    -------
    pandas.DataFrame
        Indexed by model, in the order of ``results``, with columns ``n_folds`` (folds that
        were scored), ``n_failed`` and ``error`` (the first failure's message, empty when
        none), and ``<metric>_mean`` and ``<metric>_std`` (sample standard deviation,
        ``ddof=1``; NaN for a single fold) for rmse, mae, coverage and the timings, over the
        scored folds; sorted by mean RMSE (models that never scored last).
    """
    require_results(results, ["model", "fold", "rmse"])
    metric_columns = [
        c
        for c in results.columns
        if c in {"rmse", "mae", "coverage", "fit_seconds", "predict_seconds"}
        or c.startswith("coverage_")
    ]
    ok = results["rmse"].notna()
    if "error" in results:
        ok &= results["error"].fillna("").astype(str) == ""
    grouped = results.assign(_ok=ok).groupby("model", sort=False)
    summary = pd.DataFrame({"n_folds": grouped["_ok"].sum().astype(int)})
    summary["n_failed"] = grouped["_ok"].count() - summary["n_folds"]
    if "error" in results:
        errors = results.loc[~ok].groupby("model", sort=False)["error"].first()
        summary["error"] = errors.reindex(summary.index).fillna("")
    for column in metric_columns:
        summary[f"{column}_mean"] = grouped[column].mean()
        summary[f"{column}_std"] = grouped[column].std(ddof=1)
    return summary.sort_values("rmse_mean", kind="stable")


def calibration_table(results):
    """Nominal versus observed coverage, long format: ``model, nominal, observed, fold``.

    Built from the ``coverage`` (at ``nominal`` = the compare ``prob``) and ``coverage_XX``
    columns; models without intervals are left out.
    """
    require_results(results, ["model", "fold"])
    prob = results.attrs.get("prob", 0.9)
    columns = {"coverage": prob} if "coverage" in results else {}
    columns.update(
        {c: int(c.rsplit("_", 1)[1]) / 100 for c in results.columns if c.startswith("coverage_")}
    )
    frames = [
        pd.DataFrame(
            {
                "model": results["model"],
                "fold": results["fold"],
                "nominal": nominal,
                "observed": results[column],
            }
        )
        for column, nominal in columns.items()
    ]
    if not frames:
        return pd.DataFrame(columns=["model", "fold", "nominal", "observed"])
    table = pd.concat(frames, ignore_index=True).dropna(subset=["observed"])
    return table.sort_values(["model", "nominal", "fold"], kind="stable").reset_index(drop=True)


def require_results(frame, columns):
    """Raise unless ``frame`` is a results DataFrame of :func:`compare` with ``columns``."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"Expected the DataFrame returned by compare(), got {type(frame).__name__}."
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The results lack column(s) {missing}; pass the DataFrame returned by compare()."
        )


def to_markdown(summary, prob=0.9, digits=4):
    """A GitHub markdown table of :func:`summarize` output (``mean ± std`` per metric).

    ``prob`` labels the coverage column (the ``prob`` given to :func:`compare`).
    """
    header = ["model", "folds", "RMSE", "MAE", f"{100 * prob:g}% coverage", "fit s", "predict s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 6) + "|"]
    for model, row in summary.iterrows():
        cells = [
            str(model),
            str(int(row["n_folds"])),
            _mean_std(row, "rmse", digits),
            _mean_std(row, "mae", digits),
            _mean_std(row, "coverage", 3),
            _mean_std(row, "fit_seconds", 2),
            _mean_std(row, "predict_seconds", 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if "n_failed" in summary:
        for model, row in summary[summary["n_failed"] > 0].iterrows():
            total = int(row["n_folds"]) + int(row["n_failed"])
            notes.append(
                f"- {model} failed on {int(row['n_failed'])} of {total} fold(s): "
                f"{row.get('error', '')}"
            )
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def _mean_std(row, metric, digits):
    mean = row.get(f"{metric}_mean", np.nan)
    std = row.get(f"{metric}_std", np.nan)
    if pd.isna(mean):
        return "-"
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
