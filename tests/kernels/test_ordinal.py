"""The ordered-probit kernels: stable log-probabilities, truncated normals, the fused Op."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import special, stats

from bpmf.kernels.ordinal import (
    OrderedProbitPairLogp,
    cutpoint_loglik,
    cutpoint_loglik_curvature,
    draw_latents,
    log_ndtr,
    log_prob_between,
    pair_logp_and_grads,
    pointwise_loglik,
)


def _reference_log_prob(a, b):
    """log(Phi(b) - Phi(a)) from scipy's log_ndtr, on the side where it does not cancel."""
    if b <= 0:
        la, lb = special.log_ndtr(a), special.log_ndtr(b)
    else:
        la, lb = special.log_ndtr(-b), special.log_ndtr(-a)
    return lb + np.log(-np.expm1(la - lb))


@pytest.mark.parametrize("x", [-1e4, -200.0, -40.0, -30.5, -29.5, -8.0, -1.0, 0.0, 0.7, 6.0, 40.0])
def test_log_ndtr_matches_scipy_into_the_far_tail(x):
    assert log_ndtr(x) == pytest.approx(special.log_ndtr(x), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize(
    ("a", "b"),
    [(-np.inf, -60.0), (-61.0, -60.0), (-1.0, 0.5), (0.5, 1.0), (30.0, 30.1), (-0.1, 1e-3),
     (2.0, np.inf), (-np.inf, np.inf), (-3.0, -2.999999)],
)
def test_log_prob_between_is_accurate_in_both_tails(a, b):
    expected = _reference_log_prob(a, b)
    assert log_prob_between(a, b) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("a", "b"),
    [(-np.inf, np.inf), (-0.5, 0.3), (-3.0, 3.0), (0.2, 0.4), (0.0, 5.0), (8.0, 8.5),
     (8.0, np.inf), (-np.inf, -20.0), (-1.2, np.inf), (3.0, 3.01), (-40.0, -39.0)],
)
def test_truncated_normal_draws_follow_the_truncated_law(a, b):
    rng = np.random.default_rng(7)
    n = 20_000
    eta = np.full(n, 0.3)
    draws = np.empty(n)
    draw_latents(eta, np.zeros(n, dtype=np.int64), np.array([a + 0.3, b + 0.3]), rng, draws)
    standard = draws - 0.3
    assert np.all((standard > a) & (standard < b))
    # a KS test on the CDF transform; truncnorm's own CDF loses digits far out, so use
    # log-space differences there
    log_mass = _reference_log_prob(a, b)
    cdf = np.exp([_reference_log_prob(a, x) - log_mass if x > a else -np.inf for x in standard])
    assert stats.kstest(cdf, "uniform").pvalue > 1e-3


def test_latents_reproducible_from_the_generator():
    eta = np.linspace(-2, 2, 100)
    cuts = np.array([-np.inf, -0.5, 0.5, np.inf])
    categories = np.arange(100) % 3
    first, second = np.empty(100), np.empty(100)
    draw_latents(eta, categories, cuts, np.random.default_rng(3), first)
    draw_latents(eta, categories, cuts, np.random.default_rng(3), second)
    np.testing.assert_array_equal(first, second)
    assert np.all((first > cuts[categories]) & (first <= cuts[categories + 1]))


def _problem(seed=0, n_users=7, n_items=5, n_factors=3, n_pairs=40, n_cuts=3):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_pairs)
    items = rng.integers(0, n_items, n_pairs)
    return dict(
        categories=rng.integers(0, n_cuts + 1, n_pairs),
        mu=np.asarray(0.2),
        U=rng.normal(0, 0.6, (n_users, n_factors)),
        V=rng.normal(0, 0.6, (n_items, n_factors)),
        user_bias=rng.normal(0, 0.3, n_users),
        item_bias=rng.normal(0, 0.3, n_items),
        cutpoints=np.sort(rng.normal(0, 1.0, n_cuts)) + np.arange(n_cuts) * 0.3,
        user_codes=users,
        item_codes=items,
    )


def _eta(p):
    return (
        p["mu"]
        + p["user_bias"][p["user_codes"]]
        + p["item_bias"][p["item_codes"]]
        + np.einsum("nk,nk->n", p["U"][p["user_codes"]], p["V"][p["item_codes"]])
    )


def test_pair_logp_matches_the_ordered_probit_density():
    p = _problem()
    eta = _eta(p)
    cuts = np.concatenate([[-np.inf], p["cutpoints"], [np.inf]])
    k = p["categories"]
    expected = np.sum(np.log(stats.norm.cdf(cuts[k + 1] - eta) - stats.norm.cdf(cuts[k] - eta)))
    logp = pair_logp_and_grads(*(p[name] if name != "mu" else float(p["mu"]) for name in p))[0]
    assert logp == pytest.approx(expected, rel=1e-12)
    assert cutpoint_loglik(eta, k, cuts) == pytest.approx(expected, rel=1e-12)
    pointwise = pointwise_loglik(eta[None, :], k, p["cutpoints"][None, :])
    assert pointwise.sum() == pytest.approx(expected, rel=1e-12)


def test_gradient_matches_finite_differences():
    p = _problem(seed=1)
    names = ["mu", "U", "V", "user_bias", "item_bias", "cutpoints"]

    def logp(values):
        args = {**p, **values}
        args["mu"] = float(args["mu"])
        return pair_logp_and_grads(*(args[n] for n in p))[0]

    base = {n: np.array(p[n], dtype=float) for n in names}
    grads = pair_logp_and_grads(*(float(p[n]) if n == "mu" else p[n] for n in p))[1:]
    h = 1e-6
    for name, grad in zip(names, grads, strict=True):
        flat = base[name].reshape(-1)
        for j in range(flat.size):
            up, down = flat.copy(), flat.copy()
            up[j] += h
            down[j] -= h
            numeric = (
                logp({name: up.reshape(base[name].shape)})
                - logp({name: down.reshape(base[name].shape)})
            ) / (2 * h)
            assert np.reshape(grad, -1)[j] == pytest.approx(numeric, rel=1e-5, abs=1e-6), name


def test_curvature_matches_finite_differences_of_the_gradient():
    p = _problem(seed=2, n_pairs=200, n_cuts=4)
    eta = _eta(p)
    k = p["categories"]

    def gradient(cutpoints):
        args = {**p, "cutpoints": cutpoints, "mu": float(p["mu"])}
        return pair_logp_and_grads(*(args[n] for n in p))[6]

    cuts = np.concatenate([[-np.inf], p["cutpoints"], [np.inf]])
    _, diagonal, off = cutpoint_loglik_curvature(eta, k, cuts)
    hessian = np.diag(diagonal) + np.diag(off, 1) + np.diag(off, -1)
    h = 1e-6
    numeric = np.empty_like(hessian)
    for j in range(len(p["cutpoints"])):
        step = np.zeros(len(p["cutpoints"]))
        step[j] = h
        numeric[:, j] = -(gradient(p["cutpoints"] + step) - gradient(p["cutpoints"] - step)) / (
            2 * h
        )
    np.testing.assert_allclose(hessian, numeric, rtol=1e-5, atol=1e-6)
    assert np.all(np.linalg.eigvalsh(hessian) > 0)


def test_unordered_cutpoints_give_minus_infinity():
    p = {**_problem(), "mu": 0.2}
    p["cutpoints"] = np.array([0.5, 0.2, 1.0])
    assert pair_logp_and_grads(*p.values())[0] == -np.inf


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_op_gradient_in_a_compiled_graph(mode):
    p = _problem(seed=3)
    inputs = {n: pt.as_tensor_variable(np.asarray(p[n], dtype=float)).type() for n in
              ("mu", "U", "V", "user_bias", "item_bias", "cutpoints")}
    logp = OrderedProbitPairLogp()(
        p["categories"], inputs["mu"], inputs["U"], inputs["V"], inputs["user_bias"],
        inputs["item_bias"], inputs["cutpoints"], p["user_codes"], p["item_codes"],
    )[0]
    grads = pytensor.grad(2.0 * logp, list(inputs.values()))
    fn = pytensor.function(list(inputs.values()), [logp, *grads], mode=mode)
    values = [np.asarray(p[n], dtype=float) for n in inputs]
    out = fn(*values)
    reference = pair_logp_and_grads(*(float(p[n]) if n == "mu" else p[n] for n in p))
    assert out[0] == pytest.approx(reference[0], rel=1e-12)
    for got, want in zip(out[1:], reference[1:], strict=True):
        np.testing.assert_allclose(got, 2.0 * np.asarray(want), rtol=1e-12, atol=1e-12)
