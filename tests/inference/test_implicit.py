"""Implicit feedback (Bayesian SVD++) steps: the sets N(u), the offsets, the conditional of the
implicit factors with the user rows integrated out and given the effective rows (closed form
and draws), the common shift, the items' side, and the tilted rescaling density."""

import arviz as az
import numpy as np
import pytest
import xarray as xr
from scipy import integrate

from bpmf.inference.implicit import ImplicitStep, centring_weights, implicit_offsets, implicit_sets
from bpmf.kernels.implicit import sweep_implicit, sweep_implicit_given_rows, user_terms
from bpmf.kernels.rows import csr_pair
from bpmf.kernels.slice import slice_log_scales

D = 2


def _mcse(series):
    """ArviZ's MCSE of the mean of each column of a single chain ``(draws, k)``."""
    data = xr.Dataset({"v": (("chain", "draw", "k"), series.reshape(1, *series.shape))})
    return az.mcse(data)["v"].values


def test_sets_join_extra_items_once_and_offsets_match_dense():
    users = np.array([0, 0, 1, 2, 2, 2])
    items = np.array([0, 3, 1, 0, 1, 2])
    sets = implicit_sets(users, items, 4, 5, extra=(np.array([0, 1, 1]), np.array([4, 1, 3])))
    members = [sets.user_items[sets.user_indptr[u] : sets.user_indptr[u + 1]] for u in range(4)]
    assert [m.tolist() for m in members] == [[0, 3, 4], [1, 3], [0, 1, 2], []]
    np.testing.assert_allclose(sets.scale, [3**-0.5, 2**-0.5, 3**-0.5, 0.0])
    for j in range(5):
        users_of_j = sets.item_users[sets.item_indptr[j] : sets.item_indptr[j + 1]]
        assert users_of_j.tolist() == [u for u in range(4) if j in members[u]]
    Y = np.random.default_rng(0).standard_normal((5, D))
    dense = np.zeros((4, 5))
    for u, m in enumerate(members):
        dense[u, m] = sets.scale[u]
    np.testing.assert_allclose(implicit_offsets(sets, Y), dense @ Y)


def _problem(seed=1, n_users=6, n_items=5):
    """A small model with every quantity but Y fixed, and the dense Gaussian of Y given them
    with the user rows ``(U_u + o_u, b_u)`` integrated out, computed independently."""
    rng = np.random.default_rng(seed)
    dim = D + 1
    mask = rng.random((n_users, n_items)) < 0.6
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    users, items = np.nonzero(mask)
    values = rng.normal(3.0, 1.0, len(users))
    V = rng.standard_normal((n_items, D))
    item_bias = 0.3 * rng.standard_normal(n_items)
    mu, tau = 3.1, 1.7
    root = rng.standard_normal((dim, dim))
    prior_prec = root @ root.T + dim * np.eye(dim)  # correlated factors and bias
    base_mean = 0.5 * rng.standard_normal((n_users, dim))
    extra = (rng.integers(0, n_users, 4), rng.integers(0, n_items, 4))
    sets = implicit_sets(users, items, n_users, n_items, extra)
    y_prec = np.array([2.0, 0.7])
    # dense: o = B vec(Y); y_u - X_u m_u ~ N(X_u E B_u vec(Y), X_u P0^-1 X_u^T + I / tau)
    Q = np.diag(np.tile(y_prec, n_items))
    h = np.zeros(n_items * D)
    X = np.column_stack([V, np.ones(n_items)])
    cov0 = np.linalg.inv(prior_prec)
    for u in range(n_users):
        rated = users == u
        Xu = X[items[rated]]
        target = values[rated] - mu - item_bias[items[rated]] - Xu @ base_mean[u]
        B = np.zeros((D, n_items * D))
        for j in sets.user_items[sets.user_indptr[u] : sets.user_indptr[u + 1]]:
            B[:, j * D : (j + 1) * D] = sets.scale[u] * np.eye(D)
        design = Xu[:, :D] @ B
        C = np.linalg.inv(Xu @ cov0 @ Xu.T + np.eye(len(Xu)) / tau)
        Q += design.T @ C @ design
        h += design.T @ C @ target
    problem = dict(
        csr=csr_pair(users, items, values, n_users, n_items)[0], X=X, shift=mu + item_bias,
        tau=tau, prior_prec=prior_prec, base_mean=base_mean, sets=sets, y_prec=y_prec,
    )
    return problem, np.linalg.solve(Q, h), np.linalg.inv(Q)


def _terms(p, Y):
    mean = p["base_mean"].copy()
    mean[:, :D] += implicit_offsets(p["sets"], Y)
    n_users = mean.shape[0]
    P, G = np.empty((n_users, D, D)), np.empty((n_users, D))
    user_terms(*p["csr"], p["X"], p["shift"], p["tau"], p["prior_prec"], mean, P, G)
    return P, G


def _sweep(p, P, G, Y, z):
    s = p["sets"]
    sweep_implicit(s.item_indptr, s.item_users, s.scale, P, G, Y, p["y_prec"], z)


def test_noise_free_sweeps_reach_the_closed_form_mean_and_keep_their_gradients():
    p, mean, _ = _problem()
    Y = np.random.default_rng(2).standard_normal((5, D))
    P, G = _terms(p, Y)
    for _ in range(300):  # Gauss-Seidel on the conditional's precision: converges to its mean
        _sweep(p, P, G, Y, np.zeros_like(Y))
    np.testing.assert_allclose(Y.ravel(), mean, rtol=1e-8, atol=1e-10)
    # the gradients updated along the way are those of the new Y
    P_new, G_new = _terms(p, Y)
    np.testing.assert_allclose(G, G_new, atol=1e-10)
    np.testing.assert_allclose(P, P_new, atol=1e-12)
    # at the mean the log density's gradient in each Y_j vanishes
    s = p["sets"]
    for j in range(5):
        members = s.item_users[s.item_indptr[j] : s.item_indptr[j + 1]]
        gradient = (s.scale[members, None] * G_new[members]).sum(0) - p["y_prec"] * Y[j]
        np.testing.assert_allclose(gradient, 0.0, atol=1e-9)


def test_sweeps_draw_from_the_closed_form_conditional():
    """First and second moments of the draws against the dense Gaussian, |z| < 4 (ArviZ MCSE)."""
    p, mean, cov = _problem(seed=5)
    rng = np.random.default_rng(6)
    Y = np.zeros((5, D))
    P, G = _terms(p, Y)
    draws = np.empty((4000, 5 * D))
    for t in range(len(draws)):
        _sweep(p, P, G, Y, rng.standard_normal(Y.shape))
        draws[t] = Y.ravel()
    k = np.triu_indices(5 * D)
    second = np.einsum("ta,tb->tab", draws - mean, draws - mean)[:, k[0], k[1]]
    for series, truth in ((draws, mean), (second, cov[k])):
        estimate = series.mean(0)
        z = (estimate - truth) / _mcse(series)
        assert np.abs(z).max() < 4.0, np.abs(z).max()


def _given_rows_problem(seed=3, n_users=7, n_items=5, centered=False):
    """Fixed effective rows ``W`` and biases; the dense Gaussian of ``vec(Y)`` given them:
    ``(W_u - m_u - B_u vec(Y), e_u) ~ N(0, P0^-1)`` per user, ``Y ~ N(0, diag(1 / y_prec))``;
    centred, ``B_u`` holds ``s_u [j in N(u)] - w_j`` (every user sees every ``Y_j``)."""
    rng = np.random.default_rng(seed)
    dim = D + 1
    users = rng.integers(0, n_users, 20)
    items = rng.integers(0, n_items, 20)
    sets = implicit_sets(users, items, n_users, n_items)
    weights = centring_weights(sets) if centered else np.empty(0)
    root = rng.standard_normal((dim, dim))
    prior_prec = root @ root.T + dim * np.eye(dim)
    W = rng.standard_normal((n_users, D))
    base_mean = 0.4 * rng.standard_normal((n_users, D))
    bias_res = 0.5 * rng.standard_normal(n_users)
    y_prec = np.array([1.5, 0.6])
    Q = np.diag(np.tile(y_prec, n_items))
    h = np.zeros(n_items * D)
    for u in range(n_users):
        B = np.zeros((D, n_items * D))
        for j in sets.user_items[sets.user_indptr[u] : sets.user_indptr[u + 1]]:
            B[:, j * D : (j + 1) * D] = sets.scale[u] * np.eye(D)
        if centered:
            B -= np.kron(weights, np.eye(D))
        a = np.append(W[u] - base_mean[u], bias_res[u])
        Q += B.T @ prior_prec[:D, :D] @ B
        h += B.T @ (prior_prec @ a)[:D]
    problem = dict(sets=sets, prior_prec=prior_prec, W=W, base_mean=base_mean,
                   bias_res=bias_res, y_prec=y_prec, weights=weights)
    return problem, np.linalg.solve(Q, h), np.linalg.inv(Q)


def _offsets(p, Y):
    offsets = implicit_offsets(p["sets"], Y)
    return offsets - p["weights"] @ Y if len(p["weights"]) else offsets


def _sweep_given_rows(p, Y, z):
    s = p["sets"]
    residuals = p["W"] - p["base_mean"] - _offsets(p, Y)
    sweep_implicit_given_rows(s.item_indptr, s.item_users, s.scale, residuals, p["bias_res"],
                              p["prior_prec"], Y, p["y_prec"], z, p["weights"])
    # the kernel kept the residuals those of the new Y
    np.testing.assert_allclose(residuals, p["W"] - p["base_mean"] - _offsets(p, Y), atol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
def test_given_rows_noise_free_sweeps_reach_the_closed_form_mean(centered):
    p, mean, _ = _given_rows_problem(centered=centered)
    Y = np.random.default_rng(4).standard_normal((5, D))
    for _ in range(400):
        _sweep_given_rows(p, Y, np.zeros_like(Y))
    np.testing.assert_allclose(Y.ravel(), mean, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("centered", [False, True])
def test_given_rows_sweeps_draw_from_the_closed_form_conditional(centered):
    """First and second moments of the draws against the dense Gaussian, |z| < 4 (ArviZ MCSE)."""
    p, mean, cov = _given_rows_problem(seed=8, centered=centered)
    rng = np.random.default_rng(9)
    Y = np.zeros((5, D))
    draws = np.empty((4000, 5 * D))
    for t in range(len(draws)):
        _sweep_given_rows(p, Y, rng.standard_normal(Y.shape))
        draws[t] = Y.ravel()
    k = np.triu_indices(5 * D)
    second = np.einsum("ta,tb->tab", draws - mean, draws - mean)[:, k[0], k[1]]
    for series, truth in ((draws, mean), (second, cov[k])):
        z = (series.mean(0) - truth) / _mcse(series)
        assert np.abs(z).max() < 4.0, np.abs(z).max()


def _state(rng, n_users, n_items, dim=D + 1):
    root = rng.standard_normal((dim, dim))
    return {
        "U": rng.standard_normal((n_users, D)), "V": rng.standard_normal((n_items, D)),
        "user_bias": rng.standard_normal(n_users), "item_bias": rng.standard_normal(n_items),
        "row_precision_U": root @ root.T + dim * np.eye(dim),
        "row_precision_V": root.T @ root + dim * np.eye(dim),
        "Lambda_U": np.eye(D), "Lambda_V": np.eye(D),
        "mu_U": np.zeros(D), "mu_V": np.zeros(D), "mu": 3.0, "tau": 2.0,
    }


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("side", ["U", "V"])
def test_given_rows_step_and_shift_keep_the_effective_rows(side, centered):
    """The likelihood sees only ``rows + offset``: the step and the common shift move the
    implicit factors and the rows together and leave it; the offsets match the factors
    (centred: the plain sums less their mean over the rows, which is recorded)."""
    rng = np.random.default_rng(11)
    users, items = rng.integers(0, 9, 40), rng.integers(0, 6, 40)
    codes = (users, items, 9, 6) if side == "U" else (items, users, 6, 9)
    sets = implicit_sets(*codes)
    state = _state(rng, 9, 6)
    step = ImplicitStep(sets, D, 1.0, True, side, centered=centered)
    step.start(state, rng)
    step.step(state, None, rng)  # the rows method reads no ratings
    for _ in range(3):
        effective = state[side] + state[f"offset_{side}"]
        step.step(state, None, rng)
        np.testing.assert_allclose(state[side] + state[f"offset_{side}"], effective, atol=1e-12)
        plain = implicit_offsets(sets, state["Y" if side == "U" else "Z"])
        mean = state[f"offset_mean_{side}"]
        np.testing.assert_allclose(state[f"offset_{side}"], plain - mean, atol=1e-12)
        if centered:
            np.testing.assert_allclose(mean, plain.mean(axis=0), atol=1e-12)
        else:
            np.testing.assert_array_equal(mean, 0.0)
    with pytest.raises(ValueError, match="'rows' step only"):
        ImplicitStep(sets, D, 1.0, True, side, method="collapsed", centered=True)


@pytest.mark.parametrize("centered", [False, True])
def test_common_shift_draws_its_gaussian_conditional(centered):
    """The shift ``e`` of :meth:`ImplicitStep.translate` against its closed form: the log
    density of the priors along ``Y + e``, ``U - sqrt(n) e`` (centred: ``U - (sqrt(n) -
    mean sqrt(n)) e``) is quadratic in ``e``; the mean of many draws from one state matches
    its maximiser (|z| < 4)."""
    rng = np.random.default_rng(12)
    users, items = rng.integers(0, 9, 40), rng.integers(0, 6, 40)
    sets = implicit_sets(users, items, 9, 6)
    state = _state(rng, 9, 6)
    step = ImplicitStep(sets, D, 1.0, True, "U", centered=centered)
    step.start(state, rng)
    state["Y"] = rng.standard_normal((6, D))
    state["Y_sd"] = np.array([0.8, 1.3])
    state["offset_U"] = step.offsets(state, state["Y"])
    root = np.sqrt(np.diff(sets.user_indptr))
    if centered:
        root = root - root.mean()

    def log_density(e):
        Y = state["Y"] + e
        r = np.column_stack([state["U"] - np.outer(root, e), state["user_bias"]])
        prior = -0.5 * np.einsum("ua,ab,ub->", r, state["row_precision_U"], r)
        return prior - 0.5 * np.sum(Y**2 / state["Y_sd"] ** 2)

    # the quadratic's maximiser from its Hessian and gradient at 0 (finite differences)
    eps = 1e-4
    basis = np.eye(D) * eps
    grad = np.array([(log_density(b) - log_density(-b)) / (2 * eps) for b in basis])
    hess = np.array([[(log_density(a + b) - log_density(a - b) - log_density(b - a)
                       + log_density(-a - b)) / (4 * eps**2) for b in basis] for a in basis])
    mode = np.linalg.solve(-hess, grad)
    shifts = np.empty((3000, D))
    for t in range(len(shifts)):
        trial = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
        step.translate(trial, rng)
        shifts[t] = trial["Y"][0] - state["Y"][0]
        np.testing.assert_allclose(trial["U"] + trial["offset_U"],
                                   state["U"] + state["offset_U"], atol=1e-12)
        np.testing.assert_allclose(trial["offset_U"], step.offsets({}, trial["Y"]), atol=1e-12)
    z = (shifts.mean(0) - mode) / (shifts.std(0) / np.sqrt(len(shifts)))
    assert np.abs(z).max() < 4.0, z
    cov = np.linalg.inv(-hess)  # entries near zero get a tolerance on the variances' scale
    np.testing.assert_allclose(np.cov(shifts.T), cov, rtol=0.1, atol=0.02 * np.abs(cov).max())


@pytest.mark.parametrize("c", [1.0, 7.0])
def test_tilted_rescaling_density(c):
    """Repeated slice updates of x (each from t = 0 about the current x, as the move runs)
    keep exp(-a e^{2x} - b e^{-2x} + c x): its mean and variance, |z| < 4."""
    a0, b0 = 0.8, 2.5
    rng = np.random.default_rng(int(c))
    x, xs = 0.0, np.empty(6000)
    for t in range(len(xs)):
        a = np.array([a0 * np.exp(2 * x)])
        b = np.array([b0 * np.exp(-2 * x)])
        x += slice_log_scales(a, b, rng.random((1, 32)), np.array([c]))[0]
        xs[t] = x

    def density(x):
        return np.exp(-a0 * np.exp(2 * x) - b0 * np.exp(-2 * x) + c * x)

    norm = integrate.quad(density, -10, 10)[0]
    m1 = integrate.quad(lambda x: x * density(x), -10, 10)[0] / norm
    m2 = integrate.quad(lambda x: (x - m1) ** 2 * density(x), -10, 10)[0] / norm
    for series, truth in ((xs, m1), ((xs - m1) ** 2, m2)):
        z = (series.mean() - truth) / _mcse(series[:, None])[0]
        assert abs(z) < 4.0, z
