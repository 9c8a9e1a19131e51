"""The command line with rating times: a model with day biases fitted from a file's time
column and predicting pairs with theirs."""

import numpy as np
import pandas as pd

from bpmf.cli import main
from bpmf.registry import model_class


def _ratings(path):
    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((30, 12)) < 0.6)
    days = rng.integers(0, 3, len(users))
    frame = pd.DataFrame({
        "user": users, "item": items,
        "rating": np.clip(np.round(3 + rng.normal(0, 1, len(users)) + 0.8 * (days - 1)), 1, 5),
        "when": 1_000_000_000 + 86_400 * days + rng.integers(0, 3600, len(users)),
    })
    frame.to_csv(path, index=False)
    return frame


def test_fit_and_predict_with_a_time_column(tmp_path, capsys):
    frame = _ratings(tmp_path / "ratings.csv")
    model_path = tmp_path / "day.nc"
    argv = ["fit", "--model", "bpmf-day", "--data", str(tmp_path / "ratings.csv"),
            "--n-factors", "2", "--preset", "quick", "--quiet", "--out", str(model_path)]
    # without the times: one line naming the option to give
    assert main(argv[:-2]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--time-col" in err[0] and "Traceback" not in err[0]
    assert main([*argv, "--time-col", "when"]) == 0
    capsys.readouterr()
    model = model_class("bpmf-day").load(model_path)
    pairs = frame[["user", "item", "when"]].head(8).astype({"user": str, "item": str})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(model_path), "--pairs", str(tmp_path / "pairs.csv"),
                 "--time-col", "when", "--out", str(out)]) == 0
    written = pd.read_csv(out)
    expected = model.predict(pairs.rename(columns={"when": "time"}))
    np.testing.assert_allclose(written["mean"], expected, rtol=1e-10)
    # the day biases matter: the same pairs without their times predict otherwise
    assert np.max(np.abs(expected - model.predict(pairs[["user", "item"]]))) > 0.05


def test_predict_given_new_users_with_their_times(tmp_path, capsys):
    frame = _ratings(tmp_path / "all.csv")
    frame[frame["user"] < 25].to_csv(tmp_path / "fitted.csv", index=False)
    frame[frame["user"] >= 25].to_csv(tmp_path / "given.csv", index=False)
    model_path = tmp_path / "day.nc"
    assert main(["fit", "--model", "bpmf-day", "--data", str(tmp_path / "fitted.csv"),
                 "--time-col", "when", "--n-factors", "2", "--preset", "quick", "--quiet",
                 "--out", str(model_path)]) == 0
    pairs = frame[frame["user"] >= 25][["user", "item", "when"]].astype({"user": str,
                                                                         "item": str})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "predictions.csv"
    argv = ["predict", "--model", str(model_path), "--pairs", str(tmp_path / "pairs.csv"),
            "--given", str(tmp_path / "given.csv"), "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 1  # the given ratings without their times
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--time-col" in err[0]
    assert main([*argv, "--time-col", "when"]) == 0
    given = frame[frame["user"] >= 25].astype({"user": str, "item": str}).rename(
        columns={"when": "time"})
    folded = model_class("bpmf-day").load(model_path).fold_in(given)
    expected = folded.predict(pairs.rename(columns={"when": "time"}))
    np.testing.assert_allclose(pd.read_csv(out)["mean"], expected, rtol=1e-10)
