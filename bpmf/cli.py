"""The ``bpmf`` command line: datasets, download, fit, predict, recommend, compare.

``main(argv=None) -> int`` parses ``argv`` (``sys.argv[1:]`` by default), runs one
subcommand and returns the exit status: 0 on success, 2 for a malformed command line, 1 for
any other failure (missing or unwritable file, unknown model, bad column, unknown user, a
failed fit in ``compare``, ...). Every failure prints exactly one ``bpmf: error: ...`` line on
stderr and no traceback (``--debug`` adds it); warnings print one ``bpmf: warning: ...`` line
each. Hints in messages name options of the command line (``--duplicates mean``,
``--sep ';'``, ``--scale 1,5``), not the Python arguments behind them.

Files of ratings (``fit``, ``compare``) and of pairs (``predict``) are read with ``--sep`` and
the ``--user-col``/``--item-col`` columns (``--rating-col``, ``--duplicates`` and ``--scale``
for ratings); id columns are read as text, so ``007`` and ``7`` are two ids, and are matched
to the saved model's id type without guessing. Output paths are checked before any fitting.
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

#: Errors reported as one line with exit status 1 (anything else is reported as an internal
#: error, also on one line; --debug shows the traceback).
_USER_ERRORS = (
    DataError,
    ModelFileError,
    NotFittedError,
    OSError,
    ValueError,
    KeyError,
    ImportError,
    MemoryError,
)

_BACKENDS = ("pymc", "nutpie", "numpyro", "blackjax")
_PARALLEL_BACKENDS = ("loky", "threading", "dask", "ray")
_DUPLICATES = ("raise", "mean", "first", "last")


class _Failure(Exception):
    """An error raised by the command line itself, with a ready message."""


class _UsageError(Exception):
    """A malformed command line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``bpmf: error: ...``) instead of usage + error."""

    def error(self, message):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


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
    _input_options(parser, ratings=True)


def _input_options(parser, *, ratings):
    """How to read a file of ratings (``ratings=True``) or of (user, item) pairs."""
    what = "ratings" if ratings else "pairs"
    parser.add_argument(
        "--sep",
        default=None,
        metavar="SEP",
        help=f"field separator of the {what} file, e.g. ';' (default: tab for .tsv/.tab/.txt, "
        "comma otherwise)",
    )
    parser.add_argument("--user-col", default=None, help="column of user ids (default 'user')")
    parser.add_argument("--item-col", default=None, help="column of item ids (default 'item')")
    parser.add_argument(
        "--time-col", default=None,
        help=f"column of the {what}' times"
        + ("" if ratings else " (and of the --given ratings')")
        + ", Unix seconds or dates (for models with day biases; default: none read)",
    )
    if ratings:
        parser.add_argument(
            "--rating-col", default=None, help="column of ratings (default 'rating')"
        )
        parser.add_argument(
            "--duplicates",
            choices=_DUPLICATES,
            default=None,
            help="what to do with a (user, item) pair rated more than once (default raise)",
        )
        parser.add_argument(
            "--scale",
            type=_parse_scale,
            default=None,
            metavar="LO,HI",
            help="the rating scale, e.g. 1,5 (default: the file's lowest and highest rating, "
            "with a warning when implausible)",
        )


def _parse_scale(text):
    from bpmf._validation import check_scale

    try:
        return check_scale(text, "--scale")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected LO,HI with LO < HI, e.g. 1,5; got {text!r}"
        ) from exc


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
    parser = _Parser(
        prog="bpmf",
        description="Bayesian Probabilistic Matrix Factorization of rating data.",
        epilog="Run `bpmf COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"bpmf {__version__}")
    _common_options(parser, suppress=False)
    common = _Parser(add_help=False)
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
        "save it with --out (models with a posterior: pmf, bpmf, bpmf-nuts, bpmf-wishart, "
        "bpmf-features, bpmf-ordinal, bpmf-svdpp, bpmf-svdpp-both).",
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
    sub.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="where to save the fitted model (its folder is checked before fitting)",
    )
    sub.set_defaults(run=_cmd_fit)

    sub = commands.add_parser(
        "predict",
        parents=[common],
        help="predict ratings (mean and interval) for pairs",
        description="Predict the ratings of (user, item) pairs with a saved model. The output "
        "keeps the columns of --pairs and adds mean, lower, upper and unseen (1 where the user "
        "or item was not in training: predicted from the population level, or from its "
        "features by a model with side features).",
    )
    sub.add_argument("--model", required=True, metavar="FILE", help="a model saved by `bpmf fit`")
    sub.add_argument(
        "--pairs",
        required=True,
        metavar="FILE",
        help="CSV/TSV/parquet file with columns user and item (other columns are kept)",
    )
    _input_options(sub, ratings=False)
    sub.add_argument(
        "--given",
        default=None,
        metavar="FILE",
        help="ratings (columns user, item, rating; same separator and id columns as --pairs) "
        "of users or items new to the model: they are folded in (no refit) before predicting, "
        "so their pairs are predicted as known users' and items'",
    )
    for dim in ("user", "item"):
        sub.add_argument(
            f"--given-{dim}-features",
            default=None,
            metavar="FILE",
            help=f"with --given and a model with side features: feature rows of new {dim}s "
            f"that the model's table lacks (the id in the {dim} column, as named by "
            f"--{dim}-col, and the table's feature columns)",
        )
    sub.add_argument(
        "--prob", type=float, default=0.9, help="probability of the predictive interval"
    )
    sub.add_argument(
        "--interval", choices=("nearest", "cover"), default="nearest",
        help="an ordinal model's range of whole ratings: probability closest to --prob "
             "(nearest, the default) or at least --prob (cover)",
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
        "--threshold",
        type=float,
        default=None,
        help="report P(rating >= threshold); on the rating scale (default: three quarters of "
        "the way up it, 4 on 1-5)",
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
        action="append",
        default=None,
        metavar="LIST",
        help="comma-separated model names, or 'all' (default); repeatable, and the lists add "
        "up (--model X --model Y runs both)",
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
    sub.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder for CSV, markdown, plots; results.csv gets each (model, fold) as it finishes",
    )
    sub.add_argument(
        "--resume",
        action="store_true",
        help="skip the (model, fold) results already in --out/results.csv",
    )
    sub.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="fit N (model, fold) pairs at once (-1: all cores; default 1)",
    )
    sub.add_argument(
        "--parallel-backend",
        choices=_PARALLEL_BACKENDS,
        default=None,
        help="joblib backend for --jobs (default loky; dask needs --scheduler)",
    )
    sub.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of a running dask scheduler (with --parallel-backend dask)",
    )
    sub.add_argument("--no-plots", action="store_true", help="write tables only")
    sub.set_defaults(run=_cmd_compare)
    return parser


# ---------------------------------------------------------------------- entry point
def main(argv=None):
    """Run the ``bpmf`` command line; returns the exit status (0 on success).

    Every failure is one ``bpmf: error: ...`` line on stderr and no traceback (``--debug``
    adds it): status 2 for a malformed command line, 1 for everything else.
    """
    parser = _build_parser()
    if argv is not None:
        argv = [str(arg) for arg in argv]  # accept Paths and numbers from Python callers
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"bpmf: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help and --version
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    try:
        with config_context(progressbar=not args.quiet), warnings.catch_warnings():
            # An application shows warnings as one line each, whatever the caller's filters.
            warnings.simplefilter("default", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.showwarning = _show_warning
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("bpmf: interrupted", file=sys.stderr)
        return 130
    except _UsageError as exc:
        return _report(args, exc, status=2)
    except (_Failure, *_USER_ERRORS) as exc:
        return _report(args, exc)
    except Exception as exc:  # a bug: still one line, the traceback under --debug
        return _report(args, exc, internal=True)


def _report(args, exc, *, status=1, internal=False):
    if getattr(args, "debug", False):
        traceback.print_exc()
    message = _one_line(exc)
    if internal:
        message = (
            f"internal error ({type(exc).__name__}: {message}); please report it, with the "
            "output of --debug"
        )
    print(f"bpmf: error: {message}", file=sys.stderr)
    return status


def _one_line(exc):
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, OSError) and getattr(exc, "strerror", None) and exc.filename:
        message = f"{exc.strerror}: {str(exc.filename)!r}"
    message = " ".join(str(message).split()) or type(exc).__name__
    if isinstance(exc, ImportError | KeyError | MemoryError):
        message = f"{type(exc).__name__}: {message}"
    return cli_hints(message)


#: Library wording -> command-line wording, so that hints name options that exist.
_HINTS = (
    (r"duplicates='mean' \(or 'first'/'last'\)", "--duplicates mean (or first/last)"),
    (r"duplicates='(\w+)'", r"--duplicates \1"),
    (
        r"\(e\.g\. user_col=\.\.\., item_col=\.\.\., rating_col=\.\.\.\)",
        "(--user-col, --item-col, --rating-col)",
    ),
    (r"build the Ratings with time= \(or from_frame\(\.\.\., time_col=\.\.\.\)\)",
     "read them from a ratings file with a time column, named by --time-col"),
    (r"give the ratings with times \(a 'time' column or Ratings\(time=\)\)",
     "name the time column of the --given file with --time-col"),
    (r"\buser_col=", "--user-col "),
    (r"\bitem_col=", "--item-col "),
    (r"\brating_col=", "--rating-col "),
    (r"pass sep=('[^']*')", r"pass --sep \1"),
    (r"scale=\(low, high\)", "--scale LO,HI"),
    (r"scale=\((-?[\d.]+), (-?[\d.]+)\)", r"--scale \1,\2"),
    (r"\bn_factors=", "--n-factors "),
    (r"\brandom_state=", "--seed "),
    (r"\bthreshold=", "--threshold "),
)


def cli_hints(message):
    """Rewrite the library's hints (``duplicates='mean'``, ``sep=';'``, ``scale=(1, 5)``...)
    into the options of the command line (``--duplicates mean``, ``--sep ';'``, ...)."""
    import re

    for pattern, replacement in _HINTS:
        message = re.sub(pattern, replacement, message)
    return message


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bpmf: warning: {cli_hints(' '.join(str(message).split()))}", file=sys.stderr)


def _say(args, message):
    """Progress/status lines go to stderr, and not at all under --quiet."""
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- helpers
def _read_options(args):
    """The reading options given on the command line, as keyword arguments of read_ratings."""
    options = {
        "user_col": args.user_col,
        "item_col": args.item_col,
        "rating_col": getattr(args, "rating_col", None),
        "sep": args.sep,
        "duplicates": getattr(args, "duplicates", None),
        "time_col": getattr(args, "time_col", None),
    }
    return {key: value for key, value in options.items() if value is not None}


def _load_ratings(args):
    from bpmf.datasets import MOVIELENS, load_dataset

    read_kwargs = _read_options(args)
    name = args.data
    is_named = name == "food-world-cup" or name in MOVIELENS
    if is_named or (not Path(name).suffix and not Path(name).exists()):
        if read_kwargs:
            flags = ", ".join("--" + key.replace("_", "-") for key in read_kwargs)
            raise _Failure(f"{flags}: only for rating files, not for the dataset {name!r}.")
        ratings = load_dataset(name, data_home=args.data_home)
        if args.scale is not None:
            ratings = ratings.with_scale(args.scale)
        return ratings
    if args.scale is not None:
        read_kwargs["scale"] = args.scale
    return load_dataset(name, data_home=args.data_home, **read_kwargs)


def _parse_value(key, text):
    """A ``--param`` value: JSON when it parses (or looks like JSON), else the text itself."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.strip()[:1] in ("{", "[", '"'):
            raise _Failure(
                f"--param {key}: {text!r} is not valid JSON ({exc.msg} at character "
                f"{exc.pos}); write objects like '{{\"draws\": 100}}', with double quotes."
            ) from None
        value = text
    if key.endswith("_config") and not isinstance(value, dict):
        raise _Failure(
            f"--param {key} needs a JSON object, e.g. {key}='{{\"draws\": 100}}'; got {text!r}."
        )
    return value


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
            params.setdefault(model.lower(), {})[name] = _parse_value(name, value)
        else:
            params[key] = _parse_value(key, value)
    return params


def _check_shared_params(params, where="--param"):
    """Check the settings every model shares before any work starts."""
    from bpmf._validation import check_n_factors, check_random_state, check_scale

    for name, check in (
        ("n_factors", check_n_factors),
        ("random_state", check_random_state),
        ("rating_scale", check_scale),
    ):
        if name in params:
            try:
                check(params[name])
            except ValueError as exc:
                raise _Failure(f"{where} {name}: {exc}") from None


def _check_out_file(path, flag="--out"):
    """Fail now, before any work, when ``path`` cannot receive an output file."""
    path = Path(path)
    if path.is_dir():
        raise _Failure(f"{flag} {str(path)!r} is a folder; give a file path inside it.")
    _check_writable_folder(path.parent if str(path.parent) else Path("."), flag, path)


def _check_out_dir(path, flag="--out"):
    """Fail now when ``path`` cannot be (or become) an output folder; create it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _Failure(f"{flag} {str(path)!r} is a file; give a folder (it is created if absent).")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise _Failure(f"{flag} {str(path)!r} cannot be created: {str(existing)!r} is a file.")
    _check_writable_folder(existing, flag, path)
    path.mkdir(parents=True, exist_ok=True)
    _check_writable_folder(path, flag, path)


def _check_writable_folder(folder, flag, target):
    if not folder.exists():
        raise _Failure(f"The folder of {flag} {str(target)!r} does not exist; create it first.")
    if not folder.is_dir():
        raise _Failure(f"{flag} {str(target)!r}: {str(folder)!r} is a file, not a folder.")
    try:
        _probe_write(folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _Failure(
            f"Cannot write {flag} {str(target)!r}: the folder {str(folder)!r} is not writable "
            f"({reason}); choose another location."
        ) from None


def _probe_write(folder):
    """Create and remove a temporary file in ``folder`` (raises OSError when that fails)."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=folder, prefix=".bpmf-probe-"):
        pass


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


def _match_ids(values, index, what):
    """Ids read as text (or as stored in a parquet file) -> ids of the model's type.

    Text ids match a text-id model exactly (``007`` is not ``7``). For integer ids the text
    must be the integer as written (``7``; ``007`` or ``7.0`` raise :class:`DataError`
    instead of guessing); for float ids any number matches. Text that is no such number stays
    text (an unseen id). For mixed-type ids, the text matches the id that prints as it.
    """
    from bpmf._estimator import id_kind

    values = np.asarray(values, dtype=object)
    kind = id_kind(np.asarray(index))
    out = np.empty(len(values), dtype=object)
    if kind == "text":
        out[:] = [v if isinstance(v, str) else str(v) for v in values]
        return out
    if kind in ("integer", "float"):
        for position, value in enumerate(values):
            out[position] = _as_number(value, kind, what) if isinstance(value, str) else value
        return out
    by_text = {}
    for known in index:
        by_text.setdefault(str(known), []).append(known)
    for position, value in enumerate(values):
        matches = by_text.get(str(value), [])
        if len(matches) > 1:
            raise DataError(
                f"{what} id {value!r} is ambiguous: the model has {len(matches)} {what} ids "
                f"written {str(value)!r} ({', '.join(repr(m) for m in matches)})."
            )
        out[position] = matches[0] if matches else value
    return out


def _as_number(text, kind, what):
    stripped = text.strip()
    try:
        number = int(stripped) if kind == "integer" else float(stripped)
    except ValueError:
        if kind == "integer":
            try:
                float(stripped)
            except ValueError:
                return text  # not a number: an id the model has not seen
            raise DataError(
                f"{what} id {text!r} is not an integer but the model's {what} ids are "
                "integers; write it as one."
            ) from None
        return text
    if kind == "integer" and str(number) != stripped:
        raise DataError(
            f"{what} id {text!r} reads as the integer {number} but is written otherwise; the "
            f"model's {what} ids are integers, so write {number} (ids are matched exactly)."
        )
    if kind == "integer" and not -(2**63) <= number < 2**63:
        return text  # beyond the model's int64 ids: unseen
    return number


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
    home = get_data_home(args.data_home)
    target = home / args.name
    _check_out_dir(home, flag="--data-home")
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
    _check_shared_params(params)
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
            "models with a posterior can (pmf, bpmf, bpmf-nuts, bpmf-wishart, bpmf-features, "
            "bpmf-ordinal, bpmf-svdpp, bpmf-svdpp-both). Run without --out to see its "
            "training fit, or use `bpmf compare` to score it."
        )
    if args.out is not None:
        _check_out_file(args.out)
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


_PREDICTION_COLUMNS = ("mean", "lower", "upper", "unseen")


def _cmd_predict(args):
    from bpmf.datasets import as_pairs
    from bpmf.datasets._readers import read_table

    if args.out is not None:
        _check_out_file(args.out)
    if not 0 < args.prob < 1:
        raise _Failure(f"--prob must be strictly between 0 and 1, got {args.prob:g}.")
    model = _load_model(args.model)
    user_col, item_col = args.user_col or "user", args.item_col or "item"
    if args.given is not None:
        tables = {"user": args.given_user_features, "item": args.given_item_features}
        model = _fold_in_given(model, args.given, user_col, item_col, args.sep, tables,
                               args.time_col)
    elif args.given_user_features is not None or args.given_item_features is not None:
        raise _Failure("--given-user-features and --given-item-features need --given.")
    pairs = read_table(args.pairs, columns=(user_col, item_col), sep=args.sep, what="pairs")
    wanted = (user_col, item_col, *([args.time_col] if args.time_col else []))
    missing = [c for c in wanted if c not in pairs.columns]
    if missing:
        raise DataError(
            f"{str(args.pairs)!r} lacks column(s) {missing}; it has {list(pairs.columns)}. "
            "Name the columns with --user-col/--item-col/--time-col."
        )
    clash = [c for c in _PREDICTION_COLUMNS if c in pairs.columns]
    if clash:
        raise DataError(
            f"{str(args.pairs)!r} already has column(s) {clash}, which the output adds; "
            "rename them."
        )
    as_pairs(pairs[[user_col, item_col]].set_axis(["user", "item"], axis=1))  # blank ids raise
    frame = pd.DataFrame(
        {
            "user": _match_ids(pairs[user_col].to_numpy(), model.user_index_, "user"),
            "item": _match_ids(pairs[item_col].to_numpy(), model.item_index_, "item"),
        }
    )
    if args.time_col:  # the pairs' times: a model with day biases adds the day's bias
        frame["time"] = pairs[args.time_col].to_numpy()
    if hasattr(model, "predict_interval"):
        # whole-rating (ordinal) models choose their ranges; continuous ones have one rule
        rule = {"discrete": args.interval} if hasattr(model, "classes_") else {}
        interval = model.predict_interval(frame, prob=args.prob, **rule)
        predictions = interval[["mean", "lower", "upper"]].reset_index(drop=True)
    else:
        predictions = pd.DataFrame({"mean": model.predict(frame)})
    unseen = (model.user_index_.get_indexer(frame["user"]) < 0) | (
        model.item_index_.get_indexer(frame["item"]) < 0
    )
    out = pd.concat([pairs.reset_index(drop=True), predictions], axis=1)
    out["unseen"] = unseen.astype(int)
    out.attrs["prob"] = args.prob
    if args.out is None:
        _print_frame(out)
    else:
        out.to_csv(args.out, index=False)
        _say(args, f"wrote {len(out)} predictions ({100 * args.prob:g}% intervals) to {args.out}")
    return 0


def _fold_in_given(model, path, user_col, item_col, sep, tables=None, time_col=None):
    """The model with the users and items of the ratings file ``path`` folded in; ``tables``
    names files of feature rows of new users and items (``{"user": path or None, ...}``);
    ``time_col`` the column of the ratings' times (a model with day biases needs them)."""
    from bpmf.datasets._readers import read_table

    if not hasattr(model, "fold_in"):
        raise _Failure(f"--given: a {type(model).__name__} model cannot fold in new ratings.")
    given = read_table(path, columns=(user_col, item_col), sep=sep, what="ratings")
    wanted = (user_col, item_col, "rating", *([time_col] if time_col else []))
    missing = [c for c in wanted if c not in given.columns]
    if missing:
        raise DataError(
            f"{str(path)!r} lacks column(s) {missing}; it has {list(given.columns)}. "
            "The --given file needs user and item (as named by --user-col/--item-col) and rating"
            " (and the --time-col column when given)."
        )
    frame = pd.DataFrame(
        {
            "user": _match_ids(given[user_col].to_numpy(), model.user_index_, "user"),
            "item": _match_ids(given[item_col].to_numpy(), model.item_index_, "item"),
            "rating": given["rating"].to_numpy(),
        }
    )
    if time_col:
        frame["time"] = given[time_col].to_numpy()
    features = {}
    for dim, column in (("user", user_col), ("item", item_col)):
        table_path = (tables or {}).get(dim)
        if table_path is None:
            continue
        what = f"--given-{dim}-features"
        table = read_table(table_path, columns=(column,), sep=sep, what=f"{dim} features")
        if column not in table.columns:
            raise DataError(f"{str(table_path)!r} lacks the id column {column!r} ({what}); it "
                            f"has {list(table.columns)}.")
        index = model.user_index_ if dim == "user" else model.item_index_
        ids = _match_ids(table[column].to_numpy(), index, dim)
        features[f"{dim}_features"] = table.drop(columns=column).set_axis(
            pd.Index(ids, name=None), axis=0)
    try:
        return model.fold_in(frame, **features)
    except ValueError as err:
        raise _Failure(f"--given: {err}") from err


def _cmd_recommend(args):
    model = _load_model(args.model)
    if args.k < 1:
        raise _Failure(f"-k must be a positive integer, got {args.k}.")
    user = _match_ids(np.array([args.user], dtype=object), model.user_index_, "user")[0]
    if model.user_index_.get_indexer(pd.Index([user], dtype=object))[0] < 0:
        examples = ", ".join(str(u) for u in model.user_index_[:3])
        raise _Failure(
            f"Unknown user {args.user!r}: not among the {len(model.user_index_)} users the "
            f"model was trained on (e.g. {examples})."
        )
    table = model.recommend(
        user, k=args.k, exclude_seen=not args.include_seen, threshold=args.threshold
    )
    if table.empty:
        print(
            f"user {args.user} has rated all {len(model.item_index_)} items; pass "
            "--include-seen to rank them anyway."
        )
        return 0
    threshold = table.attrs.get("threshold", args.threshold)
    table = table.rename(columns={"prob_at_least": f"P(r>={threshold:g})"})
    print(f"top {len(table)} items for user {args.user}:")
    _print_frame(table[["rank", *[c for c in table.columns if c != "rank"]]])
    return 0


def _cmd_compare(args):
    from bpmf.compare import compare, summarize, to_markdown
    from bpmf.registry import MODELS, make_model, model_class

    # every --models (or its abbreviation --model) adds its names; none given means all
    given = [name.strip().lower() for value in (args.models or ["all"])
             for name in value.split(",") if name.strip()]
    if "all" in given and len(given) > 1:
        raise _Failure("--models all runs every model; give it alone, not with other names.")
    if given == ["all"]:
        names = []
        for name in MODELS:
            try:
                model_class(name)
            except ImportError as exc:
                print(f"bpmf: warning: skipping model {name!r}: {_one_line(exc)}", file=sys.stderr)
                continue
            # a model tied to a dataset's side-feature tables fits that dataset only
            tables = MODELS[name].fixed_params.get("model_config", {}).get("user_features")
            if isinstance(tables, str) and tables != args.data:
                print(f"bpmf: note: skipping model {name!r}: it uses the {tables} feature "
                      "tables", file=sys.stderr)
                continue
            names.append(name)
    else:
        names = list(dict.fromkeys(given))  # a name given twice runs once
    if not names:
        raise _Failure("--models is empty; give comma-separated model names or 'all'.")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise _Failure(f"Unknown model(s) {', '.join(unknown)}; choose from: {', '.join(MODELS)}.")
    per_model = _parse_params(args.param, per_model=True)
    stray = sorted(set(per_model) - set(names))
    if stray:
        raise _Failure(f"--param names model(s) {stray} that are not in --models.")
    for name, params in per_model.items():
        _check_shared_params(params, where=f"--param {name}.")
    if args.jobs is not None and args.jobs == 0:
        raise _Failure("--jobs must be a positive number of workers, or -1 for all cores.")
    if args.scheduler is not None and args.parallel_backend != "dask":
        raise _Failure("--scheduler needs --parallel-backend dask.")
    if args.parallel_backend == "dask" and args.scheduler is None:
        raise _Failure("--parallel-backend dask needs --scheduler ADDRESS (a running scheduler).")
    if args.resume and args.out is None:
        raise _Failure("--resume continues the results in --out; give --out DIR.")
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
    out = Path(args.out) if args.out else None
    checkpoint = None
    if out is not None:
        _check_out_dir(out)
        checkpoint = out / "results.csv"
        if checkpoint.is_file() and checkpoint.stat().st_size and not args.resume:
            raise _Failure(
                f"{str(checkpoint)!r} holds the results of an earlier run; pass --resume to "
                "continue it (finished fits are skipped), or choose another --out."
            )
    if folds == "official":
        if _read_options(args) or args.scale is not None:
            raise _Failure("--folds official reads the MovieLens files; drop the file options.")
        data = args.data
    else:
        data = _load_ratings(args)

    keep = {}

    def keep_first_posterior(label, fold, model, split):
        # Keep one sampled model (first fold) for the posterior plots.
        if keep or not _is_sampled(model):
            return
        keep.update(label=label, fold=fold, model=model, split=split)

    wants_plots = out is not None and not args.no_plots
    if wants_plots and (args.jobs or 1) != 1:
        _say(args, "posterior plots (trace, rank, ...) need --jobs 1; writing the others only")
    # One progress line per fitted model instead of a progress bar per model and fold.
    with config_context(progressbar=False), _dask_client(args), warnings.catch_warnings():
        # Failed fits are reported below as the error of the command.
        warnings.filterwarnings("ignore", message=r".* fits failed")
        results = compare(
            models,
            data,
            folds=folds,
            prob=args.prob,
            random_state=args.seed,
            data_home=args.data_home,
            callback=keep_first_posterior if wants_plots and (args.jobs or 1) == 1 else None,
            progress=not args.quiet,
            checkpoint=checkpoint,
            resume=args.resume,
            n_jobs=args.jobs,
            backend=args.parallel_backend,
        )
    summary = summarize(results)
    table = to_markdown(summary, prob=args.prob)
    print(table, end="")
    if out is not None:
        summary.to_csv(out / "summary.csv")
        (out / "summary.md").write_text(table)
        written = ["results.csv", "summary.csv", "summary.md"]
        if not args.no_plots and results["rmse"].notna().any():
            written += _write_plots(results.dropna(subset=["rmse"]), keep, out, args)
        _say(args, f"wrote {', '.join(written)} to {out}")
    failed = results[results["error"] != ""]
    if len(failed):
        first = failed.iloc[0]
        raise _Failure(
            f"{len(failed)} of {len(results)} (model, fold) fits failed, e.g. {first['model']} "
            f"on {first['fold']}: {first['error'].rstrip('.')}"
            + ("; fix it and rerun with --resume to fill them in." if out is not None else ".")
        )
    return 0


def _dask_client(args):
    """A client of the dask scheduler named by --scheduler, for the dask backend."""
    import contextlib

    if args.scheduler is None:
        return contextlib.nullcontext()
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise ImportError(
            "--parallel-backend dask needs dask.distributed: pip install 'bpmf[dask]'."
        ) from exc
    return Client(args.scheduler, timeout="10s")


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
