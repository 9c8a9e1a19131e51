"""The command line's error contract, case by case: every subcommand against bad paths, bad ids
and bad options exits 1 or 2 with exactly one ``bpmf: error:`` line on stderr and no traceback,
and its hints name only options that subcommand has.

Read-only folders: the tests run as root, for whom permission bits do not stop writes. A real
read-only folder is made with ``chattr +i`` (immutable, which binds root too) where the
filesystem allows it; elsewhere that case is skipped. Paths under a regular file are
unwritable for everyone and are always tested.
"""

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bpmf.cli import main

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small 1-5 ratings file, a pairs file, a saved PMF, a plain file and a folder."""
    root = tmp_path_factory.mktemp("robust")
    rng = np.random.default_rng(3)
    users, items = np.meshgrid(np.arange(15), np.arange(8))
    ratings = pd.DataFrame(
        {
            "user": [f"u{u:02d}" for u in users.ravel()],
            "item": [f"i{i}" for i in items.ravel()],
            "rating": rng.integers(1, 6, users.size).astype(float),
        }
    ).iloc[::2]
    ratings.iloc[:2, 2] = [1.0, 5.0]
    ratings.to_csv(root / "ratings.csv", index=False)
    pd.DataFrame({"user": ["u00", "u01"], "item": ["i0", "i1"]}).to_csv(
        root / "pairs.csv", index=False
    )
    (root / "plain.txt").write_text("not a model, not ratings\n")
    (root / "folder").mkdir()
    status = main(
        ["fit", "--model", "pmf", "--data", root / "ratings.csv", "--n-factors", "1",
         "--out", root / "model.bpmf", "--quiet"]
    )
    assert status == 0
    return root


def _check_one_error_line(status, captured):
    assert status in (1, 2), captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("bpmf: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _options_of(command, capsys):
    assert main([command, "--help"]) == 0
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", capsys.readouterr().out)) | {"-k"}


def _run(argv, files, capsys):
    argv = [str(a).replace("ROOT", str(files)) for a in argv]
    status = main(argv)
    line = _check_one_error_line(status, capsys.readouterr())
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line)) - set(argv)
    if options and argv and argv[0] in COMMANDS:
        unknown = options - _options_of(argv[0], capsys)
        assert not unknown, f"the hint names options {argv[0]} lacks: {unknown} ({line})"
    return status, line


COMMANDS = ("datasets", "models", "download", "fit", "predict", "recommend", "compare")
FIT = ["fit", "--model", "pmf", "--n-factors", "1"]
PREDICT = ["predict", "--model", "ROOT/model.bpmf"]
RECOMMEND = ["recommend", "--model", "ROOT/model.bpmf"]
COMPARE = ["compare", "--models", "user-mean", "--folds", "2"]

# ---------------------------------------------------------------------- bad paths
BAD_PATHS = {
    # ratings
    "fit: missing data": [*FIT, "--data", "ROOT/missing.csv"],
    "fit: data is a folder": [*FIT, "--data", "ROOT/folder"],
    "fit: data under a file": [*FIT, "--data", "ROOT/plain.txt/r.csv"],
    "fit: data is not ratings": [*FIT, "--data", "ROOT/plain.txt"],
    "fit: out is a folder": [*FIT, "--data", "ROOT/ratings.csv", "--out", "ROOT/folder"],
    "fit: out under a file": [*FIT, "--data", "ROOT/ratings.csv", "--out", "ROOT/plain.txt/m"],
    "fit: out in a missing folder": [*FIT, "--data", "ROOT/ratings.csv", "--out", "ROOT/no/m"],
    "compare: missing data": [*COMPARE, "--data", "ROOT/missing.csv"],
    "compare: data is a folder": [*COMPARE, "--data", "ROOT/folder"],
    "compare: out is an existing file": [
        *COMPARE, "--data", "ROOT/ratings.csv", "--out", "ROOT/plain.txt"
    ],
    "compare: out under a file": [
        *COMPARE, "--data", "ROOT/ratings.csv", "--out", "ROOT/plain.txt/o"
    ],
    # models and pairs
    "predict: missing model": [
        "predict", "--model", "ROOT/missing.bpmf", "--pairs", "ROOT/pairs.csv"
    ],
    "predict: model is a folder": [
        "predict", "--model", "ROOT/folder", "--pairs", "ROOT/pairs.csv"
    ],
    "predict: model is another file": [
        "predict", "--model", "ROOT/plain.txt", "--pairs", "ROOT/pairs.csv"
    ],
    "predict: missing pairs": [*PREDICT, "--pairs", "ROOT/missing.csv"],
    "predict: pairs is a folder": [*PREDICT, "--pairs", "ROOT/folder"],
    "predict: pairs lack columns": [*PREDICT, "--pairs", "ROOT/plain.txt"],
    "predict: out is a folder": [*PREDICT, "--pairs", "ROOT/pairs.csv", "--out", "ROOT/folder"],
    "predict: out under a file": [
        *PREDICT, "--pairs", "ROOT/pairs.csv", "--out", "ROOT/plain.txt/p.csv"
    ],
    "recommend: missing model": ["recommend", "--model", "ROOT/missing.bpmf", "--user", "u01"],
    "recommend: model is a folder": ["recommend", "--model", "ROOT/folder", "--user", "u01"],
    "download: data home is a file": ["download", "ml-100k", "--data-home", "ROOT/plain.txt"],
}


@pytest.mark.parametrize("argv", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_bad_paths(argv, files, capsys, monkeypatch):
    from bpmf.datasets import _movielens

    monkeypatch.setattr(_movielens, "_download", _no_network)
    status, _ = _run(argv, files, capsys)
    assert status == 1


def _no_network(url, destination):
    raise AssertionError("the test must fail before downloading")


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", folder], capture_output=True).returncode != 0
    ):
        pytest.skip("no read-only folder for root here (chattr +i is missing or not permitted)")
    try:
        (folder / "probe").touch()
    except OSError:
        pass
    else:
        pytest.skip("the folder stayed writable")
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", folder], capture_output=True)
    folder.chmod(0o755)


def test_read_only_output_folders_are_refused_before_any_work(
    files, read_only_folder, capsys, monkeypatch
):
    from bpmf.models import PMF

    def never_fit(self, train):
        raise AssertionError("the output folder must be checked before fitting")

    monkeypatch.setattr(PMF, "fit", never_fit)
    for argv in (
        [*FIT, "--data", "ROOT/ratings.csv", "--out", read_only_folder / "m.bpmf"],
        [*PREDICT, "--pairs", "ROOT/pairs.csv", "--out", read_only_folder / "p.csv"],
        [*COMPARE, "--models", "pmf", "--data", "ROOT/ratings.csv", "--out", read_only_folder],
        [*COMPARE, "--models", "pmf", "--data", "ROOT/ratings.csv", "--out",
         read_only_folder / "new"],
    ):
        _, line = _run(argv, files, capsys)
        assert "not writable" in line


def test_unwritable_folder_reported_even_when_the_mode_bits_allow_it(files, tmp_path, capsys,
                                                                     monkeypatch):
    # A read-only file system lets os.access() say yes; the probe write finds out.
    import tempfile

    def read_only_fs(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only_fs)
    _, line = _run([*FIT, "--data", "ROOT/ratings.csv", "--out", tmp_path / "m.bpmf"], files,
                   capsys)
    assert "Read-only file system" in line


# ---------------------------------------------------------------------- bad ids and data
def _write(files, name, text):
    path = files / name
    path.write_text(text)
    return path


def test_bad_ids_and_data(files, capsys):
    cases = {
        "blank user id": ("user,item,rating\nu1,a,1\n,b,5\n", "missing"),
        "duplicate pairs": ("user,item,rating\nu1,a,1\nu1,a,5\nu2,b,3\n", "--duplicates mean"),
        "semicolons": ("user;item;rating\nu1;a;1\nu2;b;5\n", "--sep ';'"),
        "text ratings": ("user,item,rating\nu1,a,1\nu2,b,five\n", "not numbers"),
        "off scale": ("user,item,rating\nu1,a,1\nu2,b,9\n", "outside the declared scale"),
        "wrong column": ("uid,item,rating\nu1,a,1\nu2,b,5\n", "--user-col"),
        "empty": ("", "Could not read"),
    }
    for name, (text, expected) in cases.items():
        path = _write(files, f"{name}.csv", text)
        for argv in (
            ["fit", "--model", "user-mean", "--data", path, "--scale", "1,5"],
            [*COMPARE, "--data", path, "--scale", "1,5"],
        ):
            _, line = _run(argv, files, capsys)
            assert expected in line, (name, line)
    pairs = _write(files, "bad-pairs.csv", "user,item\nu00,i0\n0u00,\n")
    _, line = _run([*PREDICT, "--pairs", pairs], files, capsys)
    assert "item id(s) are missing" in line
    for user, expected in (("nobody", "Unknown user 'nobody'"), ("u0", "Unknown user 'u0'")):
        _, line = _run([*RECOMMEND, "--user", user], files, capsys)
        assert expected in line


# ---------------------------------------------------------------------- bad options
BAD_OPTIONS = {
    "no subcommand": ([], 2),
    "unknown subcommand": (["bogus"], 2),
    "unknown option": (["models", "--bogus"], 2),
    "seed is not a number": (["--seed", "abc", "models"], 2),
    "n-factors is not a number": ([*FIT, "--data", "ROOT/ratings.csv", "--n-factors", "x"], 2),
    "duplicates policy": ([*FIT, "--data", "ROOT/ratings.csv", "--duplicates", "sum"], 2),
    "scale is not LO,HI": ([*FIT, "--data", "ROOT/ratings.csv", "--scale", "5"], 2),
    "scale upside down": ([*FIT, "--data", "ROOT/ratings.csv", "--scale", "5,1"], 2),
    "missing --data": (["fit", "--model", "pmf"], 2),
    "unknown model": (["fit", "--model", "nosuch", "--data", "ROOT/ratings.csv"], 1),
    "bad JSON param": (
        [*FIT, "--data", "ROOT/ratings.csv", "--param", "model_config={'a': 1}"], 1
    ),
    "config not an object": ([*FIT, "--data", "ROOT/ratings.csv", "--param", "model_config=3"], 1),
    "n_factors param": ([*FIT, "--data", "ROOT/ratings.csv", "--param", 'n_factors="abc"'], 1),
    "negative seed param": (
        [*FIT, "--data", "ROOT/ratings.csv", "--param", "random_state=-5"], 1
    ),
    "column options on a dataset": (
        ["fit", "--model", "user-mean", "--data", "food-world-cup", "--sep", ";"], 1
    ),
    "prob out of range": ([*PREDICT, "--pairs", "ROOT/pairs.csv", "--prob", "1.5"], 1),
    "k of zero": ([*RECOMMEND, "--user", "u01", "-k", "0"], 1),
    "threshold off the scale": ([*RECOMMEND, "--user", "u01", "--threshold", "9"], 1),
    "folds of one": ([*COMPARE, "--data", "ROOT/ratings.csv", "--folds", "1"], 1),
    "jobs of zero": ([*COMPARE, "--data", "ROOT/ratings.csv", "--jobs", "0"], 1),
    "resume without out": ([*COMPARE, "--data", "ROOT/ratings.csv", "--resume"], 1),
    "dask without scheduler": (
        [*COMPARE, "--data", "ROOT/ratings.csv", "--jobs", "2", "--parallel-backend", "dask"], 1
    ),
    "unknown download": (["download", "ml-7"], 1),
}


@pytest.mark.parametrize(("argv", "expected"), list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
def test_bad_options(argv, expected, files, capsys):
    status, line = _run(argv, files, capsys)
    assert status == expected, line


def test_threshold_hint_uses_the_option_name(files, capsys):
    _, line = _run([*RECOMMEND, "--user", "u01", "--threshold", "9"], files, capsys)
    assert "--threshold 9 lies outside the rating scale 1-5" in line


def test_an_internal_error_is_still_one_line(files, capsys, monkeypatch):
    from bpmf.baselines import UserMean

    def broken(self, train):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(UserMean, "fit", broken)
    # --quiet: without it the "fitting ..." progress line precedes the error (the failure
    # happens during the fit).
    argv = ["fit", "--model", "user-mean", "--data", "ROOT/ratings.csv", "--quiet"]
    _, line = _run(argv, files, capsys)
    assert line.startswith("bpmf: error: internal error (ZeroDivisionError: division by zero)")


# ---------------------------------------------------------------------- as a subprocess
def _subprocess(*argv):
    return subprocess.run(
        [sys.executable, "-m", "bpmf.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--model", "ROOT/model.bpmf", "--pairs", "ROOT/folder", "--out", "ROOT/o"],
        ["compare", "--data", "ROOT/ratings.csv", "--models", "user-mean", "--out",
         "ROOT/plain.txt"],
        ["fit", "--model", "pmf", "--data", "ROOT/ratings.csv", "--scale", "x"],
    ],
    ids=["predict pairs folder", "compare out file", "bad scale"],
)
def test_errors_as_a_subprocess(argv, files):
    done = _subprocess(*[str(a).replace("ROOT", str(files)) for a in argv])
    assert done.returncode in (1, 2)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpmf: error: "), done.stderr
