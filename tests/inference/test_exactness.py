"""Statistical evidence that LKJ-Gibbs samples the BPMF posterior exactly.

- Agreement: on one small synthetic problem, LKJ-Gibbs and joint NUTS (nutpie), two samplers
  with nothing in common but the model, give the same posterior means and standard
  deviations of the identified scalars and of 200 held-out expected ratings, within their
  Monte Carlo standard errors.
- Simulation-based calibration (Talts et al., 2018): parameters drawn from the LKJ model's
  prior, ratings simulated from them, LKJ-Gibbs run on each data set; the rank of the true
  value among the posterior draws is uniform when the sampler is exact.
"""

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from bpmf.inference.gibbs import sample_gibbs
from bpmf.inference.noise_weights import DF_GRID
from bpmf.models import BPMF

pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")

SCALARS = ("sigma", "mu", "user_bias_sd", "item_bias_sd")


# ---------------------------------------------------------------------- Gibbs vs NUTS
def _heldout_pairs(ratings, n_pairs, rng):
    frame = ratings.to_frame()
    seen = set(zip(frame["user"], frame["item"], strict=True))
    pairs = []
    while len(pairs) < n_pairs:
        pair = (int(rng.integers(ratings.n_users)), int(rng.integers(ratings.n_items)))
        if pair not in seen and pair not in pairs:
            pairs.append(pair)
    return pd.DataFrame(pairs, columns=["user", "item"])


def _summaries(model, pairs):
    """Means, sds and their MCSEs (arviz) of the scalars and the held-out predictions."""
    post = model.idata_["posterior"].ds
    ds = xr.Dataset({name: (("chain", "draw"), post[name].values) for name in SCALARS})
    expected = model.predict_posterior(pairs, kind="expected", on_unseen="ignore")
    ds["pred"] = (("chain", "draw", "pair"), expected.values)
    # the MCSE of a mean: ArviZ's, or the spread of the chain means when that is larger. A
    # joint NUTS fit here gave one prediction chain means 4.150, 4.231, 4.189, 4.197 (sd
    # 0.033) with an ArviZ MCSE of 0.009 (bulk ESS 2,654 of 2,000 draws), which would imply
    # an sd of the chain means of 0.018
    between = ds.mean("draw").std("chain", ddof=1) / np.sqrt(ds.sizes["chain"])
    return {
        "mean": ds.mean(("chain", "draw")),
        "mcse_mean": np.maximum(az.mcse(ds), between),
        "sd": ds.std(("chain", "draw")),
        "mcse_sd": az.mcse(ds, method="sd"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("correlated_biases", [False, True])
def test_lkj_gibbs_and_joint_nuts_agree(small_synthetic, correlated_biases):
    pytest.importorskip("nutpie")
    ratings, _ = small_synthetic  # 60 x 40, D = 2, ~720 ratings
    pairs = _heldout_pairs(ratings, 200, np.random.default_rng(1))
    samplers = {
        "gibbs": {"draws": 1000, "tune": 300, "chains": 4, "cores": 2},
        "nuts": {"draws": 500, "tune": 500, "chains": 4, "cores": 2},
    }
    summaries = {}
    for method, sampler_config in samplers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = BPMF(
                2, method=method, sampler_config=sampler_config, random_state=3,
                progressbar=False, model_config={"correlated_biases": correlated_biases},
            ).fit(ratings)
        if method == "nuts":
            assert model.diagnostics_["divergences"] <= 0.01 * 4 * 500
        summaries[method] = _summaries(model, pairs)
    a, b = summaries["gibbs"], summaries["nuts"]
    z_mean = (a["mean"] - b["mean"]) / np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    z_sd = (a["sd"] - b["sd"]) / np.sqrt(a["mcse_sd"] ** 2 + b["mcse_sd"] ** 2)
    report = {
        name: (
            round(float(a["mean"][name]), 4),
            round(float(b["mean"][name]), 4),
            round(float(z_mean[name]), 2),
            round(float(z_sd[name]), 2),
        )
        for name in SCALARS
    }
    for name in SCALARS:
        assert abs(float(z_mean[name])) < 4, (name, report)
        assert abs(float(z_sd[name])) < 4, (name, report)
    # 200 predictions: the largest of 200 |z| of an exact pair of samplers exceeds 4 with
    # probability ~1%
    z_pred = z_mean["pred"].values
    assert np.abs(z_pred).max() < 4, (np.abs(z_pred).max(), np.sort(np.abs(z_pred))[-5:])
    # no systematic shift of the predictions either: their mean z is ~N(0, 1 / 200)-ish
    # (correlated, so a loose bound)
    assert abs(z_pred.mean()) < 1.0, z_pred.mean()
    z_pred_sd = z_sd["pred"].values
    assert np.abs(z_pred_sd).max() < 4.5, np.sort(np.abs(z_pred_sd))[-5:]


# ---------------------------------------------------------------------- SBC
N_USERS, N_ITEMS, D = 30, 20, 2
# tighter scale priors than the defaults; _draw_from_prior simulates both bias priors
SBC_PRIORS = {"factor_scale_sd": 0.5, "bias_scale_sd": 0.5, "sigma_sd": 0.5,
              "correlated_biases": False}


def _lkj_correlation_chol(eta, dim, rng):
    """The Cholesky factor of an LKJ(eta) correlation matrix of size 2 or 3, by the C-vine
    (Lewandowski, Kurowicka & Joe 2009): partial correlations 2 Beta(b, b) - 1 with
    b = eta + (dim - 1 - k) / 2 at level k = 1, 2."""
    b1 = eta + (dim - 2) / 2.0
    p12, p13 = (2.0 * rng.beta(b1, b1) - 1.0 for _ in range(2))
    if dim == 2:
        return np.array([[1.0, 0.0], [p12, np.sqrt(1.0 - p12 * p12)]])
    p23 = 2.0 * rng.beta(eta, eta) - 1.0  # given the first variable
    r23 = p23 * np.sqrt((1.0 - p12**2) * (1.0 - p13**2)) + p12 * p13
    R = np.array([[1.0, p12, p13], [p12, 1.0, r23], [p13, r23, 1.0]])
    return np.linalg.cholesky(R)


def _draw_from_prior(config, rng):
    """One draw of every parameter of the LKJ model (numpy, the model's Notes)."""
    truth = {"mu": rng.normal(0.0, config["mu_sd"])}
    if config["correlated_biases"]:  # (U_i, b_i) ~ N(0, Sigma') of size D + 1
        for side, bias, n in (("U", "user_bias", N_USERS), ("V", "item_bias", N_ITEMS)):
            corr_chol = _lkj_correlation_chol(config["lkj_eta"], D + 1, rng)
            scales = np.abs(rng.normal(0.0, 1.0, D + 1)) * np.append(
                np.full(D, config["factor_scale_sd"]), config["bias_scale_sd"])
            rows = rng.standard_normal((n, D + 1)) @ (scales[:, None] * corr_chol).T
            truth[side], truth[bias] = rows[:, :D], rows[:, D]
        truth["sigma"] = abs(rng.normal(0.0, config["sigma_sd"]))
        return truth
    b = config["lkj_eta"] - 1.0 + D / 2.0  # D = 2: the correlation is 2 Beta(b, b) - 1
    for side, n in (("U", N_USERS), ("V", N_ITEMS)):
        r = 2.0 * rng.beta(b, b) - 1.0
        corr_chol = np.array([[1.0, 0.0], [r, np.sqrt(1.0 - r * r)]])
        scales = np.abs(rng.normal(0.0, config["factor_scale_sd"], D))
        mean = rng.normal(0.0, config["factor_mean_sd"], D) if config["factor_means"] else 0.0
        truth[side] = mean + rng.standard_normal((n, D)) @ (scales[:, None] * corr_chol).T
    for name, n in (("user_bias", N_USERS), ("item_bias", N_ITEMS)):
        truth[f"{name}_sd"] = abs(rng.normal(0.0, config["bias_scale_sd"]))
        truth[name] = rng.normal(0.0, truth[f"{name}_sd"], n)
    truth["sigma"] = abs(rng.normal(0.0, config["sigma_sd"]))
    return truth


def _expected(p, users, items):
    return (
        p["mu"]
        + p["user_bias"][..., users]
        + p["item_bias"][..., items]
        + np.einsum("...nk,...nk->...n", p["U"][..., users, :], p["V"][..., items, :])
    )


def _sbc_ranks(config, n_replications, draws, thin, tune, seed, noise_weights=False):
    rng = np.random.default_rng(seed)
    cells = rng.choice(N_USERS * N_ITEMS, N_USERS * N_ITEMS // 2, replace=False)
    users, items = cells // N_ITEMS, cells % N_ITEMS
    # one held-out pair whose expected rating is ranked
    pair_user, pair_item = np.array([0]), np.array([N_ITEMS - 1])
    ranks = {"sigma": [], "prediction": []}
    if noise_weights:  # and one user's and one item's noise weight
        ranks.update({"user_noise_weight": [], "item_noise_weight": []})
    for replication in range(n_replications):
        truth = _draw_from_prior(config, rng)
        noise = truth["sigma"] * rng.standard_normal(users.size)
        if noise_weights:  # a_u, c_i ~ Gamma(nu/2, nu/2), nu uniform on the grid
            for name, n in (("user_noise_weight", N_USERS), ("item_noise_weight", N_ITEMS)):
                nu = rng.choice(DF_GRID)
                truth[name] = rng.gamma(nu / 2, 2 / nu, n)
            noise /= np.sqrt(truth["user_noise_weight"][users] * truth["item_noise_weight"][items])
        ratings = _expected(truth, users, items) + noise
        out = sample_gibbs(
            users,
            items,
            ratings,
            N_USERS,
            N_ITEMS,
            n_factors=D,
            draws=draws,
            tune=tune,
            chains=1,
            biases=True,
            covariance_prior="lkj",
            model_config=config,
            random_state=replication,
            progressbar=False,
            cores=1,
            threads=1,  # 30 rows: numba's parallel rows cost more than they save
            # the package's overrelaxation of the rows and of the noise precision
            overrelax=BPMF.default_sampler_config["overrelax"],
            noise_overrelax=BPMF.default_sampler_config["noise_overrelax"],
            noise_weights=noise_weights,
        )
        post = {name: value[0, ::thin] for name, value in out.items()}
        ranks["sigma"].append(int((post["sigma"] < truth["sigma"]).sum()))
        for name in ("user_noise_weight", "item_noise_weight"):
            if name in ranks:
                ranks[name].append(int((post[name][:, 0] < truth[name][0]).sum()))
        predicted = _expected(post, pair_user, pair_item)[:, 0]
        ranks["prediction"].append(int((predicted < _expected(truth, pair_user, pair_item)).sum()))
    return {name: np.array(value) for name, value in ranks.items()}


def _uniformity_p_value(ranks, n_draws, n_bins=10):
    """Chi-square test of the rank histogram (ranks 0..n_draws, n_bins equal bins)."""
    counts = np.bincount(ranks * n_bins // (n_draws + 1), minlength=n_bins)
    return stats.chisquare(counts).pvalue, counts


@pytest.mark.slow
@pytest.mark.parametrize("correlated_biases", [False, True])
def test_simulation_based_calibration(correlated_biases):
    """SBC of LKJ-Gibbs with the LKJ model of either bias prior (biases, factor means fixed at
    zero, tighter scale priors): 150 replications of a 30 x 20, D = 2 problem (10 ratings
    per user), one chain of 100 draws (every 8th of 800, after 200 warm-up sweeps, the first
    third of them conjugate); the ranks of the true sigma and of the true expected rating of
    one unobserved pair must be uniform (chi-square over 10 bins, 1% level). Shorter chains
    (every 4th of 400 after 100) gave U-shaped histograms (p 0.05-0.07): chains not yet
    mixed, not a wrong target.

    The intercept's prior is centred on the training mean, a function of the data; the
    simulation centres it on 0 instead. Neither sigma nor any expected rating changes along
    the only direction that prior decides alone ((mu + d, b - d)), so the ranked quantities
    do not feel the difference.
    """
    priors = {**SBC_PRIORS, "correlated_biases": correlated_biases}
    config = BPMF(D, model_config=priors)._model_config()
    draws, thin = 800, 8
    ranks = _sbc_ranks(config, n_replications=150, draws=draws, thin=thin, tune=200, seed=2)
    results = {name: _uniformity_p_value(r, draws // thin) for name, r in ranks.items()}
    for name, (p_value, counts) in results.items():
        assert p_value > 0.01, (name, p_value, counts.tolist())


@pytest.mark.slow
def test_simulation_based_calibration_with_noise_weights():
    """SBC of the model with per-user and per-item noise weights (the LKJ model with
    independent biases as above; weights Gamma(nu/2, nu/2) with nu uniform on the sampler's
    grid, and the noise of rating (u, i) sigma / sqrt(a_u c_i)): 120 replications, the same
    problem and chains; the ranks of the true sigma, of one user's and one item's weight and
    of one unobserved pair's expected rating must be uniform (chi-square, 1% level)."""
    config = BPMF(D, model_config=SBC_PRIORS)._model_config()
    draws, thin = 800, 8
    ranks = _sbc_ranks(config, n_replications=120, draws=draws, thin=thin, tune=200, seed=5,
                       noise_weights=True)
    results = {name: _uniformity_p_value(r, draws // thin) for name, r in ranks.items()}
    for name, (p_value, counts) in results.items():
        assert p_value > 0.01, (name, p_value, counts.tolist())
