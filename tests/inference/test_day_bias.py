"""The day-bias steps of the Gibbs sampler against their closed-form conditionals."""

import numpy as np

from bpmf.inference.day_bias import DayBiasGibbs, day_groups, days_of
from bpmf.inference.hyperpriors import WISHART_DEFAULTS, WishartHyperpriors
from bpmf.kernels.rows import csr_pair


def _problem(seed=0, n_users=4, n_items=6, n_factors=2):
    """A small state and ratings on a few days per user."""
    rng = np.random.default_rng(seed)
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.8]
    users = np.array([p[0] for p in pairs], dtype=np.int64)
    items = np.array([p[1] for p in pairs], dtype=np.int64)
    times = 86_400.0 * rng.integers(10_000, 10_003, size=len(pairs)) + rng.uniform(0, 86_399,
                                                                                   len(pairs))
    ratings = rng.normal(3.0, 1.0, len(pairs))
    state = {
        "U": rng.normal(size=(n_users, n_factors)), "V": rng.normal(size=(n_items, n_factors)),
        "mu": 3.1, "user_bias": rng.normal(0, 0.3, n_users),
        "item_bias": rng.normal(0, 0.3, n_items), "tau": 2.5,
    }
    return users, items, ratings, times, state


def test_days_are_utc_days_and_groups_are_user_day_pairs():
    assert days_of([0, 86_399.9, 86_400, -1]).tolist() == [0, 0, 1, -1]
    codes, group_users, group_days = day_groups([1, 0, 1, 1], [5, 5, 5, 7])
    assert group_users.tolist() == [0, 1, 1] and group_days.tolist() == [5, 5, 7]
    assert codes.tolist() == [1, 0, 1, 2]


def test_day_biases_are_drawn_from_their_gaussian_conditional():
    users, items, ratings, times, state = _problem()
    groups, group_users, _ = day_groups(users, days_of(times))
    csrs = csr_pair(users, items, ratings, 4, 6)
    step = DayBiasGibbs(users, items, ratings, groups, group_users, csrs, 1.0)
    step.start(state)
    lam = 4.0
    # the conditional by hand: residuals of the rest of the linear predictor
    eta = (state["mu"] + state["user_bias"][users] + state["item_bias"][items]
           + np.einsum("nk,nk->n", state["U"][users], state["V"][items]))
    n_groups = len(group_users)
    counts = np.array([np.sum(groups == g) for g in range(n_groups)])
    sums = np.array([np.sum((ratings - eta)[groups == g]) for g in range(n_groups)])
    precision = lam + state["tau"] * counts
    mean, var = state["tau"] * sums / precision, 1.0 / precision
    rng = np.random.default_rng(1)
    n = 4000
    draws = np.empty((n, n_groups))
    state["day_bias_precision"] = lam
    for k in range(n):
        draws[k] = step.draw_biases(state, step.residual_sums(state, True), rng)
    z = (draws.mean(0) - mean) / np.sqrt(var / n)
    assert np.all(np.abs(z) < 4), z
    # the variance within 4 standard errors (sd of a sample variance ~ var sqrt(2 / n))
    assert np.all(np.abs(draws.var(0) / var - 1) < 4 * np.sqrt(2 / n))
    # after a whole step, the layouts hold the ratings less its day biases
    step.step(state, True, rng)
    expected = csr_pair(users, items, ratings - state["day_bias"][groups], 4, 6)
    for side in (0, 1):
        np.testing.assert_allclose(step.csrs[side][2], expected[side][2], rtol=0, atol=1e-12)
    # the shared layouts are untouched
    np.testing.assert_array_equal(csrs[0][2], csr_pair(users, items, ratings, 4, 6)[0][2])


def test_day_bias_steps_leave_the_scale_posterior_invariant():
    """With the rest fixed, the scale's posterior is one-dimensional: each group's residual
    sum S_g ~ N(0, n_g / tau + n_g^2 s^2) given s, times the half-normal prior of s. The
    chain of whole steps (biases, scale, scaling move) against its mean and sd on a grid."""
    import arviz as az

    users, items, ratings, times, state = _problem(seed=7, n_users=12, n_items=8)
    groups, group_users, _ = day_groups(users, days_of(times))
    ratings = ratings + 0.6 * np.random.default_rng(8).standard_normal(len(group_users))[groups]
    csrs = csr_pair(users, items, ratings, 12, 8)
    step = DayBiasGibbs(users, items, ratings, groups, group_users, csrs, 1.0)
    step.start(state)
    sums = step.residual_sums(state, True).copy()
    counts, tau = step.counts, state["tau"]
    grid = np.linspace(1e-4, 3.0, 30_000)
    variance = counts[None] / tau + counts[None] ** 2 * grid[:, None] ** 2
    log_post = -0.5 * grid**2 - 0.5 * np.sum(np.log(variance) + sums**2 / variance, axis=1)
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    mean = weights @ grid
    sd = np.sqrt(weights @ grid**2 - mean**2)
    rng = np.random.default_rng(9)
    kept = np.empty((2, 3000))
    for chain in range(2):
        step.start(state)
        for k in range(3200):
            step.step(state, True, rng)
            if k >= 200:
                kept[chain, k - 200] = 1.0 / np.sqrt(state["day_bias_precision"])
    mcse = float(az.mcse(kept))
    assert abs(kept.mean() - mean) < 4 * mcse, (kept.mean(), mean, mcse)
    assert abs(kept.std() / sd - 1) < 0.1, (kept.std(), sd)


def test_shift_of_user_and_day_biases_draws_the_user_bias_given_the_sums():
    """With every sum b_u + d_g fixed, b_u has precision lam_b + n_u lam_d and mean
    lam_d sum_g (b_u + d_g) / that (independent priors N(0, 1/lam_b), N(0, 1/lam_d))."""
    users, items, ratings, times, state = _problem(seed=3)
    groups, group_users, _ = day_groups(users, days_of(times))
    csrs = csr_pair(users, items, ratings, 4, 6)
    step = DayBiasGibbs(users, items, ratings, groups, group_users, csrs, 1.0)
    rng = np.random.default_rng(2)
    lam_b, lam_d = 9.0, 4.0
    start_bias = state["user_bias"].copy()
    start_days = rng.normal(0, 0.5, len(group_users))
    sums = start_bias[group_users] + start_days
    hyper = WishartHyperpriors(WISHART_DEFAULTS, 2)
    n = 4000
    kept = np.empty((n, 4))
    for k in range(n):
        state.update(user_bias=start_bias.copy(), day_bias=start_days.copy(),
                     user_bias_precision=lam_b, day_bias_precision=lam_d)
        step.shift(state, {}, rng, hyper)
        np.testing.assert_allclose(state["user_bias"][group_users] + state["day_bias"], sums,
                                   atol=1e-12)
        kept[k] = state["user_bias"]
    per_user = np.bincount(group_users, minlength=4)
    precision = lam_b + per_user * lam_d
    mean = lam_d * np.bincount(group_users, weights=sums, minlength=4) / precision
    z = (kept.mean(0) - mean) / np.sqrt(1.0 / precision / n)
    assert np.all(np.abs(z) < 4), z
    assert np.all(np.abs(kept.var(0) * precision - 1) < 4 * np.sqrt(2 / n))


def test_fold_in_draws_rows_and_day_biases_from_their_joint_conditional():
    """Rows and new day biases of two new users against the dense joint Gaussian of
    (row, day biases) given one fitted draw, repeated over many draws."""
    from fold_in_check import assert_standard_normal

    from bpmf.inference.fold_in import fold_in_rows_with_days

    rng = np.random.default_rng(4)
    n_items, D, S = 7, 2, 3000
    V = rng.normal(size=(n_items, D))
    item_bias = rng.normal(0, 0.3, n_items)
    Sigma = np.array([[0.5, 0.1], [0.1, 0.3]])
    draws = {
        "V": np.repeat(V[None], S, 0), "item_bias": np.repeat(item_bias[None], S, 0),
        "U": np.zeros((S, 3, D)), "user_bias": np.zeros((S, 3)),
        "Sigma_U": np.repeat(Sigma[None], S, 0), "mu_U": np.tile([0.2, -0.1], (S, 1)),
        "user_bias_sd": np.full(S, 0.4), "mu": np.full(S, 3.0), "sigma": np.full(S, 0.8),
        "day_bias_sd": np.full(S, 0.5),
    }
    # user 0: groups 0 (3 ratings) and 1 (2); user 1: group 2 (4 ratings)
    rows = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0])
    groups = np.array([0, 1, 2, 0, 1, 2, 2, 2, 0])
    items = np.array([0, 1, 2, 3, 4, 5, 6, 0, 2])
    ratings = rng.normal(3.5, 1.0, len(rows))
    factors, biases, day_biases = fold_in_rows_with_days(
        draws, rows, items, ratings, groups, 2, 3, np.random.default_rng(0)
    )
    tau, day_var = 1 / 0.8**2, 0.25
    for user, user_groups in ((0, [0, 1]), (1, [2])):
        dim = D + 1 + len(user_groups)
        Q = np.zeros((dim, dim))
        Q[:D, :D] = np.linalg.inv(Sigma)
        Q[D, D] = 1 / 0.4**2
        Q[D + 1:, D + 1:] = np.eye(len(user_groups)) / day_var
        linear = np.zeros(dim)
        linear[:D] = np.linalg.inv(Sigma) @ [0.2, -0.1]
        for n in np.flatnonzero(rows == user):
            z = np.zeros(dim)
            z[:D], z[D] = V[items[n]], 1.0
            z[D + 1 + user_groups.index(groups[n])] = 1.0
            Q += tau * np.outer(z, z)
            linear += tau * z * (ratings[n] - 3.0 - item_bias[items[n]])
        mean = np.linalg.solve(Q, linear)
        drawn = np.column_stack([factors[:, user], biases[:, user], day_biases[:, user_groups]])
        standardised = (drawn - mean) @ np.linalg.cholesky(Q)
        assert_standard_normal(standardised, cov_atol=0.1)
