"""Run several models on the same folds and tabulate their accuracy and cost.

``compare(models, data, folds=5)`` fits every model on every training fold, predicts the
held-out ratings and returns one row per (model, fold): RMSE, MAE, the coverage of the
central ``prob`` predictive intervals (for models with ``predict_interval``), and the
seconds spent fitting and predicting. :func:`summarize` reduces it to mean and standard
deviation over folds.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from bpmf import metrics
from bpmf._config import resolve_progressbar
from bpmf.datasets import Split, kfold, load_dataset, load_movielens_folds
from bpmf.datasets._movielens import MOVIELENS
from bpmf.datasets._ratings import Ratings, as_ratings
from bpmf.registry import make_model

__all__ = ["compare", "summarize", "calibration_table", "to_markdown"]

#: Official ML-100K protocol: the five disjoint 80/20 folds u1-u5 (ua/ub are another protocol).
OFFICIAL_FOLDS = ("u1", "u2", "u3", "u4", "u5")

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
        keep a fitted model for plots (``compare`` itself keeps none).
    progress : bool, optional
        Print one line per fitted model to stderr; ``None`` follows the package setting
        (:func:`bpmf.set_config`).

    Returns
    -------
    pandas.DataFrame
        One row per (model, fold) with columns ``model, fold, n_train, n_test, n_unseen,
        rmse, mae, coverage, fit_seconds, predict_seconds`` and one ``coverage_XX`` column per
        calibration level. Coverage is NaN for models without predictive intervals.
        ``n_unseen`` counts test pairs whose user or item is absent from training (predicted
        from the population level).

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
    splits = resolve_folds(data, folds, random_state=random_state, data_home=data_home)
    entries = _resolve_models(models)
    show = resolve_progressbar(progress)

    rows = []
    for label, make in entries:
        for fold, split in splits.items():
            model = make(preset, random_state)
            row = _score(model, split, prob, levels)
            rows.append({"model": label, "fold": fold, **row})
            if show:
                print(
                    f"[bpmf compare] {label:>16s} {fold:>6s}  rmse {row['rmse']:.4f}  "
                    f"fit {row['fit_seconds']:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
            if callback is not None:
                callback(label, fold, model, split)
    columns = RESULT_COLUMNS + [_coverage_column(p) for p in levels]
    results = pd.DataFrame(rows, columns=columns)
    results.attrs["prob"] = float(prob)
    return results


def _check_prob(value, what):
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise ValueError(f"{what} must be a probability strictly between 0 and 1, got {value!r}.")


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
        if hasattr(model, "predict_interval"):
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
                f"({', '.join(official)}), got data={data!r}. Use an integer number of folds "
                "for other data."
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
        f"folds must be an integer, 'official', a Split, or a list/dict of Splits; got {folds!r}."
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
        make_model_now = _named_factory(model, {})
    elif _is_named_params(model):
        make_model_now = _named_factory(model[0], dict(model[1]))
    elif hasattr(model, "fit") and hasattr(model, "predict") and hasattr(model, "get_params"):
        # Fitted or not, an instance is cloned from its settings and refitted on every fold.
        params = model.get_params()
        cls = type(model)

        def make_model_now(preset, random_state):
            return cls(**params)
    else:
        raise ValueError(
            f"Cannot use {model!r} as a model: give a registered name, a (name, params) tuple "
            "or an estimator with fit/predict/get_params."
        )
    return make_model_now


def _named_factory(name, params):
    # Fail on an unknown name or parameter now, before any fitting starts.
    make_model(name, params=params)

    def make_model_now(preset, random_state):
        return make_model(name, preset=preset, params=params, random_state=random_state)

    return make_model_now


def summarize(results):
    """Mean and standard deviation over folds of every metric, one row per model.

    Parameters
    ----------
    results : pandas.DataFrame
        The output of :func:`compare`.

    Returns
    -------
    pandas.DataFrame
        Indexed by model, in the order of ``results``, with columns ``n_folds``,
        ``<metric>_mean`` and ``<metric>_std`` (sample standard deviation, ``ddof=1``; NaN
        for a single fold) for rmse, mae, coverage and the timings; sorted by mean RMSE.
    """
    _require(results, ["model", "fold", "rmse"])
    metric_columns = [
        c
        for c in results.columns
        if c in {"rmse", "mae", "coverage", "fit_seconds", "predict_seconds"}
        or c.startswith("coverage_")
    ]
    grouped = results.groupby("model", sort=False)
    summary = pd.DataFrame({"n_folds": grouped["fold"].count()})
    for column in metric_columns:
        summary[f"{column}_mean"] = grouped[column].mean()
        summary[f"{column}_std"] = grouped[column].std(ddof=1)
    return summary.sort_values("rmse_mean", kind="stable")


def calibration_table(results):
    """Nominal versus observed coverage, long format: ``model, nominal, observed, fold``.

    Built from the ``coverage`` (at ``nominal`` = the compare ``prob``) and ``coverage_XX``
    columns; models without intervals are left out.
    """
    _require(results, ["model", "fold"])
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


def _require(frame, columns):
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
    return "\n".join(lines) + "\n"


def _mean_std(row, metric, digits):
    mean = row.get(f"{metric}_mean", np.nan)
    std = row.get(f"{metric}_std", np.nan)
    if pd.isna(mean):
        return "-"
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
