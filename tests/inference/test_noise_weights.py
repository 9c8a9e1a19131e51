"""The noise-weight steps of the Gibbs sampler against closed forms and plain numpy: the
weighted row kernel, the compiled passes over the ratings, the degrees of freedom's grid
posterior and the weights' Gamma conditionals (checked by numerical integration)."""

import copy

import numpy as np
import pytest
from scipy import integrate, stats

from bpmf.inference.day_bias import DayBiasGibbs, day_groups, days_of
from bpmf.inference.noise_weights import DF_GRID, NoiseWeights, draw_df, scale_move
from bpmf.kernels.noise_weights import (
    rating_weights,
    scaled_squares_from,
    weighted_square_sums,
)
from bpmf.kernels.rows import csr_pair, row_blocks, sample_rows, sample_rows_parallel

# ---------------------------------------------------------------------- weighted row kernel
# the single row's weighted conditional in closed form:
# tests/inference/test_gibbs.py::test_row_update_is_the_exact_gaussian_conditional


def _layout(seed, n_rows=40, n_other=25, n_ratings=900):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_rows, n_ratings).astype(np.int64)
    items = rng.integers(0, n_other, n_ratings).astype(np.int64)
    values = rng.normal(size=n_ratings)
    return rng, users, items, values


def test_weighted_row_sums_are_each_rows_weighted_residual_sum():
    rng, users, items, values = _layout(8)
    n_rows, n_other, dim = 40, 25, 3
    (indptr, partners, sorted_values), _ = csr_pair(users, items, values, n_rows, n_other)
    roots = np.sqrt(rng.gamma(1.0, 1.0, len(values)))
    X = np.column_stack([rng.normal(size=(n_other, dim)), rng.normal(size=n_other)])
    out = np.empty((n_rows, dim))
    row_sums = np.full(n_rows, np.nan)
    total, squares = sample_rows(indptr, partners, sorted_values, X, 0.3, np.eye(dim),
                                 np.zeros((1, dim)), 2.0, rng.normal(size=(n_rows, dim)), out,
                                 True, None, 0.0, row_sums, 0, roots)
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    errors = sorted_values - 0.3 - X[partners, dim] - np.einsum(
        "na,na->n", X[partners, :dim], out[rows])
    w = roots**2
    np.testing.assert_allclose(row_sums, np.bincount(rows, w * errors, n_rows), atol=1e-10)
    np.testing.assert_allclose(total, w @ errors, atol=1e-10)
    np.testing.assert_allclose(squares, w @ errors**2, rtol=1e-10)
    # with z = 0 each row is its weighted conditional mean
    mean_out = np.empty((n_rows, dim))
    sample_rows(indptr, partners, sorted_values, X, 0.3, np.eye(dim), np.zeros((1, dim)), 2.0,
                np.zeros((n_rows, dim)), mean_out, False, None, 0.0, None, 0, roots)
    t = sorted_values - 0.3 - X[partners, dim]
    for r in (0, 17, n_rows - 1):
        k = rows == r
        x = X[partners[k], :dim]
        P = np.eye(dim) + 2.0 * (x * w[k, None]).T @ x
        np.testing.assert_allclose(mean_out[r], np.linalg.solve(P, 2.0 * x.T @ (w[k] * t[k])),
                                   rtol=1e-10, atol=1e-12)


def test_unit_weights_give_bit_identical_draws_and_the_parallel_kernel_agrees():
    rng, users, items, values = _layout(3, n_ratings=3000)
    n_rows, n_other, dim = 40, 25, 3
    (indptr, partners, sorted_values), _ = csr_pair(users, items, values, n_rows, n_other)
    X = np.column_stack([rng.normal(size=(n_other, dim)), rng.normal(size=n_other)])
    z = rng.normal(size=(n_rows, dim))
    blocks = row_blocks(indptr, 500)
    assert len(blocks) > 3

    def run(kernel, roots, alpha=0.0):
        out = np.tile(np.linspace(-1, 1, dim), (n_rows, 1))  # the start of overrelaxation
        row_sums = np.empty(n_rows)
        sums = kernel(indptr, partners, sorted_values, X, 0.3, np.eye(dim),
                      np.full((1, dim), 0.1), 2.0, z, out, True, blocks, alpha, row_sums, 0,
                      roots)
        return out, row_sums, np.array(sums)

    for alpha in (0.0, -0.7):
        plain = run(sample_rows, None, alpha)
        ones = run(sample_rows, np.ones(len(values)), alpha)
        for a, b in zip(plain, ones, strict=True):
            np.testing.assert_array_equal(a, b)
    roots = np.sqrt(rng.gamma(1.0, 1.0, len(values)))
    serial = run(sample_rows, roots)
    parallel = run(sample_rows_parallel, roots)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(serial[0], plain[0])


# ---------------------------------------------------------------------- compiled passes
@pytest.mark.parametrize("seed", [0, 1])
def test_rating_weights_match_numpy_in_each_layout_order(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 37, 1100  # items need 11 bits: a two-pass radix sort
    n_ratings = 4000
    users = rng.integers(0, n_users - 2, n_ratings).astype(np.int64)  # two users without
    items = rng.integers(0, n_items, n_ratings).astype(np.int64)
    users[:30], items[:30] = 4, 9  # a repeated pair
    values = rng.normal(size=n_ratings)
    a, c = rng.gamma(2.0, 0.5, n_users), rng.gamma(2.0, 0.5, n_items)
    layouts = csr_pair(users, items, values, n_users, n_items)
    for (indptr, partners, _), rows, others, row_w, other_w, n_rows in (
        (layouts[0], users, items, a, c, n_users),
        (layouts[1], items, users, c, a, n_items),
    ):
        order = np.lexsort((others, rows))
        roots = np.full(n_ratings, np.nan)
        counts = np.full(n_rows, np.nan)
        total = rating_weights(indptr, partners, np.sqrt(row_w), np.sqrt(other_w), roots,
                               counts)
        w = a[users] * c[items]  # in the ratings' order
        np.testing.assert_allclose(roots**2, w[order], rtol=1e-13)
        np.testing.assert_allclose(counts, np.bincount(rows, w, n_rows), rtol=1e-12)
        assert counts[-1] == 0.0 or n_rows == n_items
        assert total == pytest.approx(w.sum(), rel=1e-12)


def test_weighted_square_sums_and_scaled_squares_match_numpy():
    rng = np.random.default_rng(5)
    n_users, n_items, D = 30, 20, 3
    n_ratings = 500
    users = rng.integers(0, n_users, n_ratings).astype(np.int64)
    items = rng.integers(0, n_items, n_ratings).astype(np.int64)
    ratings = rng.normal(3, 1, n_ratings)
    U, V = rng.normal(size=(n_users, D)), rng.normal(size=(n_items, D))
    b, c = rng.normal(size=n_users), rng.normal(size=n_items)
    groups = rng.integers(0, 50, n_ratings).astype(np.int64)
    d = rng.normal(size=50)
    mu, tau = 3.2, 1.9
    fitted = mu + np.einsum("nk,nk->n", U[users], V[items])
    empty, no_groups = np.zeros(0), np.zeros(0, dtype=np.int64)
    for biases, days, expected in (
        (False, False, fitted),
        (True, False, fitted + b[users] + c[items]),
        (True, True, fitted + b[users] + c[items] + d[groups]),
    ):
        out = np.full(n_ratings, np.nan)
        eta = fitted + (b[users] + c[items] if biases else 0.0)  # without the day term
        scaled_squares_from(ratings, eta, d if days else empty, groups if days else no_groups,
                            tau, out)
        np.testing.assert_allclose(out, tau * (ratings - expected) ** 2, rtol=1e-11)
    squares = rng.gamma(1.0, 1.0, n_ratings)
    item_w = rng.gamma(2.0, 0.5, n_items)
    out = np.full(n_users + 3, np.nan)  # three users without ratings: zero, not left as they were
    weighted_square_sums(squares, users, items, item_w, out)
    np.testing.assert_allclose(out, np.bincount(users, item_w[items] * squares, n_users + 3),
                               rtol=1e-12)
    user_w = rng.gamma(2.0, 0.5, n_users)
    out = np.full(n_items, np.nan)
    weighted_square_sums(squares, items, users, user_w, out)
    np.testing.assert_allclose(out, np.bincount(items, user_w[users] * squares, n_items),
                               rtol=1e-12)


# ---------------------------------------------------------------------- degrees of freedom
def _collapsed_log_posterior(counts, sums, grid):
    """log p(nu | Q) on grid with each row's weight integrated out by quadrature: a row with
    n residuals of precision tau a c and scaled sum of squares Q has likelihood
    a^(n/2) exp(-a Q / 2) in its weight a ~ Gamma(nu/2, rate nu/2)."""
    out = []
    for nu in grid:
        total = 0.0
        for n, q in zip(counts, sums, strict=True):
            value, _ = integrate.quad(
                lambda a, n=n, q=q, nu=nu: np.exp(
                    stats.gamma.logpdf(a, nu / 2, scale=2 / nu) + 0.5 * n * np.log(a)
                    - 0.5 * a * q), 0.0, np.inf, limit=200)
            total += np.log(value)
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("true_df", [2.0, 40.0])
def test_df_draws_follow_the_collapsed_posterior_on_the_grid(true_df):
    """Draws of nu with the weights integrated out, against the posterior computed by
    quadrature over each row's weight (not from the sampler's Gamma-function formula)."""
    rng = np.random.default_rng(11)
    counts = rng.integers(1, 6, 30)
    weights = rng.gamma(true_df / 2, 2 / true_df, 30)
    sums = np.array([rng.chisquare(n) / w for n, w in zip(counts, weights, strict=True)])
    log_post = _collapsed_log_posterior(counts, sums, DF_GRID)
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    n = 40_000
    draws = np.array([draw_df(counts, sums, rng) for _ in range(n)])
    assert np.isin(draws, DF_GRID).all()
    counts_grid = np.array([(draws == nu).sum() for nu in DF_GRID])
    freq = counts_grid / n
    assert 0.5 * np.abs(freq - post).sum() < 0.015
    # chi-square over the cells expected to hold at least 5 draws, the rest pooled
    big = post * n >= 5
    observed = np.append(counts_grid[big], counts_grid[~big].sum())
    expected = np.append(post[big], post[~big].sum()) * n
    if expected[-1] < 5:
        observed, expected = observed[:-1], expected[:-1]
        expected *= observed.sum() / expected.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_df_draws_on_a_given_grid():
    """Heavy-tailed residuals pick the small nu, Gaussian ones the large."""
    rng = np.random.default_rng(2)
    grid = np.array([1.0, 100.0])
    ones = np.ones(500)
    heavy = rng.standard_t(1, 500) ** 2
    assert {draw_df(ones, heavy, rng, grid) for _ in range(50)} == {1.0}
    light = rng.standard_normal(500) ** 2
    assert {draw_df(ones, light, rng, grid) for _ in range(50)} == {100.0}


# ---------------------------------------------------------------------- weights' conditional
def _state(seed=0, n_users=6, n_items=5, D=2):
    rng = np.random.default_rng(seed)
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.75]
    users = np.array([p[0] for p in pairs], dtype=np.int64)
    items = np.array([p[1] for p in pairs], dtype=np.int64)
    ratings = rng.normal(3.0, 1.2, len(pairs))
    state = {
        "U": rng.normal(size=(n_users, D)), "V": rng.normal(size=(n_items, D)),
        "mu": 3.1, "user_bias": rng.normal(0, 0.3, n_users),
        "item_bias": rng.normal(0, 0.3, n_items), "tau": 1.6,
        "user_noise_weight": rng.gamma(3.0, 1 / 3.0, n_users),
        "item_noise_weight": rng.gamma(3.0, 1 / 3.0, n_items),
        "noise_df_user": 3.0, "noise_df_item": 5.0,
    }
    return users, items, ratings, state


def _eta(state, users, items):
    return (state["mu"] + state["user_bias"][users] + state["item_bias"][items]
            + np.einsum("nk,nk->n", state["U"][users], state["V"][items]))


def _grid_moments(log_density, grid):
    """Mean, variance and fourth central moment of the density exp(log_density) on grid."""
    p = np.exp(log_density - log_density.max())
    norm = integrate.trapezoid(p, grid)
    mean = integrate.trapezoid(grid * p, grid) / norm
    var = integrate.trapezoid((grid - mean) ** 2 * p, grid) / norm
    m4 = integrate.trapezoid((grid - mean) ** 4 * p, grid) / norm
    return mean, var, m4


def test_user_weights_follow_their_conditional_by_numerical_integration():
    """The users' weights given the step's own draw of nu_U: each draw against the
    conditional mean and variance of a_u given that nu, integrated numerically over a."""
    users, items, ratings, state = _state()
    n_users, n_items = 6, 5
    csrs = csr_pair(users, items, ratings, n_users, n_items)
    noise = NoiseWeights(users, items, ratings, n_users, n_items, csrs)
    eta = _eta(state, users, items)
    sigma = 1 / np.sqrt(state["tau"])
    c = state["item_noise_weight"]
    grid = np.linspace(1e-9, 30.0, 20_001)
    # moments per (nu on the grid, user): N(r; eta, sigma^2 / (a c_i)) x Gamma(nu/2, nu/2)
    moments = np.empty((len(DF_GRID), n_users, 2))
    for g, nu in enumerate(DF_GRID):
        log_prior = stats.gamma.logpdf(grid, nu / 2, scale=2 / nu)
        for u in range(n_users):
            k = users == u
            log_lik = stats.norm.logpdf(ratings[k][None, :], eta[k][None, :],
                                        sigma / np.sqrt(grid[:, None] * c[items[k]][None, :]))
            moments[g, u] = _grid_moments(log_lik.sum(1) + log_prior, grid)[:2]
    rng = np.random.default_rng(3)
    n = 4000
    draws = np.empty((n, n_users))
    nus = np.empty(n, dtype=np.int64)
    for k in range(n):
        s = copy.deepcopy(state)
        noise.step(s, True, {"U": {}, "V": {}}, rng)
        draws[k] = s["user_noise_weight"]
        nus[k] = np.flatnonzero(DF_GRID == s["noise_df_user"])[0]
    mean, var = moments[nus, :, 0], moments[nus, :, 1]
    dev = draws - mean
    z = dev.mean(0) / (dev.std(0) / np.sqrt(n))
    assert np.all(np.abs(z) < 4), z
    sq = dev**2 - var
    z_var = sq.mean(0) / (sq.std(0) / np.sqrt(n))
    assert np.all(np.abs(z_var) < 4), z_var
    # nu moves: the step draws it afresh (six users leave it uncertain)
    assert len(np.unique(nus)) > 5
    # the users differ: a test of the pooled mean alone would not see a swapped residual
    assert np.ptp(mean.mean(0)) > 10 * np.sqrt(var.max() / n)


def test_item_weights_follow_their_conditional_given_the_new_user_weights():
    """The items' draw within the same step: each draw against the conditional mean and
    variance of c_i given that step's new user weights, integrated numerically per draw."""
    users, items, ratings, state = _state(seed=4)
    n_users, n_items = 6, 5
    csrs = csr_pair(users, items, ratings, n_users, n_items)
    noise = NoiseWeights(users, items, ratings, n_users, n_items, csrs)
    eta = _eta(state, users, items)
    sigma = 1 / np.sqrt(state["tau"])
    rng = np.random.default_rng(5)
    n = 1000
    a_draws, c_draws = np.empty((n, n_users)), np.empty((n, n_items))
    nus = np.empty(n)
    for k in range(n):
        s = copy.deepcopy(state)
        noise.step(s, True, {"U": {}, "V": {}}, rng)
        a_draws[k], c_draws[k] = s["user_noise_weight"], s["item_noise_weight"]
        nus[k] = s["noise_df_item"]
    grid = np.linspace(1e-9, 25.0, 1_501)
    # each draw's prior: Gamma(nu/2, nu/2) at the step's own nu_V
    log_prior = stats.gamma.logpdf(grid[None, :], nus[:, None] / 2, scale=2 / nus[:, None])
    for i in range(n_items):
        k = items == i
        # (draws, grid, ratings) log-likelihoods of c_i given each draw's user weights
        scale = sigma / np.sqrt(grid[None, :, None] * a_draws[:, None, users[k]])
        log_dens = stats.norm.logpdf(ratings[k], eta[k], scale).sum(2) + log_prior
        p = np.exp(log_dens - log_dens.max(1, keepdims=True))
        p /= integrate.trapezoid(p, grid, axis=1)[:, None]
        m = integrate.trapezoid(grid * p, grid, axis=1)
        v = integrate.trapezoid((grid - m[:, None]) ** 2 * p, grid, axis=1)
        dev = c_draws[:, i] - m
        assert abs(dev.mean()) < 4 * dev.std() / np.sqrt(n), (i, dev.mean(), dev.std())
        sq = dev**2 - v
        assert abs(sq.mean()) < 4 * sq.std() / np.sqrt(n), (i, sq.mean(), sq.std())


def test_step_sets_the_rows_weights_the_total_and_draws_the_df():
    users, items, ratings, state = _state(seed=6)
    n_users, n_items = 6, 5
    csrs = csr_pair(users, items, ratings, n_users, n_items)
    noise = NoiseWeights(users, items, ratings, n_users, n_items, csrs)
    fresh = {}
    noise.start(fresh)
    assert (fresh["user_noise_weight"] == 1).all() and (fresh["item_noise_weight"] == 1).all()
    work = {"U": {}, "V": {}}
    noise.step(state, True, work, np.random.default_rng(0))
    a, c = state["user_noise_weight"], state["item_noise_weight"]
    w = a[users] * c[items]
    for side, rows, others, n_rows in (("U", users, items, n_users), ("V", items, users, n_items)):
        order = np.lexsort((others, rows))
        np.testing.assert_allclose(work[side]["sqrt_weights"] ** 2, w[order], rtol=1e-13)
        np.testing.assert_allclose(work[side]["counts"], np.bincount(rows, w, n_rows),
                                   rtol=1e-12)
    assert work["weight_total"] == pytest.approx(w.sum(), rel=1e-12)
    assert state["noise_df_user"] in DF_GRID and state["noise_df_item"] in DF_GRID
    # the implicit rows' offsets enter the residuals: a zero offset changes nothing
    squares = noise.scaled_squares(state, True).copy()
    np.testing.assert_allclose(squares, state["tau"] * (ratings - _eta(state, users, items)) ** 2,
                               rtol=1e-11)
    offset = np.random.default_rng(1).normal(size=state["U"].shape)
    shifted = noise.scaled_squares({**state, "offset_U": offset}, True)
    moved = {**state, "U": state["U"] + offset}
    np.testing.assert_allclose(shifted, state["tau"] * (ratings - _eta(moved, users, items)) ** 2,
                               rtol=1e-11)


def test_day_biases_use_the_weighted_counts_and_sums():
    """With noise weights, d_g | rest ~ N(tau sum w e / P, 1 / P), P = lam + tau sum_g w."""
    rng = np.random.default_rng(0)
    n_users, n_items = 5, 7
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.8]
    users = np.array([p[0] for p in pairs], dtype=np.int64)
    items = np.array([p[1] for p in pairs], dtype=np.int64)
    times = 86_400.0 * rng.integers(10_000, 10_003, len(pairs)) + rng.uniform(0, 86_399,
                                                                              len(pairs))
    ratings = rng.normal(3.0, 1.0, len(pairs))
    _, _, _, state = _state(seed=1, n_users=n_users, n_items=n_items)
    groups, group_users, _ = day_groups(users, days_of(times))
    csrs = csr_pair(users, items, ratings, n_users, n_items)
    step = DayBiasGibbs(users, items, ratings, groups, group_users, csrs, 1.0)
    step.start(state)
    noise = NoiseWeights(users, items, ratings, n_users, n_items, csrs, groups)
    step.weights = noise.weights
    noise.set_weights(state, {"U": {}, "V": {}})
    w = state["user_noise_weight"][users] * state["item_noise_weight"][items]
    np.testing.assert_allclose(step.weights, w, rtol=1e-14)
    lam = 4.0
    state["day_bias_precision"] = lam
    e = ratings - _eta(state, users, items)
    n_groups = len(group_users)
    precision = lam + state["tau"] * np.bincount(groups, w, n_groups)
    mean = state["tau"] * np.bincount(groups, w * e, n_groups) / precision
    # the weighted counts are refreshed by the step; set them as it does
    step.weighted_counts = np.bincount(groups, step.weights, n_groups)
    sums = step.residual_sums(state, True)
    np.testing.assert_allclose(sums, np.bincount(groups, w * e, n_groups), rtol=1e-12)
    n = 4000
    draws = np.array([step.draw_biases(state, sums, rng) for _ in range(n)])
    z = (draws.mean(0) - mean) / np.sqrt(1 / precision / n)
    assert np.all(np.abs(z) < 4), z
    assert np.all(np.abs(draws.var(0) * precision - 1) < 4 * np.sqrt(2 / n))
    # and the noise step's residuals take the day biases off
    state["day_bias"] = rng.normal(size=n_groups)
    np.testing.assert_allclose(noise.scaled_squares(state, True),
                               state["tau"] * (e - state["day_bias"][groups]) ** 2, rtol=1e-11)
    # step() refreshes the weighted counts from the current weights
    state["user_noise_weight"] = 2.0 * state["user_noise_weight"]
    noise.set_weights(state, {"U": {}, "V": {}})
    step.step(state, True, rng)
    np.testing.assert_allclose(step.weighted_counts, np.bincount(groups, 2 * w, n_groups),
                               rtol=1e-12)


# ---------------------------------------------------------------------- the sweep's wiring
class _FixedHyper:
    """Hyperpriors whose steps do nothing, so that a sweep moves only the noise weights, the
    rows, the intercept and (through ``noise_precision``, which records its arguments and
    keeps tau) the noise."""

    def __init__(self):
        self.noise_calls = []

    def factor_step(self, side, state, rng):
        pass

    def bias_scale(self, bias, state):
        return None

    def noise_precision(self, n_ratings, sse, rng):
        self.noise_calls.append((n_ratings, sse))
        return self.tau

    def bias_precision(self, values, rng):
        return None

    def noise_prior(self):
        return None  # no scaling move of the weights against tau: tau stays as given

    def shift_moves(self, state, config, rng):
        return True

    def split_moves(self, state, rng):
        pass

    def rescale(self, state, rng, terms):
        return None


def test_sweep_draws_the_intercept_and_the_noise_from_the_weighted_sums():
    """One sweep with the hyperpriors fixed: given the new weights and rows, the intercept is
    N(m, 1/P) with P = 1/s_mu^2 + tau sum w_n, m = (m0/s_mu^2 + tau sum w_n (r_n - f_n)) / P,
    and the noise step gets the count N and sum w_n (r_n - mu - f_n)^2. The ratings are
    noisy for the starting tau, so that the weights are small and sum w_n far below N."""
    from bpmf.inference.gibbs import _sweep
    from bpmf.inference.rows import workspace

    rng = np.random.default_rng(12)
    n_users, n_items, D = 8, 6, 2
    users, items = (codes.ravel().astype(np.int64) for codes in
                    np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij"))
    keep = rng.random(len(users)) < 0.8
    users, items = users[keep], items[keep]
    ratings = rng.normal(3.0, 1.5, len(users))
    csrs = csr_pair(users, items, ratings, n_users, n_items)
    config = {"mu_sd": 2.0, "intercept_mean": 2.5, "sigma": None, "overrelax": 0.0,
              "noise_overrelax": 0}
    start = {
        "U": rng.normal(size=(n_users, D)), "V": rng.normal(size=(n_items, D)),
        "user_bias": rng.normal(0, 0.3, n_users), "item_bias": rng.normal(0, 0.3, n_items),
        "mu": 3.0, "tau": 4.0, "Lambda_U": np.eye(D), "Lambda_V": 2 * np.eye(D),
        "mu_U": np.zeros(D), "mu_V": np.zeros(D), "user_bias_precision": 5.0,
        "item_bias_precision": 3.0,
    }
    noise = NoiseWeights(users, items, ratings, n_users, n_items, csrs)
    noise.start(start)
    hyper = _FixedHyper()
    hyper.tau = start["tau"]
    n = 2000
    z = np.empty(n)
    weight_fraction = np.empty(n)
    for k in range(n):
        state = copy.deepcopy(start)
        work = workspace(n_users, n_items, D, True)
        work["noise"] = noise
        _sweep(state, csrs, hyper, config, True, work, rng)
        w = state["user_noise_weight"][users] * state["item_noise_weight"][items]
        fitted = (state["user_bias"][users] + state["item_bias"][items]
                  + np.einsum("nk,nk->n", state["U"][users], state["V"][items]))
        precision = 1 / config["mu_sd"] ** 2 + start["tau"] * w.sum()
        mean = (config["intercept_mean"] / config["mu_sd"] ** 2
                + start["tau"] * w @ (ratings - fitted)) / precision
        z[k] = (state["mu"] - mean) * np.sqrt(precision)
        weight_fraction[k] = w.sum() / len(ratings)
        count, sse = hyper.noise_calls[-1]
        assert count == len(ratings)
        assert sse == pytest.approx(w @ (ratings - state["mu"] - fitted) ** 2, rel=1e-9)
        assert work["weight_total"] == pytest.approx(w.sum(), rel=1e-12)
    assert weight_fraction.mean() < 0.6  # an unweighted count would be far off
    assert abs(z.mean()) < 4 / np.sqrt(n), z.mean()
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / n), z.var()


def test_sampler_hands_the_current_weights_to_the_rows_and_the_day_biases(monkeypatch):
    """In sample_gibbs, each row draw sees the square roots of the weights a_u c_i of the
    state in its layout's order, and the day-bias step the same weights in the ratings'
    order."""
    from bpmf.inference import gibbs
    from bpmf.inference.gibbs import sample_gibbs
    from bpmf.models import BPMF

    rng = np.random.default_rng(3)
    n_users, n_items = 12, 9
    users = rng.integers(0, n_users, 150).astype(np.int64)
    items = rng.integers(0, n_items, 150).astype(np.int64)
    users[:n_users], items[:n_items] = np.arange(n_users), np.arange(n_items)
    ratings = rng.normal(3.0, 1.0, 150)
    times = 86_400.0 * rng.integers(10_000, 10_004, 150)
    groups, group_users, _ = day_groups(users, days_of(times))
    layouts = csr_pair(users, items, ratings, n_users, n_items)
    calls = {"U": 0, "V": 0, "days": 0}
    sample_side, day_step = gibbs.sample_side, DayBiasGibbs.step

    def spy_side(state, side, csr, biases, work, *args, **kwargs):
        a, c = state["user_noise_weight"], state["item_noise_weight"]
        indptr, partners = layouts[0 if side == "U" else 1][:2]
        rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        expected = a[rows] * c[partners] if side == "U" else c[rows] * a[partners]
        np.testing.assert_allclose(work["sqrt_weights"] ** 2, expected, rtol=1e-13)
        np.testing.assert_allclose(work["counts"], np.bincount(rows, expected, len(indptr) - 1),
                                   rtol=1e-12)
        calls[side] += 1
        return sample_side(state, side, csr, biases, work, *args, **kwargs)

    def spy_day_step(self, state, biases, step_rng):
        w = state["user_noise_weight"][users] * state["item_noise_weight"][items]
        assert self.weights is not None
        np.testing.assert_allclose(self.weights, w, rtol=1e-13)
        calls["days"] += 1
        return day_step(self, state, biases, step_rng)

    monkeypatch.setattr(gibbs, "sample_side", spy_side)
    monkeypatch.setattr(DayBiasGibbs, "step", spy_day_step)
    config = BPMF(2, model_config={"noise_weights": True})._model_config()
    draws = sample_gibbs(users, items, ratings, n_users, n_items, n_factors=2, draws=6, tune=3,
                         chains=1, biases=True, covariance_prior="lkj", model_config=config,
                         random_state=0, progressbar=False, cores=1,
                         day_groups=(groups, group_users), noise_weights=True)
    assert calls == {"U": 9, "V": 9, "days": 9}
    assert draws["user_noise_weight"].shape == (1, 6, n_users)
    assert draws["item_noise_weight"].shape == (1, 6, n_items)
    assert np.isin(draws["noise_df_user"], DF_GRID).all()
    assert np.isin(draws["noise_df_item"], DF_GRID).all()
    assert len(np.unique(draws["user_noise_weight"][0, :, 0])) == 6  # drawn every sweep


# ---------------------------------------------------------------------- the scaling move
def _orbit_log_density(h, tau, weights, nu, noise_prior):
    """log of pi(tau / h, h a) |J| / h along the move's orbit, from the priors written out with
    scipy (the likelihood is constant along it): sigma ~ HalfNormal(sd) mapped to tau, or tau ~
    Gamma; a_u ~ Gamma(nu / 2, rate nu / 2); Jacobian h^(n - 1); Haar measure dh / h."""
    new_tau = tau / h
    if noise_prior[0] == "halfnormal":
        sigma = new_tau ** -0.5
        log_tau = stats.halfnorm.logpdf(sigma, scale=noise_prior[1]) + np.log(0.5 * new_tau ** -1.5)
    else:
        log_tau = stats.gamma.logpdf(new_tau, noise_prior[1], scale=1.0 / noise_prior[2])
    log_weights = stats.gamma.logpdf(h * weights, 0.5 * nu, scale=2.0 / nu).sum()
    return log_tau + log_weights + (len(weights) - 1) * np.log(h) - np.log(h)


@pytest.mark.parametrize("noise_prior", [("halfnormal", 0.7), ("gamma", 2.0, 0.5)])
def test_scale_move_draws_the_orbit_conditional(noise_prior):
    """The factor's draws follow the density along the orbit computed from the priors (not
    from the sampler's formula): quantiles and a KS test on 4,000 draws against the orbit
    density's CDF (cumulative quadrature on a fine grid); draws from the move with a wrong
    Jacobian (one power of h more) fail the same test."""
    rng = np.random.default_rng(11)
    weights = rng.gamma(3.0, 1.0 / 3.0, size=12)
    tau, nu = 1.6, 6.0
    grid = np.linspace(0.05, 6.0, 20001)
    log_orbit = np.array([_orbit_log_density(h, tau, weights, nu, noise_prior) for h in grid])
    density = np.exp(log_orbit - log_orbit.max())
    cumulative = integrate.cumulative_trapezoid(density, grid, initial=0.0)
    cumulative /= cumulative[-1]

    def cdf(x):
        return np.interp(x, grid, cumulative)

    draws = np.array([scale_move(tau, weights, nu, noise_prior, rng) for _ in range(4000)])
    levels = [0.1, 0.25, 0.5, 0.75, 0.9]
    np.testing.assert_allclose(cdf(np.quantile(draws, levels)), levels, atol=0.025)
    assert stats.kstest(draws, cdf).pvalue > 1e-3
    # one more power of h in the orbit density (a Jacobian h^n): its draws are rejected
    wrong = np.exp(log_orbit - log_orbit.max()) * grid
    wrong_cdf = integrate.cumulative_trapezoid(wrong, grid, initial=0.0)
    wrong_draws = np.interp(rng.random(4000), wrong_cdf / wrong_cdf[-1], grid)
    assert stats.kstest(wrong_draws, cdf).pvalue < 1e-3
