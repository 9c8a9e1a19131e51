"""The ``bpmf`` command line: datasets, download, fit, predict, recommend, compare.

``main(argv=None) -> int`` parses ``argv`` (``sys.argv[1:]`` by default), runs one
subcommand and returns the exit status: 0 on success, 1 when the work failed (missing file,
unknown model, bad column, unknown user, ...) with one ``bpmf: error: ...`` line on stderr,
2 for a malformed command line. ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bpmf._config import config_context
from bpmf._exceptions import DataError, ModelFileError, NotFittedError
from bpmf._version import __version__

__all__ = ["main"]

#: Errors reported as one line (anything else is a bug and keeps its traceback).
_USER_ERRORS = (
    DataError,
    ModelFileError,
    NotFittedError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
    ImportError,
)

_BACKENDS = ("pymc", "nutpie", "numpyro", "blackjax")


class _Failure(Exception):
    """An error raised by the command line itself, with a ready message."""


# ---------------------------------------------------------------------- argument parsing
def _common_options(parser, suppress):
    """Options accepted both before and after the subcommand."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=default(False),
        help="no progress bars or progress lines (results and errors are still printed)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=default(0),
        help="seed for splits, model initialisation and samplers (default 0)",
    )
    parser.add_argument(
        "--data-home",
        metavar="DIR",
        default=default(None),
        help="folder holding ml-100k/ etc. (default: $BPMF_DATA, else the user cache)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show the full traceback on errors",
    )


def _data_options(parser):
    parser.add_argument(
        "--data",
        required=True,
        metavar="NAME_OR_PATH",
        help="a dataset name (see `bpmf datasets`) or a CSV/TSV/parquet file of ratings",
    )
    parser.add_argument("--user-col", default=None, help="column of user ids (default 'user')")
    parser.add_argument("--item-col", default=None, help="column of item ids (default 'item')")
    parser.add_argument("--rating-col", default=None, help="column of ratings (default 'rating')")


def _model_options(parser):
    parser.add_argument(
        "--n-factors", type=int, default=None, help="latent factors (factor models only)"
    )
    parser.add_argument(
        "--preset",
        default="default",
        help="settings preset: 'default' (class defaults) or 'quick' (small budgets)",
    )
    parser.add_argument("--draws", type=int, default=None, help="posterior draws per chain")
    parser.add_argument("--tune", type=int, default=None, help="tuning (warm-up) steps per chain")
    parser.add_argument("--chains", type=int, default=None, help="number of chains")
    parser.add_argument("--cores", type=int, default=None, help="chains run in parallel")
    parser.add_argument(
        "--backend", choices=_BACKENDS, default=None, help="NUTS implementation (nuts_sampler)"
    )


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="bpmf",
        description="Bayesian Probabilistic Matrix Factorization of rating data.",
        epilog="Run `bpmf COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"bpmf {__version__}")
    _common_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub = commands.add_parser(
        "datasets",
        parents=[common],
        help="list the known datasets, licences and locations",
        description="List the known datasets with their licence and where each is cached.",
    )
    sub.set_defaults(run=_cmd_datasets)

    sub = commands.add_parser(
        "models",
        parents=[common],
        help="list the model names and presets",
        description="List the model names accepted by --model/--models, and the presets.",
    )
    sub.set_defaults(run=_cmd_models)

    sub = commands.add_parser(
        "download",
        parents=[common],
        help="download a MovieLens release (sha256 checked)",
        description="Download and verify a MovieLens release into the data home.",
    )
    sub.add_argument("name", help="release to download, e.g. ml-100k")
    sub.set_defaults(run=_cmd_download)

    sub = commands.add_parser(
        "fit",
        parents=[common],
        help="fit one model and save it",
        description="Fit a model or baseline on rating data; report its training fit and "
        "save it with --out (models with a posterior: pmf, bpmf, bpmf-gibbs).",
    )
    sub.add_argument("--model", required=True, help="model name (see `bpmf models`)")
    _data_options(sub)
    _model_options(sub)
    sub.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any constructor argument (VALUE is JSON, else a string); repeatable",
    )
    sub.add_argument("--out", default=None, metavar="FILE", help="where to save the fitted model")
    sub.set_defaults(run=_cmd_fit)

    sub = commands.add_parser(
        "predict",
        parents=[common],
        help="predict ratings (mean and interval) for pairs",
        description="Predict the ratings of (user, item) pairs with a saved model.",
    )
    sub.add_argument("--model", required=True, metavar="FILE", help="a model saved by `bpmf fit`")
    sub.add_argument("--pairs", required=True, metavar="CSV", help="CSV with columns user and item")
    sub.add_argument("--user-col", default="user", help="column of user ids (default 'user')")
    sub.add_argument("--item-col", default="item", help="column of item ids (default 'item')")
    sub.add_argument(
        "--prob", type=float, default=0.9, help="probability of the predictive interval"
    )
    sub.add_argument(
        "--out", default=None, metavar="CSV", help="output CSV (default: print to stdout)"
    )
    sub.set_defaults(run=_cmd_predict)

    sub = commands.add_parser(
        "recommend",
        parents=[common],
        help="top-k items for a user",
        description="Recommend the k items with the highest posterior mean rating for a user.",
    )
    sub.add_argument("--model", required=True, metavar="FILE", help="a model saved by `bpmf fit`")
    sub.add_argument("--user", required=True, metavar="ID", help="a user id seen in training")
    sub.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    sub.add_argument(
        "--include-seen", action="store_true", help="also rank items the user already rated"
    )
    sub.add_argument(
        "--threshold", type=float, default=4.0, help="report P(rating >= threshold) (default 4)"
    )
    sub.set_defaults(run=_cmd_recommend)

    sub = commands.add_parser(
        "compare",
        parents=[common],
        help="compare models over folds; table, CSV and plots",
        description="Fit every model on every fold, print the summary table and write "
        "results.csv, summary.csv, summary.md and PNG plots to --out.",
    )
    _data_options(sub)
    sub.add_argument(
        "--models",
        default="all",
        metavar="LIST",
        help="comma-separated model names, or 'all' (default)",
    )
    sub.add_argument(
        "--folds", default="5", help="number of k-fold splits, or 'official' (ML-100K u1-u5)"
    )
    _model_options(sub)
    sub.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="MODEL.KEY=VALUE",
        help="a constructor argument of one model, e.g. pmf.n_factors=5; repeatable",
    )
    sub.add_argument("--prob", type=float, default=0.9, help="interval probability for coverage")
    sub.add_argument("--out", default=None, metavar="DIR", help="folder for CSV, markdown, plots")
    sub.add_argument("--no-plots", action="store_true", help="write tables only")
    sub.set_defaults(run=_cmd_compare)
    return parser


# ---------------------------------------------------------------------- entry point
def main(argv=None):
    """Run the ``bpmf`` command line; returns the exit status (0 on success)."""
    parser = _build_parser()
    if argv is not None:
        argv = [str(arg) for arg in argv]  # accept Paths and numbers from Python callers
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    try:
        with config_context(progressbar=not args.quiet), warnings.catch_warnings():
            # An application shows warnings as one line each, whatever the caller's filters.
            warnings.simplefilter("default", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.showwarning = _show_warning
            return int(args.run(args) or 0)
    except (_Failure, *_USER_ERRORS) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"bpmf: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bpmf: interrupted", file=sys.stderr)
        return 130


def _one_line(exc):
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    message = " ".join(str(message).split()) or type(exc).__name__
    if isinstance(exc, ImportError | KeyError):
        message = f"{type(exc).__name__}: {message}"
    return message


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bpmf: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _say(args, message):
    """Progress/status lines go to stderr, and not at all under --quiet."""
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- helpers
def _load_ratings(args):
    from bpmf.datasets import load_dataset

    read_kwargs = {
        key: value
        for key, value in (
            ("user_col", args.user_col),
            ("item_col", args.item_col),
            ("rating_col", args.rating_col),
        )
        if value is not None
    }
    name = args.data
    if read_kwargs and not Path(name).suffix and not Path(name).exists():
        raise _Failure(f"--user-col/--item-col/--rating-col apply to rating files, not {name!r}.")
    return load_dataset(name, data_home=args.data_home, **read_kwargs)


def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_params(items, *, per_model):
    """``KEY=VALUE`` (or ``MODEL.KEY=VALUE``) strings -> dict (of dicts)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            form = "MODEL.KEY=VALUE" if per_model else "KEY=VALUE"
            raise _Failure(f"--param {item!r} is not of the form {form}.")
        if per_model:
            model, dot, name = key.partition(".")
            if not dot or not model or not name:
                raise _Failure(f"--param {item!r} must name the model: MODEL.KEY=VALUE.")
            params.setdefault(model.lower(), {})[name] = _parse_value(value)
        else:
            params[key] = _parse_value(value)
    return params


def _sampler_config(args):
    config = {
        "draws": args.draws,
        "tune": args.tune,
        "chains": args.chains,
        "cores": args.cores,
        "nuts_sampler": args.backend,
    }
    return {k: v for k, v in config.items() if v is not None}


def _load_model(path):
    """Read a saved model; its class is taken from the file's own metadata."""
    from bpmf.models import load

    return load(path)


def _match_ids(values, index):
    """Cast ids read from a CSV to the dtype of the model's id index (e.g. str vs int)."""
    values = np.asarray(values)
    if index.dtype == object or pd.api.types.is_string_dtype(index.dtype):
        return values.astype(str).astype(object)
    if pd.api.types.is_integer_dtype(index.dtype):
        try:
            return values.astype(index.dtype)
        except (TypeError, ValueError):
            return values
    return values


def _print_frame(frame, floatfmt="{:.4f}"):
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print(frame.to_string(index=False, float_format=floatfmt.format))


# ---------------------------------------------------------------------- subcommands
def _cmd_datasets(args):
    from bpmf.datasets import list_datasets

    table = list_datasets(args.data_home)
    table["available"] = np.where(table["available"], "yes", "no")
    _print_frame(table[["name", "available", "licence", "location"]])
    for _, row in table.iterrows():
        print(f"  {row['name']}: {row['description']}")
    return 0


def _cmd_models(args):
    from bpmf.registry import MODELS, PRESETS

    print(f"{'name':<16} description")
    for name, spec in MODELS.items():
        print(f"{name:<16} {spec.description}")
    print("\npresets: " + ", ".join(PRESETS))
    return 0


def _cmd_download(args):
    from bpmf.datasets import MOVIELENS, download_movielens, get_data_home

    if args.name not in MOVIELENS:
        raise _Failure(
            f"Unknown dataset {args.name!r} to download; known: {', '.join(MOVIELENS)} "
            "(food-world-cup is embedded and needs no download)."
        )
    target = get_data_home(args.data_home) / args.name
    if target.exists():
        print(f"{args.name} is already present at {target}")
        return 0
    _say(args, f"downloading {args.name} into {target.parent} ...")
    folder = download_movielens(args.name, args.data_home)
    print(f"{args.name} downloaded and checksum verified: {folder}")
    return 0


def _cmd_fit(args):
    import time

    from bpmf import metrics
    from bpmf.registry import make_model

    params = _parse_params(args.param, per_model=False)
    model = make_model(
        args.model,
        preset=args.preset,
        sampler_config=_sampler_config(args),
        params=params,
        n_factors=args.n_factors,
        random_state=args.seed,
    )
    if args.out is not None and not hasattr(model, "save"):
        raise _Failure(
            f"Model {args.model!r} ({type(model).__name__}) cannot be saved to a file; only "
            "models with a posterior can (pmf, bpmf, bpmf-gibbs). Run without --out to see "
            "its training fit, or use `bpmf compare` to score it."
        )
    if args.out is not None and not Path(args.out).resolve().parent.is_dir():
        raise FileNotFoundError(f"The folder of --out {args.out!r} does not exist.")
    ratings = _load_ratings(args)
    _say(args, f"fitting {model!r} on {ratings!r}")
    start = time.perf_counter()
    model.fit(ratings)
    seconds = time.perf_counter() - start
    fitted = model.predict(ratings)
    print(
        f"{args.model}: fitted on {ratings.n_ratings} ratings ({ratings.n_users} users, "
        f"{ratings.n_items} items) in {seconds:.1f} s; training RMSE "
        f"{metrics.rmse(ratings.values, fitted):.4f}"
    )
    if args.out is not None:
        model.save(args.out)
        print(f"saved to {args.out}")
    return 0


def _cmd_predict(args):
    model = _load_model(args.model)
    pairs_path = Path(args.pairs)
    if not pairs_path.is_file():
        raise FileNotFoundError(f"No pairs file at {str(pairs_path)!r}.")
    try:
        pairs = pd.read_csv(pairs_path, sep=None, engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"Could not read pairs from {str(pairs_path)!r}: {exc}") from exc
    missing = [c for c in (args.user_col, args.item_col) if c not in pairs.columns]
    if missing:
        raise DataError(
            f"{str(pairs_path)!r} lacks column(s) {missing}; it has {list(pairs.columns)}. "
            "Name the columns with --user-col/--item-col."
        )
    frame = pd.DataFrame(
        {
            "user": _match_ids(pairs[args.user_col].to_numpy(), model.user_index_),
            "item": _match_ids(pairs[args.item_col].to_numpy(), model.item_index_),
        }
    )
    if hasattr(model, "predict_interval"):
        interval = model.predict_interval(frame, prob=args.prob)
        out = pd.concat(
            [frame, interval[["mean", "lower", "upper"]].reset_index(drop=True)], axis=1
        )
        out.attrs["prob"] = args.prob
    else:
        out = frame.assign(mean=model.predict(frame))
    if args.out is None:
        _print_frame(out)
    else:
        out.to_csv(args.out, index=False)
        _say(args, f"wrote {len(out)} predictions ({100 * args.prob:g}% intervals) to {args.out}")
    return 0


def _cmd_recommend(args):
    model = _load_model(args.model)
    user = _match_ids(np.array([args.user]), model.user_index_)[0]
    if model.user_index_.get_indexer([user])[0] < 0:
        examples = ", ".join(str(u) for u in model.user_index_[:3])
        raise _Failure(
            f"Unknown user {args.user!r}: not among the {len(model.user_index_)} users the "
            f"model was trained on (e.g. {examples})."
        )
    if args.k < 1:
        raise _Failure(f"-k must be a positive integer, got {args.k}.")
    table = model.recommend(
        user, k=args.k, exclude_seen=not args.include_seen, threshold=args.threshold
    )
    table = table.rename(columns={"prob_at_least": f"P(r>={args.threshold:g})"})
    print(f"top {len(table)} items for user {args.user}:")
    _print_frame(table[["rank", *[c for c in table.columns if c != "rank"]]])
    return 0


def _cmd_compare(args):
    from bpmf.compare import compare, summarize, to_markdown
    from bpmf.registry import MODELS, make_model, model_class

    if args.models.strip().lower() == "all":
        names = []
        for name in MODELS:
            try:
                model_class(name)
            except ImportError as exc:
                print(f"bpmf: warning: skipping model {name!r}: {_one_line(exc)}", file=sys.stderr)
            else:
                names.append(name)
    else:
        names = [name.strip().lower() for name in args.models.split(",") if name.strip()]
    if not names:
        raise _Failure("--models is empty; give comma-separated model names or 'all'.")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise _Failure(f"Unknown model(s) {', '.join(unknown)}; choose from: {', '.join(MODELS)}.")
    per_model = _parse_params(args.param, per_model=True)
    stray = sorted(set(per_model) - set(names))
    if stray:
        raise _Failure(f"--param names model(s) {stray} that are not in --models.")
    sampler = _sampler_config(args)
    models = {
        name: make_model(
            name,
            preset=args.preset,
            sampler_config=sampler,
            params=per_model.get(name),
            n_factors=args.n_factors,
            random_state=args.seed,
        )
        for name in names
    }
    folds = args.folds.strip().lower()
    if folds != "official":
        if not folds.isdigit() or int(folds) < 2:
            raise _Failure(f"--folds must be an integer >= 2 or 'official', got {args.folds!r}.")
        folds = int(folds)
    if folds == "official":
        data = args.data
    else:
        data = _load_ratings(args)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    keep = {}

    def keep_first_posterior(label, fold, model, split):
        # Keep one sampled model (first fold) for the posterior plots.
        if keep or not _is_sampled(model):
            return
        keep.update(label=label, fold=fold, model=model, split=split)

    # One progress line per fitted model instead of a progress bar per model and fold.
    with config_context(progressbar=False):
        results = compare(
            models,
            data,
            folds=folds,
            prob=args.prob,
            random_state=args.seed,
            data_home=args.data_home,
            callback=keep_first_posterior if out is not None and not args.no_plots else None,
            progress=not args.quiet,
        )
    summary = summarize(results)
    table = to_markdown(summary, prob=args.prob)
    print(table, end="")
    if out is not None:
        results.to_csv(out / "results.csv", index=False)
        summary.to_csv(out / "summary.csv")
        (out / "summary.md").write_text(table)
        written = ["results.csv", "summary.csv", "summary.md"]
        if not args.no_plots:
            written += _write_plots(results, keep, out, args)
        _say(args, f"wrote {', '.join(written)} to {out}")
    return 0


def _is_sampled(model):
    idata = getattr(model, "idata_", None)
    if idata is None or "posterior" not in getattr(idata, "children", {}):
        return False
    posterior = idata["posterior"]
    return posterior.sizes.get("draw", 1) * posterior.sizes.get("chain", 1) > 1


def _write_plots(results, keep, out, args):
    import matplotlib

    matplotlib.use("Agg")
    from bpmf import plotting

    written = []

    def save(name, make):
        path = out / name
        plotting.save_figure(make(), path)
        written.append(name)

    save("rmse.png", lambda: plotting.plot_metric(results, "rmse"))
    save("mae.png", lambda: plotting.plot_metric(results, "mae"))
    if results["coverage"].notna().any():
        save("calibration.png", lambda: plotting.plot_calibration(results))
    if keep:
        label, fold, model = keep["label"], keep["fold"], keep["model"]
        where = f"{label}, {fold}"
        idata = model.idata_
        save(
            "trace.png",
            lambda: plotting.plot_trace(
                idata, title=f"Posterior traces of the noise and scale parameters ({where})"
            ),
        )
        save(
            "rank.png",
            lambda: plotting.plot_rank(
                idata, title=f"Rank plots of the scale parameters ({where}; flat = chains agree)"
            ),
        )
        save(
            "user_factor_correlation.png",
            lambda: plotting.plot_factor_correlation(
                idata, title=f"Posterior correlation of user factors ({where})"
            ),
        )
        test = keep["split"].test
        rng = np.random.default_rng(args.seed)
        rows = np.sort(rng.choice(test.n_ratings, size=min(6, test.n_ratings), replace=False))
        pairs = test.subset(rows)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*unseen in training")
            draws = model.predict_posterior(pairs, random_state=args.seed)
        labels = [f"user {u} / item {i}" for u, i in zip(pairs.users, pairs.items, strict=True)]
        save(
            "predictive.png",
            lambda: plotting.plot_predictive(
                draws,
                pairs.values,
                labels=labels,
                scale=test.scale,
                title=f"Posterior predictive of held-out ratings ({where})",
            ),
        )
    return written


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
