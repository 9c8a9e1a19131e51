"""BPMF API: DataTree layout, Eq. 10 predictions, intervals, unseen ids, recommendations,
persistence, reproducibility and bad input, on one tiny seeded fit shared by the module (the
default: LKJ prior, blocked Gibbs sampler), plus one small joint-NUTS fit for what is
particular to ``method="nuts"``."""

import warnings
import zipfile

import arviz as az
import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
import xarray as xr
from scipy import special

from bpmf import ConvergenceWarning, DataError, ModelFileError, NotFittedError
from bpmf.datasets import Ratings, make_synthetic_ratings
from bpmf.models import BPMF, PMF
from bpmf.models._graph import initial_point

# PyTensor's C backend warns once per process when it finds no BLAS (pip installs); it is an
# environment notice, not a bpmf problem.
pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")

SAMPLER = {"draws": 200, "tune": 200, "chains": 2, "cores": 1}
# joint NUTS's default warm-up (300): with 150, one seed in six left sigma's chains apart
# (bulk ESS 17 of 200 draws, R-hat 1.09)
NUTS_SAMPLER = {"draws": 100, "tune": 300, "chains": 2, "cores": 1}
SCALARS = ("mu", "sigma", "user_bias_sd", "item_bias_sd")


def _with_string_ids(ratings):
    return Ratings(
        [f"u{u}" for u in ratings.users], [f"i{i}" for i in ratings.items], ratings.values,
        scale=None,
    )


@pytest.fixture(scope="module")
def data():
    ratings, truth = make_synthetic_ratings(
        n_users=40, n_items=30, n_factors=2, density=0.4, noise_sd=0.5, random_state=11
    )
    ratings = _with_string_ids(ratings)
    # hold out user u0 and item i0 entirely: they are "unseen" at prediction time
    keep = (ratings.users != "u0") & (ratings.items != "i0")
    return ratings.subset(keep), truth


@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    return BPMF(
        2,
        sampler_config={**SAMPLER, "log_likelihood": True, "posterior_predictive": True},
        random_state=5,
        progressbar=False,
    ).fit(train)


@pytest.fixture(scope="module")
def fitted_nuts(data):
    """Joint NUTS (nutpie) on the same data: only for what is particular to method="nuts"."""
    pytest.importorskip("nutpie")
    train, _ = data
    return BPMF(2, method="nuts", sampler_config=NUTS_SAMPLER, random_state=5,
                progressbar=False).fit(train)


def _pairs(users, items):
    return pd.DataFrame({"user": users, "item": items})


# ---------------------------------------------------------------------- the DataTree
def test_datatree_groups_dims_and_ids(data, fitted):
    train, _ = data
    tree = fitted.idata_
    for group in ("posterior", "sample_stats", "observed_data", "log_likelihood",
                  "posterior_predictive"):
        assert group in tree.children, group
    post = tree["posterior"].ds
    assert post["U"].dims == ("chain", "draw", "user", "factor")
    assert post["V"].dims == ("chain", "draw", "item", "factor")
    assert post["Sigma_U"].dims == ("chain", "draw", "factor", "factor_")
    assert post.sizes["chain"] == 2 and post.sizes["draw"] == SAMPLER["draws"]
    assert list(post["user"].values) == list(train.user_ids)
    assert list(post["item"].values) == list(train.item_ids)
    # Sigma is a covariance: symmetric positive definite in every draw
    sigma_u = post["Sigma_U"].values
    np.testing.assert_allclose(sigma_u, np.swapaxes(sigma_u, -1, -2))
    assert (np.linalg.eigvalsh(sigma_u) > 0).all()
    np.testing.assert_array_equal(tree["observed_data"].ds["rating"].values, train.values)
    # arviz functions work on the tree directly
    assert float(az.rhat(tree, var_names=["sigma"])["sigma"]) < 1.1
    with warnings.catch_warnings():  # Pareto-k notice: 40 users x 30 items is a tiny data set
        warnings.simplefilter("ignore", UserWarning)
        loo = az.loo(tree)
    assert np.isfinite(loo.elpd)


def test_log_likelihood_matches_normal_density(fitted):
    post = fitted.idata_["posterior"].ds
    loglik = fitted.idata_["log_likelihood"].ds["rating"].values
    obs = fitted.idata_["observed_data"].ds
    users = fitted.user_index_.get_indexer(obs["obs_user"].values)
    items = fitted.item_index_.get_indexer(obs["obs_item"].values)
    c, d = 1, 7
    expected = (
        post["mu"].values[c, d]
        + post["user_bias"].values[c, d, users]
        + post["item_bias"].values[c, d, items]
        + np.einsum("nk,nk->n", post["U"].values[c, d, users], post["V"].values[c, d, items])
    )
    sigma = post["sigma"].values[c, d]
    reference = -0.5 * ((obs["rating"].values - expected) / sigma) ** 2 - np.log(
        sigma * np.sqrt(2 * np.pi)
    )
    np.testing.assert_allclose(loglik[c, d], reference, rtol=1e-10)


def test_default_is_lkj_gibbs(fitted):
    assert fitted.method == "gibbs"
    assert fitted._model_config()["covariance_prior"] == "lkj"
    assert BPMF().method == "gibbs"
    assert BPMF.default_model_config["covariance_prior"] == "lkj"


def test_sampling_diagnostics_reported(fitted):
    """The Gibbs fit's diagnostics dict: the LKJ block's divergences, no tree depth, R-hat and
    bulk ESS of every scalar, R-hat of the predictions, the warnings as a list."""
    diagnostics = fitted.diagnostics_
    assert isinstance(diagnostics["divergences"], int) and diagnostics["divergences"] >= 0
    assert diagnostics["max_treedepth_hits"] is None  # no tree depth in a Gibbs sweep
    assert set(diagnostics["rhat"]) == set(SCALARS) == set(diagnostics["ess_bulk"])
    # 2 x 200 draws: only gross failures are checked on every scalar (user_bias_sd mixes
    # slowest under Gibbs: bulk ESS ~30 of 400 draws here), sigma as before
    for name in SCALARS:
        assert 0.9 < diagnostics["rhat"][name] < 1.25, name
        assert diagnostics["ess_bulk"][name] > 10, name
    assert 0.9 < diagnostics["rhat_sigma"] < 1.1
    assert diagnostics["ess_bulk_sigma"] > 20
    assert diagnostics["rhat_sigma"] == diagnostics["rhat"]["sigma"]
    assert diagnostics["ess_bulk_sigma"] == diagnostics["ess_bulk"]["sigma"]
    assert 1.0 - 0.05 < diagnostics["rhat_predictions_max"] < 1.2
    assert 0.0 <= diagnostics["rhat_predictions_share"] <= 1.0
    assert isinstance(diagnostics["warnings"], list)
    assert all(isinstance(message, str) for message in diagnostics["warnings"])
    # the same numbers as arviz on the posterior
    post = fitted.idata_["posterior"].ds
    sigma = xr.Dataset({"sigma": (("chain", "draw"), post["sigma"].values)})
    np.testing.assert_allclose(
        float(az.rhat(sigma)["sigma"]), diagnostics["rhat"]["sigma"], rtol=1e-10
    )


def test_nuts_diagnostics_report_tree_depth(fitted_nuts):
    diagnostics = fitted_nuts.diagnostics_
    assert fitted_nuts.method == "nuts"
    assert isinstance(diagnostics["divergences"], int) and diagnostics["divergences"] >= 0
    assert isinstance(diagnostics["max_treedepth_hits"], int)
    assert set(diagnostics["rhat"]) == set(SCALARS)
    assert 0.9 < diagnostics["rhat_sigma"] < 1.1
    assert diagnostics["ess_bulk_sigma"] > 20


def test_diagnostics_warn_with_convergence_warning(data):
    """Problems are emitted as ConvergenceWarning (a UserWarning) and listed in warnings."""
    train, _ = data
    model = BPMF(2, sampler_config={"draws": 5, "tune": 5, "chains": 2, "cores": 1},
                 random_state=0, progressbar=False)
    with pytest.warns(ConvergenceWarning) as record:
        model.fit(train)
    assert issubclass(ConvergenceWarning, UserWarning)
    assert model.diagnostics_["warnings"]
    emitted = [str(w.message) for w in record if w.category is ConvergenceWarning]
    assert emitted == model.diagnostics_["warnings"]
    assert all(message.startswith("BPMF (gibbs, lkj)") for message in emitted)


# ---------------------------------------------------------------------- predictions
def test_predict_averages_predictions_over_draws(data, fitted):
    """Eq. 10: the mean over draws of mu + b + c + U.V, not the prediction of mean factors."""
    train, _ = data
    post = fitted.idata_["posterior"].ds
    pairs = train.to_frame().iloc[:25]
    users = fitted.user_index_.get_indexer(pairs["user"])
    items = fitted.item_index_.get_indexer(pairs["item"])
    U = post["U"].values[:, :, users]
    V = post["V"].values[:, :, items]
    per_draw = (
        post["mu"].values[..., None]
        + post["user_bias"].values[:, :, users]
        + post["item_bias"].values[:, :, items]
        + (U * V).sum(-1)
    )
    np.testing.assert_allclose(fitted.predict(pairs), per_draw.mean((0, 1)), rtol=1e-12)
    # the factors' rotation freedom makes "mean of factors" a different (worse) thing
    of_means = post["mu"].values.mean() + (U.mean((0, 1)) * V.mean((0, 1))).sum(-1)
    assert not np.allclose(of_means, per_draw.mean((0, 1)) - (
        post["user_bias"].values[:, :, users] + post["item_bias"].values[:, :, items]
    ).mean((0, 1)))


def test_predict_interval_frame(data, fitted):
    train, _ = data
    pairs = train.to_frame().iloc[:40].set_index(np.arange(100, 140))
    interval = fitted.predict_interval(pairs, prob=0.9)
    assert list(interval.columns) == ["mean", "lower", "upper"]
    assert (interval.index == pairs.index).all()
    np.testing.assert_allclose(interval["mean"], fitted.predict(pairs))
    assert (interval["lower"] < interval["mean"]).all()
    assert (interval["mean"] < interval["upper"]).all()
    narrow = fitted.predict_interval(pairs, prob=0.5)
    assert ((narrow["upper"] - narrow["lower"]) < (interval["upper"] - interval["lower"])).all()
    # noise included: a 90% interval is at least as wide as 2 * 1.645 * sigma (roughly)
    sigma = float(fitted.idata_["posterior"].ds["sigma"].mean())
    assert ((interval["upper"] - interval["lower"]) > 2 * 1.5 * sigma).all()
    with pytest.raises(ValueError, match="prob"):
        fitted.predict_interval(pairs, prob=1.5)


def test_predict_posterior_draws(data, fitted):
    train, _ = data
    pairs = train.to_frame().iloc[:5]
    expected = fitted.predict_posterior(pairs, kind="expected")
    assert expected.dims == ("chain", "draw", "pair")
    assert list(expected["user"].values) == list(pairs["user"])
    np.testing.assert_allclose(expected.mean(("chain", "draw")).values, fitted.predict(pairs))
    predictive = fitted.predict_posterior(pairs, random_state=0)
    # the predictive spread is the expected spread plus the noise variance
    var_gap = predictive.var(("chain", "draw")) - expected.var(("chain", "draw"))
    sigma2 = float((fitted.idata_["posterior"].ds["sigma"] ** 2).mean())
    np.testing.assert_allclose(var_gap.values, sigma2, rtol=0.35)


def test_unseen_user_and_item_use_population_level(data, fitted):
    train, _ = data
    pairs = _pairs(["u0", "u1", "u1"], ["i1", "i0", "i1"])
    with pytest.warns(UserWarning, match="1 pair\\(s\\) with a user and 1 with an item"):
        predicted = fitted.predict(pairs)
    post = fitted.idata_["posterior"].ds
    item = fitted.item_index_.get_loc("i1")
    user = fitted.user_index_.get_loc("u1")
    new_user = (
        post["mu"] + post["item_bias"].isel(item=item)
        + (post["mu_U"] * post["V"].isel(item=item)).sum("factor")
    ).mean().item()
    new_item = (
        post["mu"] + post["user_bias"].isel(user=user)
        + (post["U"].isel(user=user) * post["mu_V"]).sum("factor")
    ).mean().item()
    np.testing.assert_allclose(predicted[:2], [new_user, new_item], rtol=1e-12)
    with pytest.raises(DataError, match="unseen"):
        fitted.predict(pairs, on_unseen="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.predict(pairs, on_unseen="ignore")
    # predictive draws of a new user carry the population spread: wider than a known user's
    with pytest.warns(UserWarning):
        draws = fitted.predict_posterior(_pairs(["u0", "u1"], ["i1", "i1"]), kind="expected")
    spread = draws.std(("chain", "draw")).values
    assert spread[0] > spread[1]


# ---------------------------------------------------------------------- recommendations
def test_recommend_ranks_unseen_items_with_probabilities(data, fitted):
    train, _ = data
    frame = train.to_frame()
    user = "u5"
    seen = set(frame.loc[frame["user"] == user, "item"])
    top = fitted.recommend(user, k=5, threshold=3.5)
    assert list(top.columns) == ["item", "mean", "prob_at_least", "rank"]
    assert len(top) == 5 and not (set(top["item"]) & seen)
    assert (np.diff(top["mean"]) <= 0).all()
    assert ((top["prob_at_least"] > 0) & (top["prob_at_least"] < 1)).all()
    # P(r >= t) equals the predictive-draw frequency (Monte Carlo check)
    draws = fitted.predict_posterior(_pairs([user] * 5, top["item"]), random_state=1)
    frequency = (draws >= 3.5).mean(("chain", "draw")).values
    np.testing.assert_allclose(top["prob_at_least"], frequency, atol=0.08)
    # the best unseen item overall is ranked first
    unseen = [i for i in fitted.item_index_ if i not in seen]
    means = fitted.predict(_pairs([user] * len(unseen), unseen), clip=False)
    assert top["item"].iloc[0] == unseen[int(np.argmax(means))]
    everything = fitted.recommend(user, k=1000, exclude_seen=False)
    assert len(everything) == len(fitted.item_index_)


def test_summary_reports_identifiable_quantities(fitted):
    table = fitted.summary(n_pairs=4)
    assert "sigma" in table.index and "user_bias_sd" in table.index
    assert sum(label.startswith("rating_pred") for label in table.index) == 4
    assert not any(label.startswith(("U[", "V[")) for label in table.index)
    assert {"mean", "r_hat", "ess_bulk"} <= set(table.columns)
    sigma_mean = float(fitted.idata_["posterior"].ds["sigma"].mean())
    assert float(table.loc["sigma", "mean"]) == pytest.approx(sigma_mean, abs=0.01)


# ---------------------------------------------------------------------- persistence
def test_save_load_predicts_identically(data, fitted, tmp_path):
    train, _ = data
    path = fitted.save(tmp_path / "model.bpmf")
    assert [p.name for p in tmp_path.iterdir()] == ["model.bpmf"]  # no temp files left
    loaded = BPMF.load(path)
    pairs = pd.concat([train.to_frame().iloc[:30], _pairs(["u0"], ["i3"])])
    with pytest.warns(UserWarning):
        expected = fitted.predict(pairs)
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(loaded.predict(pairs), expected)
    np.testing.assert_array_equal(
        loaded.predict_interval(train.to_frame().iloc[:10]).to_numpy(),
        fitted.predict_interval(train.to_frame().iloc[:10]).to_numpy(),
    )
    assert loaded.get_params() == fitted.get_params()
    assert list(loaded.user_index_) == list(fitted.user_index_)
    assert loaded.user_index_.dtype == fitted.user_index_.dtype
    pd.testing.assert_frame_equal(loaded.recommend("u3"), fitted.recommend("u3"))


def test_load_rejects_bad_files(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.bpmf")
    with pytest.raises(ModelFileError, match="BPMF model"):
        PMF.load(path)
    truncated = tmp_path / "truncated.bpmf"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError):
        BPMF.load(truncated)
    garbage = tmp_path / "garbage.bpmf"
    garbage.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a bpmf model"):
        BPMF.load(garbage)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("zarr.json", '{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(ModelFileError):
        BPMF.load(foreign)
    with pytest.raises(FileNotFoundError):
        BPMF.load(tmp_path / "missing.bpmf")


def test_failed_save_leaves_existing_file_intact(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.bpmf")
    before = path.read_bytes()
    broken = BPMF(2, random_state=np.random.default_rng(0))  # a Generator cannot be saved
    broken.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    with pytest.raises(DataError, match="Generator"):
        broken.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.bpmf"]


# ---------------------------------------------------------------------- reproducibility
@pytest.mark.slow
def test_same_random_state_same_draws(data, fitted):
    train, _ = data
    again = BPMF(
        2,
        sampler_config={**SAMPLER, "log_likelihood": True, "posterior_predictive": True},
        random_state=5,
        progressbar=False,
    ).fit(train)
    for name in ("U", "sigma", "user_bias"):
        np.testing.assert_array_equal(
            again.idata_["posterior"].ds[name].values, fitted.idata_["posterior"].ds[name].values
        )
    np.testing.assert_array_equal(again.map_["U"], fitted.map_["U"])


# ---------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_clearly(data, fitted):
    train, _ = data
    with pytest.raises(DataError, match="Missing column"):
        fitted.predict(pd.DataFrame({"userId": ["u1"], "item": ["i1"]}))
    with pytest.raises(DataError, match="empty"):
        BPMF(2).fit(pd.DataFrame({"user": [], "item": [], "rating": []}))
    with pytest.raises(ValueError, match="n_factors"):
        BPMF(0).fit(train)
    with pytest.raises(ValueError, match="Unknown nuts_sampler 'stan'"):
        BPMF(2, method="nuts", sampler_config={"nuts_sampler": "stan"}).fit(train)
    with pytest.raises(ValueError, match="Unknown sampler_config"):
        BPMF(2, sampler_config={"n_draws": 10}).fit(train)
    with pytest.raises(ValueError, match="method"):
        BPMF(2, method="vi").fit(train)
    with pytest.raises(ValueError, match="parameterization"):
        BPMF(2, model_config={"parameterization": "sideways"}).fit(train)
    with pytest.raises(ValueError, match="bias_parameterization"):
        BPMF(2, model_config={"bias_parameterization": "partial"}).fit(train)
    with pytest.raises(NotFittedError):
        BPMF(2).predict(train)
    with pytest.raises(ValueError, match="k must"):
        fitted.recommend("u1", k=0)


def test_model_config_of_the_other_prior_is_rejected(data):
    train, _ = data
    with pytest.raises(ValueError, match="covariance_prior"):
        BPMF(2, model_config={"nu0": 3.0}).fit(train)  # a Wishart key under the LKJ default
    with pytest.raises(ValueError, match="covariance_prior"):
        BPMF(2, model_config={"covariance_prior": "wishart", "lkj_eta": 2.0}).fit(train)
    with pytest.raises(ValueError, match="covariance_prior"):
        BPMF(2, model_config={"covariance_prior": "gamma"}).fit(train)
    with pytest.raises(ValueError, match="method='nuts'"):
        BPMF(2, method="nuts", model_config={"covariance_prior": "wishart"}).fit(train)
    with pytest.raises(ValueError, match="wishart"):
        BPMF(2, model_config={"covariance_prior": "wishart"}).build_model(train)


def test_wishart_gibbs_fit(data):
    """The conjugate model through the same front end: same layout, sane noise estimate."""
    train, _ = data
    model = BPMF(2, model_config={"covariance_prior": "wishart", "nu0": 3.0},
                 sampler_config={"draws": 100, "tune": 100, "chains": 2, "cores": 1},
                 random_state=0, progressbar=False).fit(train)
    post = model.idata_["posterior"].ds
    for name in ("U", "V", "mu_U", "Sigma_U", "mu", "sigma", "user_bias", "item_bias_sd"):
        assert name in post, name
    assert post.sizes["draw"] == 100
    assert 0.35 < float(post["sigma"].mean()) < 0.65
    assert model.diagnostics_["divergences"] is None
    assert set(model.diagnostics_["rhat"]) == set(SCALARS)


def test_missing_backend_names_the_extra(data, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numpyro" else real(name, *a)
    )
    train, _ = data
    with pytest.raises(ImportError, match=r"numpyro.*bpmf\[numpyro\]"):
        BPMF(2, method="nuts", sampler_config={"nuts_sampler": "numpyro"}).fit(train)


def _copy_of(fitted):
    copy = BPMF(2)
    copy.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    copy.idata_ = fitted.idata_.copy()
    return copy


def test_divergences_are_reported(data, fitted):
    train, _ = data
    stats = fitted.idata_["sample_stats"].ds
    copy = _copy_of(fitted)
    diverging = stats["diverging"].copy(data=np.ones(stats["diverging"].shape, dtype=bool))
    copy.idata_["sample_stats"] = copy.idata_["sample_stats"].to_dataset().assign(
        diverging=diverging
    )
    with pytest.warns(ConvergenceWarning, match="divergent"):
        diagnostics = copy._diagnose(train)
    assert diagnostics["divergences"] == stats["diverging"].size
    assert any("divergent" in message for message in diagnostics["warnings"])


def test_disagreeing_chains_are_reported(data, fitted):
    """Chains whose sigma draws sit apart give R-hat > 1.01 and a ConvergenceWarning."""
    train, _ = data
    copy = _copy_of(fitted)
    posterior = fitted.idata_["posterior"].to_dataset()
    sigma = posterior["sigma"].values.copy()
    sigma[0] += 5 * sigma.std()  # chain 0 five sds above the others
    copy.idata_["posterior"] = posterior.assign(sigma=posterior["sigma"].copy(data=sigma))
    with pytest.warns(ConvergenceWarning, match=r"R-hat above 1\.01 \(.*sigma"):
        diagnostics = copy._diagnose(train)
    assert diagnostics["rhat_sigma"] > 1.01
    assert any("sigma" in m and "R-hat" in m for m in diagnostics["warnings"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        again = fitted._diagnose(train)
    flagged = any("R-hat above" in m and "sigma " in m for m in again["warnings"])
    assert flagged == (again["rhat_sigma"] > 1.01)
    assert [str(w.message) for w in record if w.category is ConvergenceWarning] == again[
        "warnings"
    ]


# ---------------------------------------------------------------------- NUTS dispatch
def test_nuts_method_gives_the_same_tree(data, fitted_nuts):
    train, truth = data
    model = fitted_nuts
    post = model.idata_["posterior"].ds
    for name in ("U", "V", "mu_U", "Sigma_U", "mu", "sigma", "user_bias", "item_bias"):
        assert name in post, name
    assert post["U"].dims == ("chain", "draw", "user", "factor")
    assert post.sizes["draw"] == NUTS_SAMPLER["draws"]
    assert list(post["user"].values) == list(train.user_ids)
    assert "diverging" in model.idata_["sample_stats"].ds
    pairs = train.to_frame()
    users = pairs["user"].str[1:].astype(int)
    items = pairs["item"].str[1:].astype(int)
    truth_rmse = np.sqrt(np.mean((model.predict(pairs) - truth.expected(users, items)) ** 2))
    assert truth_rmse < 0.45
    assert 0.35 < float(post["sigma"].mean()) < 0.65
    assert set(model.predict_interval(pairs.iloc[:3]).columns) == {"mean", "lower", "upper"}


def test_gibbs_fit_recovers_the_truth(data, fitted):
    train, truth = data
    pairs = train.to_frame()
    users = pairs["user"].str[1:].astype(int)
    items = pairs["item"].str[1:].astype(int)
    truth_rmse = np.sqrt(np.mean((fitted.predict(pairs) - truth.expected(users, items)) ** 2))
    assert truth_rmse < 0.45
    assert 0.35 < float(fitted.idata_["posterior"].ds["sigma"].mean()) < 0.65


def test_special_ndtr_probability_definition(fitted):
    """prob_at_least is the draw-average of the Normal tail: recompute it from the posterior."""
    top = fitted.recommend("u2", k=3, threshold=3.0)
    post = fitted.idata_["posterior"].ds
    draws = fitted.predict_posterior(_pairs(["u2"] * 3, top["item"]), kind="expected").values
    sigma = post["sigma"].values[..., None]
    manual = special.ndtr((draws - 3.0) / sigma).mean((0, 1))
    np.testing.assert_allclose(top["prob_at_least"], manual, rtol=1e-12)


# ---------------------------------------------------------------------- parameterisation
@pytest.mark.parametrize("choice", ["auto", "centered", "noncentered"])
def test_bias_parameterisations_start_from_the_map(data, choice):
    """Every bias parameterisation maps the MAP start into the model exactly: the biases
    the model computes at the initial point are the MAP biases, and "auto" centres exactly the
    rows with at least ``bias_center_min`` ratings."""
    train, _ = data
    ratings = BPMF(2)._start_fit(train)
    model = BPMF(2, model_config={"bias_parameterization": choice, "bias_center_min": 14,
                                  "correlated_biases": False})
    config = model._model_config()
    rng = np.random.default_rng(0)
    model.map_ = {
        "U": rng.normal(size=(ratings.n_users, 2)), "V": rng.normal(size=(ratings.n_items, 2)),
        "mu": np.asarray(3.0), "sigma": np.asarray(0.7),
        "user_bias": rng.normal(0, 0.3, ratings.n_users),
        "item_bias": rng.normal(0, 0.4, ratings.n_items),
    }
    pm_model = model.build_model(ratings)
    init = initial_point(model.map_, ratings, config)
    point = pm_model.initial_point()
    for name, value in init.items():
        var = pm_model.rvs_to_values[pm_model[name]]
        transform = pm_model.rvs_to_transforms.get(pm_model[name])
        point[var.name] = (
            transform.forward(pt.as_tensor_variable(np.asarray(value, dtype=float))).eval()
            if transform is not None
            else np.asarray(value)
        )
    outputs = pm_model.replace_rvs_by_values([pm_model["user_bias"], pm_model["item_bias"]])
    biases = pytensor.function(pm_model.value_vars, outputs, on_unused_input="ignore")(
        *[point[var.name] for var in pm_model.value_vars]
    )
    np.testing.assert_allclose(biases[0], model.map_["user_bias"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(biases[1], model.map_["item_bias"], rtol=1e-12, atol=1e-12)
    n_centred = (np.bincount(ratings.item_codes, minlength=ratings.n_items) >= 14).sum()
    names = set(pm_model.named_vars)
    if choice == "auto":
        assert 0 < n_centred < ratings.n_items  # the data make a real split
        assert pm_model["item_bias_c"].type.shape[0] in (n_centred, None)
        assert {"item_bias_c", "item_bias_z"} <= names
    elif choice == "centered":
        assert "item_bias_z" not in names and "item_bias_c" not in names
    else:
        assert "item_bias_z" in names and "item_bias_c" not in names


@pytest.mark.parametrize("biases", [True, False])
def test_fused_likelihood_matches_the_textbook_graph(data, biases):
    """The default fused likelihood (a Potential) and ``pm.Normal(observed=...)`` give the same
    log density and gradient at random points of the same parameter space."""
    train, _ = data
    ratings = BPMF(2)._start_fit(train)
    models = [
        BPMF(2, model_config={"biases": biases, "fused_likelihood": fused}).build_model(ratings)
        for fused in (True, False)
    ]
    names = [[v.name for v in m.value_vars] for m in models]
    assert names[0] == names[1]
    logps = [m.compile_logp() for m in models]
    dlogps = [m.compile_dlogp() for m in models]
    rng = np.random.default_rng(3)
    for _ in range(3):
        point = {
            name: rng.normal(0, 0.5, np.shape(value))
            for name, value in models[0].initial_point().items()
        }
        np.testing.assert_allclose(logps[0](point), logps[1](point), rtol=1e-10)
        np.testing.assert_allclose(dlogps[0](point), dlogps[1](point), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_unpack_lower_matches_pymc_packed_layout(n):
    """BPMF's matrix-product unpacking reads PyMC's packed Cholesky layout, value and gradient."""
    import pymc as pm

    from bpmf.models._graph import unpack_lower as _unpack_lower

    packed = pt.vector("packed")
    ours, theirs = _unpack_lower(packed, n), pm.expand_packed_triangular(n, packed, lower=True)
    weights = np.random.default_rng(n).normal(size=(n, n))
    fn = pytensor.function(
        [packed],
        [ours, theirs, pt.grad((ours * weights).sum(), packed),
         pt.grad((theirs * weights).sum(), packed)],
    )
    value = np.random.default_rng(0).normal(size=n * (n + 1) // 2)
    ours_v, theirs_v, ours_g, theirs_g = fn(value)
    np.testing.assert_array_equal(ours_v, theirs_v)
    np.testing.assert_array_equal(np.triu(ours_v, 1), 0.0)
    np.testing.assert_allclose(ours_g, theirs_g, rtol=0, atol=1e-14)
    np.testing.assert_allclose(ours_g, weights[np.tril_indices(n)], rtol=0, atol=1e-14)
