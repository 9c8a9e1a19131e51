"""The ``bpmf`` command line, driven through ``main(argv)`` and as a subprocess."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bpmf import metrics
from bpmf.baselines import UserItemMean
from bpmf.cli import main
from bpmf.datasets import Ratings, kfold, read_ratings
from bpmf.models import BPMF
from bpmf.registry import model_class

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["datasets", "models", "download", "fit", "predict", "recommend", "compare"]


def _has(name):
    try:
        model_class(name)
    except ImportError:
        return False
    return True


needs_pmf = pytest.mark.skipif(not _has("pmf"), reason="bpmf.models.PMF is not available yet")


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    """A small 1-5 rating file with string item ids and a non-default column name."""
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 12
    user_effect = rng.normal(0, 0.7, n_users)
    item_effect = rng.normal(0, 0.7, n_items)
    cells = rng.choice(n_users * n_items, size=300, replace=False)
    users, items = cells // n_items, cells % n_items
    stars = np.clip(
        np.round(3.4 + user_effect[users] + item_effect[items] + rng.normal(0, 0.6, len(cells))),
        1,
        5,
    )
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    pd.DataFrame({"user": users + 100, "item": [f"item{i}" for i in items], "stars": stars}).to_csv(
        path, index=False
    )
    return path


def _subprocess(*argv, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bpmf.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("bpmf: error: "), err
    assert "Traceback" not in err
    return lines[-1]


# ---------------------------------------------------------------------- help and parsing
@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_on_every_subcommand(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bpmf")
    for option in ("--quiet", "--seed", "--debug"):
        assert option in out


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["bogus"]) == 2
    assert main(["compare"]) == 2  # --data is required
    assert "required" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bpmf ")


# ---------------------------------------------------------------------- datasets / download
def test_datasets_lists_licence_and_location(tmp_path, capsys):
    assert main(["datasets", "--data-home", tmp_path]) == 0
    out = capsys.readouterr().out
    assert "food-world-cup" in out and "CC BY 4.0" in out
    assert "ml-100k" in out and "no redistribution" in out
    assert str(tmp_path / "ml-100k") in out


def test_models_lists_every_name(capsys):
    from bpmf.registry import MODELS, PRESETS

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS) and all(p in out for p in PRESETS)


def test_download_checks_the_checksum(tmp_path, monkeypatch, capsys):
    from bpmf.datasets import _movielens

    def fake_download(url, destination):
        Path(destination).write_bytes(b"not the real archive")

    monkeypatch.setattr(_movielens, "_download", fake_download)
    assert main(["download", "ml-100k", "--data-home", tmp_path]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "Checksum mismatch" in line
    assert not (tmp_path / "ml-100k").exists()


def test_download_present_and_unknown(tmp_path, capsys):
    (tmp_path / "ml-100k").mkdir()
    assert main(["download", "ml-100k", "--data-home", tmp_path, "--quiet"]) == 0
    assert "already present" in capsys.readouterr().out
    assert main(["download", "food-world-cup"]) == 1
    assert "embedded" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------- fit
def test_fit_baseline_reports_training_rmse(ratings_csv, capsys):
    assert (
        main(
            [
                "fit",
                "--model",
                "user-item-mean",
                "--data",
                ratings_csv,
                "--rating-col",
                "stars",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    ratings = read_ratings(ratings_csv, rating_col="stars")
    expected = metrics.rmse(ratings.values, UserItemMean().fit(ratings).predict(ratings))
    assert f"training RMSE {expected:.4f}" in out
    assert "300 ratings (40 users, 12 items)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "--model", "nosuch", "--data", "food-world-cup"], "Unknown model 'nosuch'"),
        (["fit", "--model", "user-mean", "--data", "missing.csv"], "No ratings file"),
        (["fit", "--model", "user-mean", "--data", "RATINGS"], "Missing column"),
        (
            [
                "fit",
                "--model",
                "user-mean",
                "--data",
                "RATINGS",
                "--rating-col",
                "stars",
                "--out",
                "x.nc",
            ],
            "cannot be saved",
        ),
        (
            ["fit", "--model", "user-mean", "--data", "RATINGS", "--param", "alpha=1"],
            "has no parameter 'alpha'",
        ),
        (["fit", "--model", "user-mean", "--data", "RATINGS", "--param", "oops"], "KEY=VALUE"),
        (
            ["fit", "--model", "user-mean", "--data", "food-world-cup", "--user-col", "u"],
            "only for rating files",
        ),
        (["fit", "--model", "user-mean", "--data", "no-such-dataset"], "Unknown dataset"),
    ],
)
def test_fit_errors_are_one_line(argv, message, ratings_csv, capsys):
    argv = [str(ratings_csv) if a == "RATINGS" else a for a in argv]
    assert main(argv) == 1
    assert message in _one_error_line(capsys.readouterr().err)


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "fit", "--model", "user-mean", "--data", "missing.csv"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("bpmf: error:")


# ---------------------------------------------------------------------- predict / recommend
@pytest.fixture(scope="module")
def saved_pmf(ratings_csv, tmp_path_factory):
    if not _has("pmf"):
        pytest.skip("bpmf.models.PMF is not available yet")
    path = tmp_path_factory.mktemp("model") / "pmf.nc"
    status = main(
        [
            "fit",
            "--model",
            "pmf",
            "--data",
            ratings_csv,
            "--rating-col",
            "stars",
            "--n-factors",
            "2",
            "--out",
            path,
            "--quiet",
            "--seed",
            "1",
        ]
    )
    assert status == 0 and path.is_file()
    return path


@needs_pmf
def test_predict_writes_mean_and_interval(saved_pmf, ratings_csv, tmp_path, capsys):
    pmf = model_class("pmf").load(saved_pmf)
    # Id columns are read as text, so the model's user ids are the strings "100", ...
    pairs = pd.DataFrame({"user": ["100", "101", "139"], "item": ["item0", "item3", "item11"]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "preds.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                saved_pmf,
                "--pairs",
                tmp_path / "pairs.csv",
                "--out",
                out,
                "--prob",
                "0.8",
            ]
        )
        == 0
    )
    predictions = pd.read_csv(out)
    assert list(predictions.columns) == ["user", "item", "mean", "lower", "upper", "unseen"]
    assert (predictions["unseen"] == 0).all()
    np.testing.assert_allclose(predictions["mean"], pmf.predict(pairs), rtol=1e-10)
    expected = pmf.predict_interval(pairs, prob=0.8)
    np.testing.assert_allclose(predictions[["lower", "upper"]], expected[["lower", "upper"]])
    # Without --out the table goes to stdout.
    assert main(["predict", "--model", saved_pmf, "--pairs", tmp_path / "pairs.csv"]) == 0
    assert "item11" in capsys.readouterr().out


@needs_pmf
def test_predict_errors(saved_pmf, tmp_path, capsys):
    pd.DataFrame({"uid": [1], "item": ["item0"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["predict", "--model", saved_pmf, "--pairs", tmp_path / "bad.csv"]) == 1
    assert "lacks column(s) ['user']" in _one_error_line(capsys.readouterr().err)
    assert main(["predict", "--model", tmp_path / "none.nc", "--pairs", tmp_path / "bad.csv"]) == 1
    assert "No model file" in _one_error_line(capsys.readouterr().err)
    (tmp_path / "junk.nc").write_bytes(b"junk")
    assert main(["predict", "--model", tmp_path / "junk.nc", "--pairs", tmp_path / "bad.csv"]) == 1
    assert "not a bpmf model file" in _one_error_line(capsys.readouterr().err)


@needs_pmf
def test_recommend_known_and_unknown_user(saved_pmf, ratings_csv, capsys):
    pmf = model_class("pmf").load(saved_pmf)
    assert main(["recommend", "--model", saved_pmf, "--user", "100", "-k", "3"]) == 0
    out = capsys.readouterr().out
    expected = pmf.recommend("100", k=3)
    for item in expected["item"]:
        assert item in out
    assert main(["recommend", "--model", saved_pmf, "--user", "99999"]) == 1
    assert "Unknown user '99999'" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------- compare
def test_compare_writes_tables_and_plots(ratings_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "compare",
        "--data",
        ratings_csv,
        "--rating-col",
        "stars",
        "--models",
        "user-mean,user-item-mean,global-mean",
        "--folds",
        "3",
        "--seed",
        "4",
        "--out",
        out,
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("| model | folds | RMSE")
    assert "[bpmf compare]" in captured.err
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 9
    folds = kfold(read_ratings(ratings_csv, rating_col="stars"), n_splits=3, random_state=4)
    split = folds["fold2"]
    direct = metrics.rmse(split.test.values, UserItemMean().fit(split.train).predict(split.test))
    row = results[(results["model"] == "user-item-mean") & (results["fold"] == "fold2")]
    assert row["rmse"].item() == pytest.approx(direct, rel=1e-12)
    assert (out / "summary.md").read_text() == captured.out
    for name in ("summary.csv", "rmse.png", "mae.png"):
        assert (out / name).stat().st_size > 0


def test_compare_quiet_has_no_progress(ratings_csv, capsys):
    assert (
        main(
            [
                "compare",
                "--data",
                ratings_csv,
                "--rating-col",
                "stars",
                "--models",
                "user-mean",
                "--folds",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err == "" and "user-mean" in captured.out


def test_compare_repeated_model_options_add_up(ratings_csv, capsys):
    """``--model A --model B`` (argparse's abbreviation of --models) runs both, not only the
    last; a name given twice runs once."""
    argv = ["compare", "--data", ratings_csv, "--rating-col", "stars", "--folds", "2",
            "--quiet", "--model", "user-mean", "--model", "global-mean,user-mean"]
    assert main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    models = [row.split("|")[1].strip() for row in rows[1:]]
    assert sorted(models) == ["global-mean", "user-mean"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "user-mean,nosuch"], "Unknown model(s) nosuch"),
        (["--models", "user-mean", "--folds", "official"], "official"),
        (["--models", "user-mean", "--folds", "1"], "--folds must be"),
        (["--models", "user-mean", "--param", "pmf.n_factors=2"], "not in --models"),
        (["--models", ","], "--models is empty"),
        (["--models", "all", "--models", "user-mean"], "give it alone"),
    ],
)
def test_compare_errors(extra, message, ratings_csv, capsys):
    argv = ["compare", "--data", ratings_csv, "--rating-col", "stars", *extra]
    assert main(argv) == 1
    assert message in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------- as a subprocess
def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    done = _subprocess("fit", "--model", "user-mean", "--data", tmp_path / "missing.csv")
    assert done.returncode == 1
    assert _one_error_line(done.stderr) == (
        f"bpmf: error: No ratings file at {tmp_path / 'missing.csv'}."
    )
    assert done.stdout == ""


@pytest.mark.slow
def test_every_subcommand_as_a_subprocess(ratings_csv, tmp_path):
    done = _subprocess("--help")
    assert done.returncode == 0 and "compare" in done.stdout
    done = _subprocess("datasets", "--data-home", tmp_path)
    assert done.returncode == 0 and "food-world-cup" in done.stdout
    done = _subprocess("models")
    assert done.returncode == 0 and "user-item-mean" in done.stdout
    (tmp_path / "ml-100k").mkdir()
    done = _subprocess("download", "ml-100k", "--data-home", tmp_path)
    assert done.returncode == 0 and "already present" in done.stdout
    done = _subprocess(
        "fit", "--model", "item-mean", "--data", ratings_csv, "--rating-col", "stars"
    )
    assert done.returncode == 0 and "training RMSE" in done.stdout
    done = _subprocess(
        "compare",
        "--data",
        ratings_csv,
        "--rating-col",
        "stars",
        "--models",
        "user-mean,item-mean",
        "--folds",
        "2",
        "--quiet",
        "--out",
        tmp_path / "o",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 4 and (tmp_path / "o" / "rmse.png").is_file()
    done = _subprocess("compare", "--data", ratings_csv, "--models", "nosuch")
    assert done.returncode == 1 and "Unknown model(s) nosuch" in _one_error_line(done.stderr)


@pytest.mark.slow
@needs_pmf
def test_predict_and_recommend_as_a_subprocess(saved_pmf, tmp_path):
    model = saved_pmf
    pd.DataFrame({"user": [100], "item": ["item0"]}).to_csv(tmp_path / "p.csv", index=False)
    done = _subprocess(
        "predict", "--model", model, "--pairs", tmp_path / "p.csv", "--out", tmp_path / "o.csv"
    )
    assert done.returncode == 0, done.stderr
    assert list(pd.read_csv(tmp_path / "o.csv").columns) == [
        "user",
        "item",
        "mean",
        "lower",
        "upper",
        "unseen",
    ]
    done = _subprocess("recommend", "--model", model, "--user", "100", "-k", "2")
    assert done.returncode == 0 and "rank" in done.stdout
    done = _subprocess("recommend", "--model", model, "--user", "nobody")
    assert done.returncode == 1 and "Unknown user 'nobody'" in _one_error_line(done.stderr)


# ---------------------------------------------------------------------- input options and ids
def test_semicolon_file_with_sep_scale_and_duplicates(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text("uid;iid;stars\n007;a;3\n7;a;4\n7;a;5\n8;b;4\n")
    argv = ["fit", "--model", "user-mean", "--data", path, "--user-col", "uid", "--item-col",
            "iid", "--rating-col", "stars"]
    assert main(argv) == 1
    assert "pass --sep ';'" in _one_error_line(capsys.readouterr().err)
    assert main([*argv, "--sep", ";"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--duplicates mean (or first/last)" in line and "duplicates=" not in line
    assert main([*argv, "--sep", ";", "--duplicates", "mean", "--scale", "1,5", "--quiet"]) == 0
    captured = capsys.readouterr()
    # 007 and 7 stay two users: 3 ratings (4 and 5 averaged), 3 users.
    assert "fitted on 3 ratings (3 users, 2 items)" in captured.out
    assert captured.err == ""


def test_inferred_scale_warning_names_the_option(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\na,x,3\nb,x,4\nc,y,5\n")
    assert main(["fit", "--model", "user-mean", "--data", path, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("bpmf: warning: The ratings span 3-5") and "--scale 1,5" in err
    assert "scale=" not in err


@pytest.fixture(scope="module")
def id_models(tmp_path_factory):
    """PMFs saved with integer, float and text user ids (users 1..10, texts '001'..)."""
    if not _has("pmf"):
        pytest.skip("bpmf.models.PMF is not available yet")
    import warnings

    pmf = model_class("pmf")
    root = tmp_path_factory.mktemp("ids")
    rng = np.random.default_rng(0)
    users, items = np.meshgrid(np.arange(1, 11), np.arange(6))
    keep = rng.random(users.size) < 0.7
    ratings = rng.integers(1, 6, users.size).astype(float)
    ratings[:2] = [1.0, 5.0]
    keep[:2] = True
    paths = {}
    for kind, ids in (
        ("int", users.ravel()),
        ("float", users.ravel() + 0.0),
        ("str", np.array([f"{u:03d}" for u in users.ravel()])),
        ("mixed", np.array([u if u % 2 else f"s{u}" for u in users.ravel()], dtype=object)),
    ):
        frame = pd.DataFrame({"user": ids, "item": items.ravel(), "rating": ratings})[keep]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            paths[kind] = pmf(n_factors=1, random_state=0, progressbar=False).fit(frame).save(
                root / f"{kind}.bpmf"
            )
    return paths


@needs_pmf
@pytest.mark.parametrize(("kind", "user"), [("int", "3"), ("float", "3"), ("float", "3.0"),
                                            ("str", "003"), ("mixed", "3"), ("mixed", "s4")])
def test_recommend_matches_the_models_id_type(id_models, kind, user, capsys):
    assert main(["recommend", "--model", id_models[kind], "--user", user, "-k", "2",
                 "--include-seen"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"top 2 items for user {user}:") and "P(r>=4)" in out


@needs_pmf
@pytest.mark.parametrize(
    ("kind", "user", "message"),
    [
        ("int", "003", "reads as the integer 3 but is written otherwise"),
        ("int", "3.0", "is not an integer"),
        ("str", "3", "Unknown user '3'"),
        ("int", "18446744073709551616", "Unknown user"),
    ],
)
def test_recommend_never_guesses_an_id(id_models, kind, user, message, capsys):
    assert main(["recommend", "--model", id_models[kind], "--user", user]) == 1
    assert message in _one_error_line(capsys.readouterr().err)


@needs_pmf
def test_predict_keeps_columns_flags_unseen_and_keeps_ids_exact(id_models, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("who\twhat\tnote\n003\t1\tknown\n3\t1\ttext 3 is not 003\n004\t99\tnew item\n")
    out = tmp_path / "out.csv"
    argv = ["predict", "--model", id_models["str"], "--pairs", pairs, "--user-col", "who",
            "--item-col", "what", "--out", out]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "bpmf: warning: 1 pair(s) with a user and 1 with an item unseen" in err
    assert "row 1: user '3'" in err
    result = pd.read_csv(out, dtype={"who": str})
    assert list(result.columns) == ["who", "what", "note", "mean", "lower", "upper", "unseen"]
    assert list(result["who"]) == ["003", "3", "004"]
    assert list(result["unseen"]) == [0, 1, 1]
    model = model_class("pmf").load(id_models["str"])
    expected = model.predict(pd.DataFrame({"user": ["003"], "item": [1]}))[0]
    assert result["mean"].iloc[0] == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------- compare: resume, jobs
def test_compare_resume_and_failures(ratings_csv, tmp_path, capsys, monkeypatch):
    from bpmf.baselines import GlobalMean

    out = tmp_path / "run"
    argv = ["compare", "--data", ratings_csv, "--rating-col", "stars", "--models",
            "user-mean,global-mean", "--folds", "2", "--out", out, "--no-plots", "--quiet"]

    def broken(self, train):
        raise RuntimeError("out of memory on this fold")

    monkeypatch.setattr(GlobalMean, "fit", broken)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "- global-mean failed on 2 of 2 fold(s): RuntimeError: out of memory" in captured.out
    line = _one_error_line(captured.err)
    assert "2 of 4 (model, fold) fits failed" in line and "--resume" in line
    first = pd.read_csv(out / "results.csv")
    assert first["error"].notna().sum() == 2 and first["rmse"].notna().sum() == 2
    # Without --resume the finished results are not overwritten.
    assert main(argv) == 1
    assert "pass --resume" in _one_error_line(capsys.readouterr().err)
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    again = pd.read_csv(out / "results.csv")
    assert again["rmse"].notna().all() and len(again) == 4
    pd.testing.assert_frame_equal(again.iloc[:2], first.iloc[:2], check_dtype=False)


def test_compare_jobs_prints_the_serial_table(ratings_csv, capsys):
    argv = ["compare", "--data", ratings_csv, "--rating-col", "stars", "--models",
            "user-mean,item-mean,random", "--folds", "3", "--quiet"]
    assert main(argv) == 0
    serial = capsys.readouterr().out
    assert main([*argv, "--jobs", "2"]) == 0
    parallel = capsys.readouterr().out

    def without_timings(table):
        return [line.rsplit("|", 3)[0] for line in table.splitlines()]

    assert without_timings(parallel) == without_timings(serial)


def test_predict_interval_rule_of_an_ordinal_model(tmp_path):
    rng = np.random.default_rng(0)
    pairs = rng.choice(30 * 20, 300, replace=False)
    ratings = Ratings([f"u{p // 20}" for p in pairs], [f"i{p % 20}" for p in pairs],
                      rng.integers(1, 6, 300).astype(float), scale=(1.0, 5.0))
    model = BPMF(n_factors=2, model_config={"likelihood": "ordinal"}, random_state=0,
                 progressbar=False, sampler_config={"draws": 40, "tune": 40, "chains": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(ratings)
    model.save(tmp_path / "ordinal.bpmf")
    query = ratings.to_frame()[["user", "item"]].head(40)
    query.to_csv(tmp_path / "pairs.csv", index=False)
    ranges = {}
    for rule in ("nearest", "cover"):
        out = tmp_path / f"{rule}.csv"
        argv = ["predict", "--model", tmp_path / "ordinal.bpmf", "--pairs",
                tmp_path / "pairs.csv", "--out", out]
        assert main([*argv, "--interval", rule] if rule == "cover" else argv) == 0
        ranges[rule] = pd.read_csv(out)[["lower", "upper"]].to_numpy()
        expected = model.predict_interval(query, 0.9, discrete=rule)
        np.testing.assert_array_equal(ranges[rule], expected[["lower", "upper"]].to_numpy())
    # uniform ratings: the quantile ranges are wider than the nearest ones somewhere
    assert (ranges["cover"][:, 1] - ranges["cover"][:, 0]
            > ranges["nearest"][:, 1] - ranges["nearest"][:, 0]).any()
