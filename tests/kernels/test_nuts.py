"""The compiled NUTS transition of the LKJ block (bpmf.kernels.nuts): invariance of the exact
prior under the kernel, reproducibility from its random numbers, tree-size limits, the
Laplace metric and the step-size warm-up."""

import numpy as np
import pymc as pm
import pytest
from scipy import stats

from bpmf.kernels.lkj import lkj_relative_logp_grad, pack_cholesky, unpack_cholesky
from bpmf.kernels.nuts import StepAdapter, laplace_chol_cov, nuts_transition

pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")


def _prior_cholesky_draws(dim, eta, scale_sd, n, seed):
    """Exact independent draws of L ~ LKJCholeskyCov(eta, HalfNormal(scale_sd)) (PyMC's
    forward sampler)."""
    dist = pm.LKJCholeskyCov.dist(
        n=dim, eta=eta, sd_dist=pm.HalfNormal.dist(scale_sd, shape=dim), compute_corr=False
    )
    packed = pm.draw(dist, draws=n, random_seed=seed)
    L = np.zeros((n, dim, dim))
    L[:, *np.tril_indices(dim)] = packed
    return L


def _sds_and_correlations(L):
    cov = L @ np.swapaxes(L, 1, 2)
    sd = np.sqrt(np.einsum("nkk->nk", cov))
    return sd, cov / sd[:, :, None] / sd[:, None, :]


@pytest.mark.parametrize("relative", [False, True], ids=["identity-base", "general-base"])
def test_kernel_leaves_the_exact_prior_invariant(relative):
    """Start 2,000 independent chains at exact draws of the LKJ prior (likelihood off), apply
    three NUTS transitions to each with a fixed metric and step size: an exact kernel leaves
    the distribution unchanged, so the end points must still have the prior's marginals (KS,
    p > 0.01), while they have moved away from their starts. No autocorrelation is involved:
    the chains are independent. With ``relative`` the kernel works in the coordinates of
    ``T = base^-1 L`` for a fixed non-trivial ``base``."""
    dim, eta, scale_sd, n_chains = 3, 2.0, 1.0, 2000
    rng = np.random.default_rng(11)
    start = _prior_cholesky_draws(dim, eta, scale_sd, n_chains, seed=11)
    size = dim * (dim + 1) // 2
    base = np.eye(dim)
    if relative:
        base = np.tril(rng.normal(0.0, 0.3, (dim, dim)), -1) + np.diag([0.7, 1.3, 1.1])
    args = (base, np.zeros((dim, dim)), 0.0, eta, scale_sd)
    chol_cov = 0.7 * np.eye(size)
    step_size, depth = 0.25, 6
    end = np.empty_like(start)
    moved = 0
    for c in range(n_chains):
        x = pack_cholesky(np.linalg.solve(base, start[c]))
        x0 = x.copy()
        for _ in range(3):
            x = nuts_transition(
                x,
                chol_cov,
                *args,
                step_size,
                depth,
                rng.standard_normal(size),
                rng.random(3 * depth),
            )[0]
        moved += not np.allclose(x, x0)
        end[c] = base @ unpack_cholesky(x, dim)
    assert moved > 0.6 * n_chains, moved
    sd, corr = _sds_and_correlations(end)
    b = eta - 1.0 + dim / 2.0
    p_values = {}
    for i in range(dim):
        p_values[f"sd[{i}]"] = stats.kstest(sd[:, i], stats.halfnorm(scale=scale_sd).cdf).pvalue
        for j in range(i):
            corr_marginal = stats.beta(b, b, loc=-1.0, scale=2.0).cdf
            p_values[f"corr[{i},{j}]"] = stats.kstest(corr[:, i, j], corr_marginal).pvalue
    failed = {name: round(p, 4) for name, p in p_values.items() if p <= 0.01}
    assert not failed, failed
    # the exact starts pass the same tests (the reference itself is right)
    sd0, corr0 = _sds_and_correlations(start)
    assert stats.kstest(sd0[:, 2], stats.halfnorm(scale=scale_sd).cdf).pvalue > 0.01
    assert stats.kstest(corr0[:, 2, 0], stats.beta(b, b, loc=-1.0, scale=2.0).cdf).pvalue > 0.01


def _conditional(dim=3, n_rows=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n_rows, dim)) @ np.diag([1.0, 0.5, 2.0][:dim])
    scatter = rows.T @ rows
    base = np.linalg.cholesky(scatter / n_rows)
    return (base, scatter, float(n_rows), 2.0, 1.0)


def test_transition_is_a_function_of_its_random_numbers():
    args = _conditional()
    x0 = np.zeros(6)
    chol_cov = laplace_chol_cov(x0, *args)
    rng = np.random.default_rng(0)
    z, u = rng.standard_normal(6), rng.random(24)
    first = nuts_transition(x0, chol_cov, *args, 0.5, 8, z, u)
    second = nuts_transition(x0, chol_cov, *args, 0.5, 8, z.copy(), u.copy())
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1:] == second[1:]
    other = nuts_transition(x0, chol_cov, *args, 0.5, 8, -z, u)
    assert not np.array_equal(first[0], other[0])
    np.testing.assert_array_equal(x0, 0.0)  # the input is not modified


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_tree_size_is_bounded_by_the_depth(depth):
    args = _conditional()
    chol_cov = laplace_chol_cov(np.zeros(6), *args)
    rng = np.random.default_rng(depth)
    x = np.zeros(6)
    for _ in range(50):
        # a tiny step size never U-turns: the tree grows to the maximum depth
        x, accept, n_steps, diverging = nuts_transition(
            x, chol_cov, *args, 1e-3, depth, rng.standard_normal(6), rng.random(3 * depth)
        )
        assert 1 <= n_steps <= 2**depth - 1
        assert 0.0 <= accept <= 1.0 and not diverging
    assert n_steps == 2**depth - 1


def test_huge_step_diverges_and_stays_put():
    args = _conditional()
    chol_cov = laplace_chol_cov(np.zeros(6), *args)
    rng = np.random.default_rng(1)
    x0 = np.zeros(6)
    x, accept, n_steps, diverging = nuts_transition(
        x0, chol_cov, *args, 50.0, 8, rng.standard_normal(6), rng.random(24)
    )
    assert diverging and n_steps == 1 and accept == 0.0
    np.testing.assert_allclose(x, x0, atol=1e-12)


def test_laplace_metric_is_the_inverse_negative_hessian():
    """laplace_chol_cov gives C with C C^T = (-H)^-1; H here by second differences of the
    log density (not of its gradient)."""
    args = _conditional()
    x = np.array([0.1, 0.05, -0.1, 0.02, -0.03, 0.05])
    chol = laplace_chol_cov(x, *args)
    assert np.allclose(np.triu(chol, 1), 0.0)

    def logp(y):
        return lkj_relative_logp_grad(y, *args)[0]

    h, size = 1e-4, x.size
    hessian = np.empty((size, size))
    for a in range(size):
        for b in range(size):
            ea, eb = np.eye(size)[a] * h, np.eye(size)[b] * h
            hessian[a, b] = (
                logp(x + ea + eb) - logp(x + ea - eb) - logp(x - ea + eb) + logp(x - ea - eb)
            ) / (4 * h * h)
    np.testing.assert_allclose(chol @ chol.T @ -hessian, np.eye(size), atol=1e-4)


def test_step_adapter_reaches_the_target_and_freezes():
    args = _conditional()
    x = np.zeros(6)
    adapter = StepAdapter(0.05 * np.eye(6), n_tune=300, target_accept=0.8)
    rng = np.random.default_rng(2)
    metric_changes = 0
    accepts = []
    for i in range(900):
        before = adapter.chol_cov
        x, accept, _, _ = nuts_transition(
            x,
            adapter.chol_cov,
            *args,
            adapter.step_size,
            8,
            rng.standard_normal(6),
            rng.random(24),
        )
        adapter.update(
            accept, lambda point: laplace_chol_cov(point, *args), x,
            lkj_relative_logp_grad(x, *args)[0],
        )
        metric_changes += adapter.chol_cov is not before
        if i >= 300:
            accepts.append(accept)
    assert not adapter.tuning
    assert metric_changes == 2  # at 10% and 30% of the warm-up
    frozen = (adapter.step_size, adapter.chol_cov.copy())
    adapter.update(0.0, lambda point: np.eye(6))
    assert adapter.step_size == frozen[0]
    np.testing.assert_array_equal(adapter.chol_cov, frozen[1])
    assert 0.7 < np.mean(accepts) < 0.95, np.mean(accepts)
