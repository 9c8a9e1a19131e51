"""BPMF with day-specific user biases: recovery on data simulated from the model, predictions
with and without times, persistence and the errors of unsupported combinations."""

import warnings

import numpy as np
import pandas as pd
import pytest

from bpmf import DataError
from bpmf.models import BPMF

SAMPLER = {"draws": 200, "tune": 100, "chains": 2}
DAY = 86_400.0


def simulate(day_sd=0.5, n_users=200, n_items=120, n_factors=2, density=0.2, seed=0):
    """Ratings ``mu + b_u + c_i + U_u . V_i + d_(u, day) + N(0, 0.4^2)``, each user rating on
    one to four days; the ratings with their times and the true day bias of each (``truth``)."""
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    n_days = rng.integers(1, 5, n_users)
    day = rng.integers(0, n_days[users])  # the user's k-th day
    first = rng.integers(10_000, 10_200, n_users)
    times = DAY * (first[users] + 3 * day) + rng.uniform(0, DAY - 1, len(users))
    day_bias = day_sd * rng.standard_normal((n_users, 4))
    U = 0.7 * rng.standard_normal((n_users, n_factors))
    V = 0.7 * rng.standard_normal((n_items, n_factors))
    truth = day_bias[users, day]
    values = (3.0 + 0.3 * rng.standard_normal(n_users)[users]
              + 0.3 * rng.standard_normal(n_items)[items]
              + np.einsum("nk,nk->n", U[users], V[items]) + truth
              + 0.4 * rng.standard_normal(len(users)))
    return pd.DataFrame({"user": users, "item": items, "rating": values, "time": times,
                         "truth": truth})


def fit(frame, seed=1, sampler=None, **config):
    return BPMF(2, model_config={"user_day_bias": True, **config},
                sampler_config={**SAMPLER, **(sampler or {})}, random_state=seed,
                progressbar=False).fit(frame)


@pytest.fixture(scope="module")
def data():
    frame = simulate()
    test = np.random.default_rng(5).random(len(frame)) < 0.2
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(data):
    return fit(data[0])


def test_recovers_the_day_scale_and_the_day_biases(model, data):
    train = data[0]
    post = model.idata_["posterior"].ds
    sd = post["day_bias_sd"].values.ravel()
    assert abs(sd.mean() - 0.5) < 4 * sd.std(), (sd.mean(), sd.std())
    # each training rating's day bias: the posterior mean tracks the truth
    days = model._pair_days(train, model.user_index_.get_indexer(train["user"]))
    assert (days >= 0).all()
    estimate = post["day_bias"].values.reshape(-1, post.sizes["user_day"]).mean(0)[days]
    assert np.corrcoef(estimate, train["truth"])[0, 1] > 0.8


def test_day_biases_improve_held_out_predictions_on_known_days(model, data):
    train, test = data
    plain = BPMF(2, sampler_config=SAMPLER, random_state=1, progressbar=False).fit(
        train.drop(columns="time"))
    rmse = lambda pred: float(np.sqrt(np.mean((test["rating"] - pred) ** 2)))  # noqa: E731
    assert rmse(model.predict(test, clip=False)) < rmse(plain.predict(test, clip=False)) - 0.05


def test_pairs_without_times_are_predicted_at_an_unseen_day(model, data):
    test = data[1]
    with_days = model.predict(test, clip=False)
    without = model.predict(test.drop(columns="time"), clip=False)
    later = model.predict(test.assign(time=test["time"] + 1000 * DAY), clip=False)
    np.testing.assert_allclose(without, later)  # an unseen day: the day bias's prior mean
    post = model.idata_["posterior"].ds
    days = model._pair_days(test, model.user_index_.get_indexer(test["user"]))
    means = post["day_bias"].values.reshape(-1, post.sizes["user_day"]).mean(0)
    np.testing.assert_allclose(with_days - without, np.where(days >= 0, means[days], 0.0),
                               atol=1e-10)
    # the interval of an unseen day carries the day bias's prior variance
    known = model.predict_interval(test, random_state=0)
    unknown = model.predict_interval(test.drop(columns="time"), random_state=0)
    assert ((unknown["upper"] - unknown["lower"]).mean()
            > (known["upper"] - known["lower"]).mean() + 0.1)
    # two independent prior draws of an unseen day's bias differ by sd * sqrt(2)
    unseen = test.drop(columns="time")
    first, second = (model.predict_posterior(unseen, kind="expected", random_state=seed)
                     for seed in (0, 1))
    sd = post["day_bias_sd"].values.reshape(-1, 1, 1)
    assert abs((first - second).values.var() / (2 * np.mean(sd**2)) - 1) < 0.05


def test_save_and_load_keep_the_day_biases(model, data, tmp_path):
    test = data[1]
    path = tmp_path / "model.nc"
    model.save(path)
    loaded = BPMF.load(path)
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    np.testing.assert_array_equal(loaded.predict_interval(test), model.predict_interval(test))
    assert loaded.idata_["posterior"]["user_day_day"].dtype.kind == "i"


def test_moments_fit_runs_the_same_chain(data):
    train = data[0]
    every = fit(train, seed=3, sampler={"draws": 30, "tune": 20})
    moments = fit(train, seed=3, sampler={"draws": 30, "tune": 20, "keep": "moments",
                                          "factor_draws": 5})
    np.testing.assert_array_equal(moments.idata_["trace"]["day_bias_sd"].values,
                                  every.idata_["posterior"]["day_bias_sd"].values)
    # the day biases are kept as the rows are: running moments and the retained draws
    all_draws = every.idata_["posterior"]["day_bias"].values
    np.testing.assert_allclose(moments.idata_["posterior_moments"]["day_bias_mean"].values,
                               all_draws.mean(1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(moments.idata_["posterior_moments"]["day_bias_var"].values,
                               all_draws.var(1), rtol=0, atol=1e-12)
    kept = moments.idata_["posterior"]["day_bias"].values
    assert kept.shape[1] == 5
    assert all(any(np.array_equal(kept[0, k], all_draws[0, d]) for d in range(30))
               for k in range(5))


def test_unsupported_combinations_fail_with_one_line(data):
    train = data[0]
    with pytest.raises(DataError, match="needs the time of each rating"):
        fit(train.drop(columns="time"))
    with pytest.raises(ValueError, match="likelihood='gaussian'"):
        BPMF(2, model_config={"user_day_bias": True, "likelihood": "ordinal"}).fit(train)
    with pytest.raises(ValueError, match="True or False"):
        BPMF(2, model_config={"user_day_bias": "yes"}).fit(train)


def test_fold_in_adds_new_users_with_their_days(data):
    train, test = data
    held = np.arange(20)  # users left out of the fit, then folded in with their ratings
    model = fit(train[~train["user"].isin(held)], seed=2)
    given = train[train["user"].isin(held)]
    pairs = test[test["user"].isin(held)]
    folded = model.fold_in(given)
    post = folded.idata_["posterior"]
    n_new_groups = len(given.groupby(["user", given["time"] // DAY]))
    old_groups = model.idata_["posterior"].sizes["user_day"]
    assert post.sizes["user_day"] == old_groups + n_new_groups
    assert set(post["user_day_user"].values[old_groups:]) == set(held)
    rmse = lambda pred: float(np.sqrt(np.mean((pairs["rating"] - pred) ** 2)))  # noqa: E731
    population = model.predict(pairs, clip=False, on_unseen="ignore")
    assert rmse(folded.predict(pairs, clip=False)) < rmse(population) - 0.2
    # the held-out ratings on the users' given days see those days' biases
    days = folded._pair_days(pairs, folded.user_index_.get_indexer(pairs["user"]))
    assert (days >= old_groups).mean() > 0.9
    without = folded.predict(pairs.drop(columns="time"), clip=False)
    assert np.max(np.abs(folded.predict(pairs, clip=False) - without)) > 0.1
    with pytest.raises(ValueError, match="new users only"):
        model.fold_in(given.assign(item=given["item"] + 10_000))
    with pytest.raises(DataError, match="time of each new rating"):
        model.fold_in(given.drop(columns="time"))


@pytest.mark.slow
def test_gibbs_and_joint_nuts_agree_on_the_day_biases():
    """The day-bias model under the Gibbs sampler and under joint NUTS (nutpie): posterior
    means and sds of the scalars and of 100 training pairs' expected ratings (known days)
    agree within 4 Monte Carlo standard errors."""
    pytest.importorskip("nutpie")
    import arviz as az
    import xarray as xr

    frame = simulate(n_users=60, n_items=40, density=0.3, seed=1)
    pairs = frame.sample(100, random_state=2)[["user", "item", "time"]]
    samplers = {
        "gibbs": {"draws": 1000, "tune": 300, "chains": 4, "cores": 2},
        "nuts": {"draws": 500, "tune": 500, "chains": 4, "cores": 2},
    }
    summaries = {}
    for method, sampler_config in samplers.items():
        model = BPMF(2, method=method, model_config={"user_day_bias": True},
                     sampler_config=sampler_config, random_state=3, progressbar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # slow-mixing bias scales on this small problem
            model.fit(frame)
        if method == "nuts":
            assert model.diagnostics_["divergences"] <= 0.01 * 4 * 500
        post = model.idata_["posterior"].ds
        ds = xr.Dataset({name: (("chain", "draw"), post[name].values)
                         for name in ("mu", "sigma", "day_bias_sd")})
        ds["pred"] = model.predict_posterior(pairs, kind="expected").rename("pred")
        ds = ds.drop_vars(["user", "item"], errors="ignore")
        between = ds.mean("draw").std("chain", ddof=1) / np.sqrt(ds.sizes["chain"])
        summaries[method] = (ds.mean(("chain", "draw")), np.maximum(az.mcse(ds), between),
                             ds.std(("chain", "draw")), az.mcse(ds, method="sd"))
    (m_a, e_a, s_a, es_a), (m_b, e_b, s_b, es_b) = summaries["gibbs"], summaries["nuts"]
    z_mean = (m_a - m_b) / np.sqrt(e_a**2 + e_b**2)
    z_sd = (s_a - s_b) / np.sqrt(es_a**2 + es_b**2)
    for name in ("mu", "sigma", "day_bias_sd"):
        assert abs(float(z_mean[name])) < 4, (name, float(m_a[name]), float(m_b[name]))
        assert abs(float(z_sd[name])) < 4, (name, float(s_a[name]), float(s_b[name]))
    assert np.abs(z_mean["pred"].values).max() < 4, np.sort(np.abs(z_mean["pred"].values))[-5:]
    assert np.abs(z_sd["pred"].values).max() < 4.5, np.sort(np.abs(z_sd["pred"].values))[-5:]

