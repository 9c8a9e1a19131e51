"""The LKJ Cholesky factor's conditional (bpmf.kernels.lkj) and the NUTS kernel that samples it
(bpmf.kernels.nuts): gradients by finite differences, the log density against PyMC's
LKJCholeskyCov + MvNormal graph, and the kernel's draws against the LKJ prior's known
marginals."""

import numpy as np
import pymc as pm
import pytest
from scipy import stats

from bpmf.kernels.lkj import (
    lkj_conditional_logp_grad,
    lkj_relative_logp_grad,
    pack_cholesky,
    unpack_cholesky,
)
from bpmf.kernels.nuts import StepAdapter, laplace_chol_cov, nuts_transition

pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")

PACKED = "chol_cholesky-cov-packed__"  # PyMC's name of the transformed LKJCholeskyCov value


def _random_x(dim, rng, spread=0.5):
    """An unconstrained Cholesky factor: log diagonal and off-diagonal entries."""
    return rng.normal(0.0, spread, dim * (dim + 1) // 2)


def _random_base(dim, rng):
    base = np.tril(rng.normal(0.0, 0.3, (dim, dim)), -1)
    base[np.diag_indices(dim)] = np.exp(rng.normal(0.0, 0.3, dim))
    return base


def _rows(dim, n_rows, rng):
    factor = np.tril(rng.normal(0.0, 0.4, (dim, dim)), -1) + np.diag(rng.uniform(0.5, 1.5, dim))
    mean = rng.normal(0.0, 0.5, dim)
    rows = mean + rng.normal(size=(n_rows, dim)) @ factor.T
    return rows, mean


def _scatter(rows, mean):
    centred = rows - mean
    return centred.T @ centred


def _finite_difference(f, x, h=1e-6):
    grad = np.empty_like(x)
    for a in range(x.size):
        up, down = x.copy(), x.copy()
        up[a] += h
        down[a] -= h
        grad[a] = (f(up) - f(down)) / (2.0 * h)
    return grad


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_pack_and_unpack_are_inverse(dim):
    rng = np.random.default_rng(dim)
    x = _random_x(dim, rng)
    L = unpack_cholesky(x, dim)
    assert np.allclose(np.triu(L, 1), 0.0) and (np.diag(L) > 0).all()
    # PyMC's layout: row-major lower triangle (np.tril_indices), log of the diagonal
    packed = L[np.tril_indices(dim)].copy()
    diagonal = np.cumsum(np.arange(1, dim + 1)) - 1
    packed[diagonal] = np.log(packed[diagonal])
    np.testing.assert_allclose(packed, x, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(pack_cholesky(L), x, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
@pytest.mark.parametrize("n_rows", [0, 1, 25])
def test_conditional_gradient_matches_finite_differences(dim, n_rows):
    rng = np.random.default_rng(10 * dim + n_rows)
    if n_rows:
        rows, mean = _rows(dim, n_rows, rng)
        scatter = _scatter(rows, mean)
    else:
        scatter = np.zeros((dim, dim))
    eta, scale_sd = 1.5 + dim / 2, 0.8
    for _ in range(4):
        x = _random_x(dim, rng)
        logp, grad = lkj_conditional_logp_grad(x, scatter, float(n_rows), eta, scale_sd)
        assert np.isfinite(logp)
        numeric = _finite_difference(
            lambda y: lkj_conditional_logp_grad(y, scatter, float(n_rows), eta, scale_sd)[0], x
        )
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_relative_gradient_matches_finite_differences(dim):
    rng = np.random.default_rng(dim)
    rows, mean = _rows(dim, 30, rng)
    scatter = _scatter(rows, mean)
    for _ in range(4):
        base = _random_base(dim, rng)
        x = _random_x(dim, rng, spread=0.3)
        logp, grad = lkj_relative_logp_grad(x, base, scatter, 30.0, 2.0, 1.0)
        numeric = _finite_difference(
            lambda y, base=base: lkj_relative_logp_grad(y, base, scatter, 30.0, 2.0, 1.0)[0], x
        )
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
def test_relative_density_is_the_conditional_up_to_a_constant(dim):
    """``L = base @ T`` has a constant Jacobian: the relative log density in T's coordinates
    differs from the conditional at pack(base @ T) by the same constant at every point."""
    rng = np.random.default_rng(dim)
    rows, mean = _rows(dim, 20, rng)
    scatter = _scatter(rows, mean)
    base = _random_base(dim, rng)
    gaps = []
    for _ in range(6):
        x_t = _random_x(dim, rng, spread=0.3)
        L = base @ unpack_cholesky(x_t, dim)
        relative = lkj_relative_logp_grad(x_t, base, scatter, 20.0, 2.0, 1.0)[0]
        direct = lkj_conditional_logp_grad(pack_cholesky(L), scatter, 20.0, 2.0, 1.0)[0]
        gaps.append(relative - direct)
    np.testing.assert_allclose(gaps, gaps[0], rtol=0, atol=1e-9)


def _pymc_logp(dim, eta, scale_sd, rows=None, mean=None):
    """PyMC's log density (with the transform's Jacobian) of the packed transformed value."""
    with pm.Model() as model:
        packed = pm.LKJCholeskyCov(
            "chol",
            n=dim,
            eta=eta,
            sd_dist=pm.HalfNormal.dist(scale_sd, shape=dim),
            compute_corr=False,
        )
        if rows is not None:
            L = pm.expand_packed_triangular(dim, packed, lower=True)
            pm.MvNormal("rows", mu=mean, chol=L, observed=rows)
    assert [v.name for v in model.value_vars] == [PACKED]
    logp = model.compile_logp()
    return lambda x: float(logp({PACKED: x}))


@pytest.mark.parametrize(
    "dim, n_rows, eta, scale_sd",
    [(2, 15, 2.0, 1.0), (3, 40, 1.0, 0.5), (4, 0, 2.0, 1.0), (4, 7, 3.5, 2.0)],
)
def test_conditional_density_matches_pymc(dim, n_rows, eta, scale_sd):
    """The kernel's density is PyMC's LKJCholeskyCov(eta, HalfNormal(scale_sd)) prior plus
    the rows' MvNormal log density, on PyMC's unconstrained value, up to one constant."""
    rng = np.random.default_rng(dim + n_rows)
    if n_rows:
        rows, mean = _rows(dim, n_rows, rng)
        scatter = _scatter(rows, mean)
        reference = _pymc_logp(dim, eta, scale_sd, rows, mean)
    else:
        scatter = np.zeros((dim, dim))
        reference = _pymc_logp(dim, eta, scale_sd)
    gaps = []
    for _ in range(8):
        x = _random_x(dim, rng, spread=0.6)
        ours = lkj_conditional_logp_grad(x, scatter, float(n_rows), eta, scale_sd)[0]
        gaps.append(ours - reference(x))
    np.testing.assert_allclose(gaps, gaps[0], rtol=0, atol=1e-8)


def test_singular_factor_has_zero_density():
    x = np.array([-400.0, 0.1, 0.0])  # L_00 = exp(-400): below the kernel's floor
    logp, grad = lkj_conditional_logp_grad(x, np.eye(2), 3.0, 2.0, 1.0)
    assert logp == -np.inf and np.all(np.isfinite(grad))


# ---------------------------------------------------------------------- the NUTS kernel
def _nuts_chain(
    dim, eta, scale_sd, n_tune, n_draws, seed, scatter=None, n_rows=0.0, depth=8, target_accept=0.9
):
    """A chain of the kernel's NUTS transitions with the StepAdapter warm-up, as in
    LKJHyperpriors.factor_step; returns the draws of x and the number of divergences after
    the warm-up."""
    rng = np.random.default_rng(seed)
    size = dim * (dim + 1) // 2
    scatter = np.zeros((dim, dim)) if scatter is None else scatter
    args = (np.eye(dim), scatter, float(n_rows), eta, scale_sd)
    x = pack_cholesky(0.8 * scale_sd * np.eye(dim))
    chol_cov = laplace_chol_cov(x, *args)
    adapter = StepAdapter(np.eye(size) if chol_cov is None else chol_cov, n_tune, target_accept)
    draws = np.empty((n_draws, size))
    divergences = 0
    for i in range(n_tune + n_draws):
        z = rng.standard_normal(size)
        u = rng.random(3 * depth)
        x, accept, _, diverging = nuts_transition(
            x, adapter.chol_cov, *args, adapter.step_size, depth, z, u
        )
        adapter.update(
            accept, lambda point: laplace_chol_cov(point, *args), x,
            lkj_relative_logp_grad(x, *args)[0],
        )
        if i >= n_tune:
            draws[i - n_tune] = x
            divergences += bool(diverging)
    return draws, divergences


def _sds_and_correlations(draws, dim):
    L = np.array([unpack_cholesky(x, dim) for x in draws])
    cov = L @ np.swapaxes(L, 1, 2)
    sd = np.sqrt(np.einsum("nkk->nk", cov))
    corr = cov / sd[:, :, None] / sd[:, None, :]
    return sd, corr


@pytest.mark.slow
@pytest.mark.parametrize("dim", [3, 4])
def test_nuts_kernel_samples_the_lkj_prior(dim):
    """With the likelihood off (scatter 0, no rows) the kernel's chain must have the prior's
    marginals: each correlation ~ 2 Beta(b, b) - 1 with b = eta - 1 + D / 2, each standard
    deviation ~ HalfNormal(scale_sd). KS tests on 1,000 draws thinned by 20 (the slowest
    marginal, a standard deviation, has an autocorrelation time of ~15 transitions here)."""
    eta, scale_sd, thin, n_keep = 2.0, 1.0, 20, 1000
    draws, divergences = _nuts_chain(dim, eta, scale_sd, 1000, thin * n_keep, seed=dim)
    assert divergences <= 0.01 * thin * n_keep, divergences
    sd, corr = _sds_and_correlations(draws[::thin], dim)
    b = eta - 1.0 + dim / 2.0
    marginal = stats.beta(b, b, loc=-1.0, scale=2.0)
    p_values = {}
    for i in range(dim):
        for j in range(i):
            p_values[f"corr[{i},{j}]"] = stats.kstest(corr[:, i, j], marginal.cdf).pvalue
        p_values[f"sd[{i}]"] = stats.kstest(sd[:, i], stats.halfnorm(scale=scale_sd).cdf).pvalue
    # one test of the family: 1% overall (Bonferroni), not 1% for each of the D (D + 1) / 2
    # marginals, which a correct sampler would fail about once in ten runs at D = 4
    failed = {name: round(p, 4) for name, p in p_values.items() if p <= 0.01 / len(p_values)}
    assert not failed, failed


@pytest.mark.slow
def test_nuts_kernel_samples_a_data_informed_conditional():
    """With rows (the situation of a Gibbs sweep) the kernel's draws of Sigma = L L^T match
    PyMC's NUTS on the same LKJCholeskyCov + MvNormal model: means within 4 combined MCSEs."""
    import arviz as az
    import xarray as xr

    dim, n_rows, eta, scale_sd = 3, 12, 2.0, 1.0
    rows, mean = _rows(dim, n_rows, np.random.default_rng(7))
    scatter = _scatter(rows, mean)
    draws, divergences = _nuts_chain(dim, eta, scale_sd, 1000, 8000, 7, scatter, n_rows)
    assert divergences <= 40, divergences
    L = np.array([unpack_cholesky(x, dim) for x in draws])
    ours = (L @ np.swapaxes(L, 1, 2))[:, np.tril_indices(dim)[0], np.tril_indices(dim)[1]]
    with pm.Model():
        packed = pm.LKJCholeskyCov(
            "chol",
            n=dim,
            eta=eta,
            sd_dist=pm.HalfNormal.dist(scale_sd, shape=dim),
            compute_corr=False,
        )
        chol = pm.expand_packed_triangular(dim, packed, lower=True)
        pm.MvNormal("rows", mu=mean, chol=chol, observed=rows)
        tree = pm.sample(
            draws=2000,
            tune=1000,
            chains=4,
            random_seed=7,
            progressbar=False,
            nuts_sampler="nutpie" if _has_nutpie() else "pymc",
            compute_convergence_checks=False,
        )
    packed_draws = tree["posterior"]["chol"].values.reshape(-1, dim * (dim + 1) // 2)
    L_ref = np.zeros((len(packed_draws), dim, dim))
    L_ref[:, *np.tril_indices(dim)] = packed_draws
    theirs = (L_ref @ np.swapaxes(L_ref, 1, 2))[:, *np.tril_indices(dim)]

    def mcse(values, chains):
        shaped = values.reshape(chains, -1, values.shape[1])
        data = xr.Dataset({"v": (("chain", "draw", "k"), shaped)})
        return az.mcse(data)["v"].values

    z = (ours.mean(0) - theirs.mean(0)) / np.sqrt(mcse(ours, 1) ** 2 + mcse(theirs, 4) ** 2)
    assert np.abs(z).max() < 4, z


def _has_nutpie():
    import importlib.util

    return importlib.util.find_spec("nutpie") is not None


@pytest.mark.parametrize("dim", [1, 3, 11])
def test_relative_coordinates_round_trip_against_numpy(dim):
    from bpmf.kernels.lkj import pack_cholesky, relative_cholesky, relative_coordinates

    rng = np.random.default_rng(dim)
    base, L = (np.tril(rng.normal(size=(dim, dim))) for _ in range(2))
    for M in (base, L):
        np.fill_diagonal(M, np.abs(np.diag(M)) + 0.5)
    x = relative_coordinates(base, L)
    np.testing.assert_allclose(x, pack_cholesky(np.linalg.solve(base, L)), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(relative_cholesky(base, x), L, rtol=1e-12, atol=1e-12)


def test_covariance_base_is_the_sample_covariances_factor_or_the_identity():
    from bpmf.kernels.dense import covariance_base

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, 3))
    scatter = rows.T @ rows
    np.testing.assert_allclose(covariance_base(scatter, 50.0), np.linalg.cholesky(scatter / 50),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(covariance_base(scatter, 3.0), np.eye(3))  # too few rows
    flat = np.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])  # rows on a line: singular
    np.testing.assert_array_equal(covariance_base(flat, 50.0), np.eye(3))
