"""The comparison runner and the model registry."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bpmf import metrics
from bpmf._estimator import RatingEstimator
from bpmf.baselines import GlobalMean, UserItemMean, UserMean
from bpmf.compare import calibration_table, compare, resolve_folds, summarize, to_markdown
from bpmf.datasets import Ratings, Split, kfold, make_synthetic_ratings
from bpmf.registry import MODELS, PRESETS, make_model, model_class


class OracleNormal(RatingEstimator):
    """Knows the generating truth: predicts E[r] and exact normal predictive intervals."""

    def __init__(self, truth=None):
        self.truth = truth

    def fit(self, train):
        self._start_fit(train)
        return self

    def _expected(self, pairs):
        users, items = np.asarray(pairs.users), np.asarray(pairs.items)
        return self.truth.expected(users, items)

    def predict(self, pairs):
        self._check_is_fitted()
        return self._expected(pairs)

    def predict_interval(self, pairs, prob=0.9):
        mean = self._expected(pairs)
        half = stats.norm.ppf(0.5 + prob / 2) * self.truth.noise_sd
        return pd.DataFrame({"mean": mean, "lower": mean - half, "upper": mean + half})


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_ratings(
        n_users=80, n_items=30, n_factors=2, density=0.5, noise_sd=0.5, random_state=1
    )


def test_per_fold_metrics_equal_direct_computation(synthetic):
    ratings, _ = synthetic
    results = compare(
        ["user-item-mean", "global-mean"], ratings, folds=4, random_state=3, progress=False
    )
    assert list(results["model"]) == ["user-item-mean"] * 4 + ["global-mean"] * 4
    folds = kfold(ratings, n_splits=4, random_state=3)
    for (name, split), row in zip(folds.items(), results.itertuples(), strict=False):
        predicted = UserItemMean().fit(split.train).predict(split.test)
        assert row.fold == name
        assert row.n_train + row.n_test == ratings.n_ratings
        assert row.n_unseen == split.unseen["pairs"]
        assert row.rmse == pytest.approx(metrics.rmse(split.test.values, predicted), rel=1e-12)
        assert row.mae == pytest.approx(metrics.mae(split.test.values, predicted), rel=1e-12)
        assert np.isnan(row.coverage) and row.fit_seconds >= 0 and row.predict_seconds >= 0


def test_summary_is_mean_and_sample_std_over_folds(synthetic):
    ratings, _ = synthetic
    results = compare(
        ["user-mean", "user-item-mean"], ratings, folds=3, random_state=0, progress=False
    )
    summary = summarize(results)
    for model, rows in results.groupby("model"):
        assert summary.loc[model, "n_folds"] == 3
        assert summary.loc[model, "rmse_mean"] == pytest.approx(rows["rmse"].mean())
        assert summary.loc[model, "rmse_std"] == pytest.approx(np.std(rows["rmse"], ddof=1))
    assert summary["rmse_mean"].is_monotonic_increasing  # best model first
    table = to_markdown(summary)
    assert table.count("\n") == 2 + len(summary)
    best = summary.index[0]
    assert f"| {best} | 3 | {summary.loc[best, 'rmse_mean']:.4f} ±" in table


def test_oracle_intervals_give_nominal_coverage_and_noise_rmse():
    # Continuous data from the model: the oracle's RMSE is the noise sd and its normal
    # intervals cover the nominal fraction, up to binomial error.
    ratings, truth = make_synthetic_ratings(
        n_users=150, n_items=60, n_factors=2, density=0.5, noise_sd=0.7, random_state=5
    )
    results = compare(
        {"oracle": OracleNormal(truth)},
        ratings,
        folds=2,
        random_state=0,
        calibration=(0.5, 0.8),
        progress=False,
    )
    n_test = results["n_test"].to_numpy()
    assert results["rmse"].to_numpy() == pytest.approx(0.7, rel=0.05)
    for column, nominal in (("coverage_50", 0.5), ("coverage_80", 0.8), ("coverage", 0.9)):
        observed = results[column].to_numpy()
        tolerance = 4 * np.sqrt(nominal * (1 - nominal) / n_test)
        assert np.all(np.abs(observed - nominal) < tolerance), (column, observed)
    table = calibration_table(results)
    assert sorted(table["nominal"].unique()) == [0.5, 0.8, 0.9]
    assert len(table) == 3 * 2


def test_models_by_name_params_instance_and_dict(synthetic):
    ratings, _ = synthetic
    split = kfold(ratings, n_splits=2, random_state=0)["fold1"]
    models = ["user-mean", ("user-mean", {}), UserMean(), GlobalMean()]
    results = compare(models, folds=[split], progress=False)
    assert list(results["model"]) == ["user-mean", "user-mean-2", "UserMean", "GlobalMean"]
    # The same model given three ways gives the same numbers.
    assert results["rmse"].iloc[:3].nunique() == 1
    labelled = compare(
        {"mine": UserMean(), "baseline": "global-mean"}, folds={"a": split}, progress=False
    )
    assert list(labelled["model"]) == ["mine", "baseline"]
    assert list(labelled["fold"]) == ["a", "a"]
    assert compare("user-mean, global-mean", folds=split, progress=False)["model"].tolist() == [
        "user-mean",
        "global-mean",
    ]


def test_instances_are_cloned_not_mutated(synthetic):
    ratings, _ = synthetic
    model = UserMean()
    seen = []
    compare(
        [model],
        ratings,
        folds=2,
        random_state=0,
        progress=False,
        callback=lambda label, fold, fitted, split: seen.append((fold, fitted, split)),
    )
    assert not hasattr(model, "user_index_")
    assert [fold for fold, _, _ in seen] == ["fold1", "fold2"]
    assert seen[0][1] is not seen[1][1]
    fold, fitted, split = seen[0]
    assert list(fitted.user_index_) == list(split.train.user_ids)


def test_seed_makes_results_reproducible(synthetic):
    ratings, _ = synthetic
    first = compare(["user-mean", "random"], ratings, folds=3, random_state=7, progress=False)
    again = compare(["user-mean", "random"], ratings, folds=3, random_state=7, progress=False)
    other = compare(["user-mean", "random"], ratings, folds=3, random_state=8, progress=False)
    pd.testing.assert_series_equal(first["rmse"], again["rmse"])
    assert not np.allclose(first["rmse"], other["rmse"])


def test_progress_lines_go_to_stderr(synthetic, capsys):
    ratings, _ = synthetic
    compare(["user-mean"], ratings, folds=2, random_state=0, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("[bpmf compare]") == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": ["nope"]}, "Unknown model 'nope'"),
        ({"models": [object()]}, "Cannot use"),
        ({"models": []}, "No models"),
        ({"folds": "official"}, "official"),
        ({"folds": 2.5}, "folds must be"),
        ({"folds": []}, "empty"),
        ({"folds": [("a", "b")]}, "Split"),
        ({"prob": 1.5}, "prob must be"),
        ({"calibration": (0.0,)}, "calibration level"),
    ],
)
def test_bad_arguments_raise_clear_errors(synthetic, kwargs, message):
    ratings, _ = synthetic
    arguments = {"models": ["user-mean"], "data": ratings, "folds": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        compare(arguments.pop("models"), **arguments)


def test_folds_need_data():
    with pytest.raises(ValueError, match="needs data"):
        resolve_folds(None, 3)


def test_summary_rejects_foreign_frames():
    with pytest.raises(ValueError, match="lack column"):
        summarize(pd.DataFrame({"model": ["a"]}))


def test_dataset_name_and_split_objects(food_world_cup):
    splits = resolve_folds("food-world-cup", "3", random_state=0)
    assert list(splits) == ["fold1", "fold2", "fold3"]
    assert sum(s.test.n_ratings for s in splits.values()) == food_world_cup.n_ratings
    assert isinstance(splits["fold1"], Split)


# ---------------------------------------------------------------------- registry
def _importable(name):
    try:
        return model_class(name)
    except ImportError:
        return None


@pytest.mark.parametrize("name", list(MODELS))
def test_every_preset_setting_is_a_constructor_argument(name):
    cls = _importable(name)
    if cls is None:
        pytest.skip(f"{MODELS[name].class_path} is not available yet")
    accepted = set(cls._param_names())
    for preset, settings in PRESETS.items():
        unknown = set(settings.get(name, {})) - accepted
        assert not unknown, f"preset {preset!r} gives {name} unknown settings {unknown}"
        model = make_model(name, preset=preset)
        assert isinstance(model, cls)
    assert set(MODELS[name].fixed_params) <= accepted


def test_make_model_routes_shared_settings():
    model = make_model("random", random_state=3, n_factors=4)  # n_factors skipped silently
    assert model.random_state == 3
    assert make_model("USER-MEAN").__class__ is UserMean
    with pytest.raises(ValueError, match="has no parameter 'alpha'"):
        make_model("user-mean", params={"alpha": 1})
    with pytest.raises(ValueError, match="Unknown preset"):
        make_model("user-mean", preset="fastest")
    with pytest.raises(TypeError, match="params="):
        make_model("user-mean", alpha=1)


def test_missing_class_gives_clear_import_error(monkeypatch):
    from bpmf import registry

    spec = registry.ModelSpec("ghost", "bpmf.models.Ghost", "not there")
    monkeypatch.setitem(registry.MODELS, "ghost", spec)
    with pytest.raises(ImportError, match="Model 'ghost' needs bpmf.models.Ghost"):
        make_model("ghost")


@pytest.mark.slow
@pytest.mark.movielens
def test_official_folds_on_movielens(movielens_home):
    results = compare(
        ["item-mean"], "ml-100k", folds="official", data_home=movielens_home, progress=False
    )
    assert list(results["fold"]) == ["u1", "u2", "u3", "u4", "u5"]
    assert (results["n_test"] == 20_000).all()
    from bpmf.baselines import ItemMean
    from bpmf.datasets import load_movielens_folds

    u1 = load_movielens_folds("ml-100k", data_home=movielens_home)["u1"]
    direct = metrics.rmse(u1.test.values, ItemMean().fit(u1.train).predict(u1.test))
    assert results["rmse"].iloc[0] == pytest.approx(direct, rel=1e-12)


# ---------------------------------------------------------------------- failures, checkpoints
class Exploding(UserMean):
    """Fails on the second fold it meets (by its training size), like a model that diverges."""

    def __init__(self, fail_on_n_train=None):
        self.fail_on_n_train = fail_on_n_train

    def fit(self, train):
        if self.fail_on_n_train is None or len(train) == self.fail_on_n_train:
            raise FloatingPointError("sampler diverged\non this fold")
        return super().fit(train)


def test_a_failing_model_is_reported_and_the_others_finish(synthetic):
    ratings, _ = synthetic
    with pytest.warns(UserWarning, match=r"2 of 6 fits failed \(e.g. boom on fold1"):
        results = compare(
            {"first": "user-mean", "boom": Exploding(), "last": "global-mean"},
            ratings,
            folds=2,
            random_state=0,
            progress=False,
        )
    assert list(results["model"]) == ["first"] * 2 + ["boom"] * 2 + ["last"] * 2
    failed = results[results["model"] == "boom"]
    assert failed["rmse"].isna().all() and (failed["n_test"] > 0).all()
    assert (failed["error"] == "FloatingPointError: sampler diverged on this fold").all()
    assert (results.loc[results["model"] != "boom", "error"] == "").all()
    assert results.loc[results["model"] != "boom", "rmse"].notna().all()
    summary = summarize(results)
    assert summary.loc["boom", "n_folds"] == 0 and summary.loc["boom", "n_failed"] == 2
    assert list(summary.index)[-1] == "boom"
    table = to_markdown(summary)
    assert "- boom failed on 2 of 2 fold(s): FloatingPointError: sampler diverged" in table


def test_checkpoint_gets_each_result_as_it_finishes(synthetic, tmp_path):
    ratings, _ = synthetic
    checkpoint = tmp_path / "results.csv"
    lines_seen = []

    def look(label, fold, model, split):
        lines_seen.append(len(checkpoint.read_text().splitlines()))

    results = compare(
        ["user-mean", "global-mean"], ratings, folds=2, random_state=1, progress=False,
        checkpoint=checkpoint, callback=look,
    )
    assert lines_seen == [2, 3, 4, 5]  # header + one row per finished fit, before the next
    saved = pd.read_csv(checkpoint, keep_default_na=False, na_values={"rmse": [""]})
    pd.testing.assert_series_equal(saved["rmse"], results["rmse"])


def test_resume_skips_finished_fits_and_retries_failures(synthetic, tmp_path):
    ratings, _ = synthetic
    checkpoint = tmp_path / "results.csv"
    folds = {
        "fold1": kfold(ratings, n_splits=2, random_state=2)["fold1"],
        "fold2": kfold(ratings.subset(np.arange(900)), n_splits=2, random_state=2)["fold1"],
    }
    n_train_fold2 = folds["fold2"].train.n_ratings  # 450, not fold1's 600
    with pytest.warns(UserWarning, match="1 of 4 fits failed"):
        first = compare(
            {"a": "user-mean", "b": Exploding(n_train_fold2)}, folds=folds, progress=False,
            checkpoint=checkpoint,
        )
    with pytest.raises(FileExistsError, match="resume=True"):
        compare({"a": "user-mean"}, folds=folds, progress=False, checkpoint=checkpoint)
    fitted = []
    resumed = compare(
        {"a": "user-mean", "b": Exploding(-1)},  # -1: never fails now
        folds=folds,
        progress=False,
        checkpoint=checkpoint,
        resume=True,
        callback=lambda label, fold, model, split: fitted.append((label, fold)),
    )
    assert fitted == [("b", "fold2")]  # only the failed fit ran again
    assert (resumed["error"] == "").all()
    pd.testing.assert_frame_equal(resumed.iloc[:3], first.iloc[:3])
    assert len(pd.read_csv(checkpoint)) == 4


def test_resume_refuses_results_of_other_folds(synthetic, tmp_path):
    ratings, _ = synthetic
    checkpoint = tmp_path / "results.csv"
    compare(["user-mean"], ratings, folds=2, random_state=0, progress=False, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="other data, folds or seed"):
        compare(
            ["user-mean"], ratings.subset(np.arange(300)), folds=2, random_state=0,
            progress=False, checkpoint=checkpoint, resume=True,
        )


def test_progress_counts_finished_fits_and_can_be_silenced(synthetic, capsys):
    ratings, _ = synthetic
    compare(["user-mean", "global-mean"], ratings, folds=2, random_state=0, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(")")[0] for line in lines] == [f"[bpmf compare] ({k}/4" for k in range(1, 5)]
    compare(["user-mean"], ratings, folds=2, random_state=0, progress=False)
    assert capsys.readouterr().err == ""


def test_official_folds_on_a_frame_do_not_print_the_frame(synthetic):
    ratings, _ = synthetic
    with pytest.raises(ValueError, match=r"got data=a DataFrame of shape \(\d+, 3\)\.") as caught:
        compare(["user-mean"], ratings.to_frame(), folds="official")
    assert len(str(caught.value)) < 300


# ---------------------------------------------------------------------- parallel grid
PARALLEL_MODELS = [
    "user-item-mean",
    "random",
    ("adagrad", {"n_factors": 2, "max_iter": 5, "tol": 1.0}),
]


def _without_timings(results):
    return results.drop(columns=["fit_seconds", "predict_seconds"])


@pytest.fixture(scope="module")
def serial_results(synthetic):
    ratings, _ = synthetic
    return compare(PARALLEL_MODELS, ratings, folds=3, random_state=5, progress=False)


def test_loky_gives_the_serial_results(synthetic, serial_results):
    ratings, _ = synthetic
    parallel = compare(
        PARALLEL_MODELS, ratings, folds=3, random_state=5, progress=False, n_jobs=2,
        backend="loky",
    )
    pd.testing.assert_frame_equal(_without_timings(parallel), _without_timings(serial_results))


def test_dask_cluster_gives_the_serial_results(synthetic, serial_results, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    ratings, _ = synthetic
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        parallel = compare(
            PARALLEL_MODELS, ratings, folds=3, random_state=5, progress=False, backend="dask",
            checkpoint=tmp_path / "results.csv",
        )
    pd.testing.assert_frame_equal(_without_timings(parallel), _without_timings(serial_results))
    assert len(pd.read_csv(tmp_path / "results.csv")) == 9


def test_bad_n_jobs():
    with pytest.raises(ValueError, match="n_jobs must be a non-zero integer"):
        compare(["user-mean"], folds=[], n_jobs=0)


def test_dask_backend_without_a_client_says_how_to_get_one(synthetic):
    pytest.importorskip("dask.distributed")
    ratings, _ = synthetic
    with pytest.raises(ValueError, match=r"create one first, Client\(\) for a local cluster"):
        compare(["user-mean"], ratings, folds=2, backend="dask", progress=False)


class WholeRatings(RatingEstimator):
    """Whole-rating predictions (as an ordinal fit, it has ``classes_``): its quantiles span
    the whole scale, its ``predict_interval`` ranges only the rounded mean."""

    classes_ = np.arange(1, 6)

    def fit(self, train):
        self._start_fit(train)
        self.mean_ = float(np.mean(train.values))
        return self

    def predict(self, pairs):
        return np.full(len(pairs.users), self.mean_)

    def predict_quantiles(self, pairs, quantiles):
        frame = pd.DataFrame({"mean": self.predict(pairs)})
        for q in quantiles:
            frame[q] = 1.0 if q < 0.5 else 5.0
        return frame

    def predict_interval(self, pairs, prob=0.9):
        mean = self.predict(pairs)
        return pd.DataFrame({"mean": mean, "lower": np.round(mean), "upper": np.round(mean)})


def test_whole_rating_models_take_their_ranges_from_predict_interval():
    rng = np.random.default_rng(0)
    pairs = rng.choice(40 * 30, 600, replace=False)
    ratings = Ratings(pairs // 30, pairs % 30, rng.choice([3.0, 4.0], 600, p=[0.3, 0.7]),
                      scale=(1.0, 5.0))
    results = compare({"whole": WholeRatings()}, ratings, folds=2, random_state=0,
                      calibration=(0.5,), progress=False)
    for split, row in zip(kfold(ratings, n_splits=2, random_state=0).values(),
                          results.itertuples(), strict=True):
        rounded = np.round(np.mean(split.train.values))
        inside = np.mean(split.test.values == rounded)
        assert row.coverage == pytest.approx(inside) and row.coverage_50 == pytest.approx(inside)
        assert row.coverage < 0.9  # the quantiles (the whole scale) would cover everything
