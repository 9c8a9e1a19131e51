"""The fused Gaussian likelihood Op equals the plain PyMC graph, value and gradient, everywhere."""

import importlib.util

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad
from scipy import stats

from bpmf.kernels.likelihood import GaussianPairLogp, gaussian_pair_logp

HAS_JAX = importlib.util.find_spec("jax") is not None
JAX = pytest.param("JAX", marks=pytest.mark.skipif(not HAS_JAX, reason="no jax"))
MODES = [
    "FAST_COMPILE",  # Python linker: the numpy perform
    "FAST_RUN",  # C backend
    "NUMBA",
    JAX,
]
RAISING_MODES = ["FAST_COMPILE", "FAST_RUN", "NUMBA"]
PARAMS = ("mu", "U", "V", "user_bias", "item_bias", "sigma")


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    n_users, n_items, n_factors, n_pairs = 9, 7, 3, 45
    return {
        "ratings": rng.normal(3.0, 1.5, n_pairs),
        "mu": 2.7,
        "U": rng.normal(size=(n_users, n_factors)),
        "V": rng.normal(size=(n_items, n_factors)),
        "user_bias": rng.normal(0, 0.5, n_users),
        "item_bias": rng.normal(0, 0.5, n_items),
        "sigma": 1.3,
        "u": rng.integers(0, n_users, n_pairs),
        "i": rng.integers(0, n_items, n_pairs),
    }


def _symbols():
    return {
        "mu": pt.dscalar("mu"),
        "U": pt.dmatrix("U"),
        "V": pt.dmatrix("V"),
        "user_bias": pt.dvector("user_bias"),
        "item_bias": pt.dvector("item_bias"),
        "sigma": pt.dscalar("sigma"),
    }


def _plain_logp(problem, s, biases):
    """The reference: PyMC's Normal log-density summed over a plain-indexing mean."""
    u, i = problem["u"], problem["i"]
    mean = s["mu"] + (s["U"][u] * s["V"][i]).sum(-1)
    if biases:
        mean = mean + s["user_bias"][u] + s["item_bias"][i]
    return pm.logp(pm.Normal.dist(mean, s["sigma"]), problem["ratings"]).sum()


def _fused_logp(problem, s, biases):
    return gaussian_pair_logp(
        problem["ratings"],
        s["mu"],
        s["U"],
        s["V"],
        s["user_bias"] if biases else None,
        s["item_bias"] if biases else None,
        s["sigma"],
        problem["u"],
        problem["i"],
    )


def _value_and_grads(build, problem, biases, mode):
    s = _symbols()
    wrt = [s[name] for name in PARAMS if biases or "bias" not in name]
    logp = build(problem, s, biases)
    fn = pytensor.function(wrt, [logp, *pytensor.grad(logp, wrt)], mode=mode)
    return [
        np.asarray(x)
        for x in fn(*(problem[name] for name in PARAMS if biases or "bias" not in name))
    ]


@pytest.mark.parametrize("biases", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_value_and_gradients_match_plain_pymc_graph(problem, mode, biases):
    fused = _value_and_grads(_fused_logp, problem, biases, mode)
    plain = _value_and_grads(_plain_logp, problem, biases, "FAST_COMPILE")
    for got, expected in zip(fused, plain, strict=True):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # the value, independently of PyTensor
    mean = problem["mu"] + np.einsum(
        "nk,nk->n", problem["U"][problem["u"]], problem["V"][problem["i"]]
    )
    if biases:
        mean += problem["user_bias"][problem["u"]] + problem["item_bias"][problem["i"]]
    expected = stats.norm.logpdf(problem["ratings"], mean, problem["sigma"]).sum()
    np.testing.assert_allclose(fused[0], expected, rtol=1e-12)


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_value_and_gradient_cost_one_node(problem, mode):
    s = _symbols()
    logp = _fused_logp(problem, s, True)
    wrt = [s[name] for name in PARAMS]
    fn = pytensor.function(wrt, [logp, *pytensor.grad(logp, wrt)], mode=mode)
    fused_nodes = [n for n in fn.maker.fgraph.apply_nodes if isinstance(n.op, GaussianPairLogp)]
    assert len(fused_nodes) == 1


def test_verify_grad_finite_differences(problem):
    u, i = problem["u"], problem["i"]
    rng = np.random.default_rng(3)
    names = ("ratings", *PARAMS)
    verify_grad(
        lambda r, mu, U, V, b, c, sigma: gaussian_pair_logp(r, mu, U, V, b, c, sigma, u, i),
        [np.asarray(problem[name], dtype="float64") for name in names],
        rng=rng,
        mode="FAST_COMPILE",
    )
    verify_grad(
        lambda mu, U, V, sigma: gaussian_pair_logp(
            problem["ratings"], mu, U, V, None, None, sigma, u, i
        ),
        [np.asarray(problem[name], dtype="float64") for name in ("mu", "U", "V", "sigma")],
        rng=rng,
        mode="FAST_COMPILE",
    )


def _small_model(problem, fused, biases):
    n_users, n_factors = problem["U"].shape
    n_items = problem["V"].shape[0]
    u, i = problem["u"], problem["i"]
    with pm.Model() as model:
        ratings = pm.Data("ratings", problem["ratings"])
        U = pm.Normal("U", 0, 1, shape=(n_users, n_factors))
        V = pm.Normal("V", 0, 1, shape=(n_items, n_factors))
        mu = pm.Normal("mu", 3, 1)
        sigma = pm.HalfNormal("sigma", 1)
        b = pm.Normal("user_bias", 0, 0.5, shape=n_users) if biases else None
        c = pm.Normal("item_bias", 0, 0.5, shape=n_items) if biases else None
        if fused:
            pm.Potential("rating", gaussian_pair_logp(ratings, mu, U, V, b, c, sigma, u, i))
        else:
            mean = mu + (U[u] * V[i]).sum(-1)
            if biases:
                mean = mean + b[u] + c[i]
            pm.Normal("rating", mean, sigma, observed=ratings)
    return model


@pytest.mark.parametrize("biases", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_pymc_potential_matches_observed_normal(problem, biases):
    fused = _small_model(problem, fused=True, biases=biases)
    plain = _small_model(problem, fused=False, biases=biases)
    logp_f, logp_p = fused.compile_logp(), plain.compile_logp()
    dlogp_f, dlogp_p = fused.compile_dlogp(), plain.compile_dlogp()
    rng = np.random.default_rng(11)
    for _ in range(3):
        point = {
            name: value + rng.normal(0, 0.5, np.shape(value))
            for name, value in plain.initial_point().items()
        }
        np.testing.assert_allclose(logp_f(point), logp_p(point), rtol=1e-10)
        np.testing.assert_allclose(dlogp_f(point), dlogp_p(point), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_out_of_range_codes(problem, mode):
    U, V = pt.dmatrix("U"), pt.dmatrix("V")
    codes = pt.lvector("codes")
    logp = gaussian_pair_logp(np.ones(2), 0.0, U, V, None, None, 1.0, codes, codes)
    fn = pytensor.function([U, V, codes], [logp, *pytensor.grad(logp, [U, V])], mode=mode)
    assert np.isfinite(fn(problem["U"], problem["V"], np.array([0, 1]))[0])
    for bad in ([0, 100], [0, -1]):
        if mode == "JAX":
            # a jitted function cannot raise on values: every output becomes NaN instead
            assert all(np.isnan(x).all() for x in fn(problem["U"], problem["V"], np.array(bad)))
        else:
            with pytest.raises(IndexError, match="out of range"):
                fn(problem["U"], problem["V"], np.array(bad))


def test_out_of_range_constant_codes_fail_when_building(problem):
    U = pt.tensor("U", shape=(3, 2), dtype="float64")
    V = pt.dmatrix("V")
    with pytest.raises(IndexError, match="user code out of range"):
        gaussian_pair_logp(np.ones(2), 0.0, U, V, None, None, 1.0, np.array([0, 3]), [0, 0])
    with pytest.raises(IndexError, match="item code out of range"):
        gaussian_pair_logp(np.ones(2), 0.0, U, V, None, None, 1.0, [0, 1], np.array([0, -2]))


@pytest.mark.parametrize("mode", RAISING_MODES)
def test_wrong_shapes_raise_value_error(problem, mode):
    s = _symbols()
    ratings, codes_u, codes_i = pt.dvector("r"), pt.lvector("u"), pt.lvector("i")
    logp = gaussian_pair_logp(
        ratings,
        s["mu"],
        s["U"],
        s["V"],
        s["user_bias"],
        s["item_bias"],
        s["sigma"],
        codes_u,
        codes_i,
    )
    fn = pytensor.function(
        [ratings, *(s[name] for name in PARAMS), codes_u, codes_i], logp, mode=mode
    )
    good = dict(problem, ratings=problem["ratings"])
    args = [good[name] for name in ("ratings", *PARAMS, "u", "i")]

    def call(**changes):
        values = dict(zip(("ratings", *PARAMS, "u", "i"), args, strict=True)) | changes
        return fn(*values.values())

    assert np.isfinite(call())
    with pytest.raises(ValueError, match="differ in length|one code of each"):
        call(ratings=problem["ratings"][:-1])
    with pytest.raises(ValueError, match="columns"):
        call(V=problem["V"][:, :-1])
    with pytest.raises(ValueError, match="user_bias"):
        call(user_bias=problem["user_bias"][:-1])


def test_bad_arguments_are_rejected_when_building(problem):
    s = _symbols()
    u, i = problem["u"], problem["i"]
    with pytest.raises(ValueError, match="both user_bias and item_bias"):
        gaussian_pair_logp(problem["ratings"], 0.0, s["U"], s["V"], s["user_bias"], None, 1.0, u, i)
    with pytest.raises(ValueError, match="sigma must have 0"):
        gaussian_pair_logp(problem["ratings"], 0.0, s["U"], s["V"], None, None, np.ones(2), u, i)
    with pytest.raises(ValueError, match="U must have 2"):
        gaussian_pair_logp(problem["ratings"], 0.0, s["user_bias"], s["V"], None, None, 1.0, u, i)
    with pytest.raises(TypeError, match="integers"):
        gaussian_pair_logp(problem["ratings"], 0.0, s["U"], s["V"], None, None, 1.0, u * 1.0, i)
    with pytest.raises(TypeError, match="takes 9 inputs"):
        GaussianPairLogp(biases=True)(problem["ratings"], 0.0, s["U"], s["V"], 1.0, u, i)


def test_second_derivative_raises_not_implemented(problem):
    s = _symbols()
    logp = _fused_logp(problem, s, True)
    g_U = pytensor.grad(logp, s["U"])
    with pytest.raises(NotImplementedError, match="second derivatives"):
        pytensor.grad(g_U.sum(), s["V"])


@pytest.mark.parametrize("mode", MODES)
def test_nonpositive_sigma_gives_minus_infinity(problem, mode):
    s = _symbols()
    logp = _fused_logp(problem, s, True)
    wrt = [s[name] for name in PARAMS]
    fn = pytensor.function(wrt, [logp, *pytensor.grad(logp, wrt)], mode=mode)
    for sigma in (0.0, -1.0):
        logp_value, *grads = fn(*(problem[name] for name in PARAMS[:-1]), sigma)
        assert logp_value == -np.inf
        for grad in grads:
            np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_strided_and_float32_inputs(problem, mode):
    """Transposed factor matrices and float32 parameters give the float64 answer."""
    Ut, Vt = pt.dmatrix("Ut"), pt.matrix("Vt", dtype="float32")
    b32 = pt.vector("b", dtype="float32")
    logp = gaussian_pair_logp(
        problem["ratings"],
        2.7,
        Ut.T,
        Vt.T,
        b32,
        problem["item_bias"],
        1.3,
        problem["u"],
        problem["i"],
    )
    assert logp.dtype == "float64"
    fn = pytensor.function([Ut, Vt, b32], [logp, pytensor.grad(logp, Ut)], mode=mode)
    V32 = problem["V"].astype("float32")
    b_32 = problem["user_bias"].astype("float32")
    got_logp, got_gUt = fn(problem["U"].T.copy(), V32.T.copy(), b_32)
    exact = dict(problem, V=V32.astype("float64"), user_bias=b_32.astype("float64"))
    expected = _value_and_grads(_plain_logp, exact, True, "FAST_COMPILE")
    np.testing.assert_allclose(got_logp, expected[0], rtol=1e-10)
    np.testing.assert_allclose(got_gUt, expected[2].T, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("nutpie") is None, reason="no nutpie")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_nutpie_samples_the_potential_and_recovers_the_noise():
    """nutpie (numba backend) runs NUTS on the fused likelihood and recovers the noise sd."""
    from bpmf.datasets import make_synthetic_ratings

    train, truth = make_synthetic_ratings(
        n_users=40, n_items=30, n_factors=2, density=0.4, noise_sd=0.3, random_state=0
    )
    u, i = train.user_codes, train.item_codes
    with pm.Model():
        U = pm.Normal("U", 0, 1, shape=(train.n_users, 2))
        V = pm.Normal("V", 0, 1, shape=(train.n_items, 2))
        mu = pm.Normal("mu", float(train.values.mean()), 1)
        b = pm.Normal("user_bias", 0, 1, shape=train.n_users)
        c = pm.Normal("item_bias", 0, 1, shape=train.n_items)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Potential("rating", gaussian_pair_logp(train.values, mu, U, V, b, c, sigma, u, i))
        idata = pm.sample(
            draws=200,
            tune=300,
            chains=1,
            nuts_sampler="nutpie",
            random_seed=1,
            progressbar=False,
            compute_convergence_checks=False,
        )
    sigma_draws = np.asarray(idata.posterior["sigma"]).ravel()
    # a wrong gradient would not find the 0.3 noise level (the ratings' sd is about 1.4)
    assert 0.2 < np.median(sigma_draws) < 0.4, (np.median(sigma_draws), truth.noise_sd)


@pytest.mark.parametrize("biases", [True, False])
def test_numba_kernel_for_a_static_number_of_factors(problem, biases):
    """Factor matrices whose type knows the number of columns get the numba row kernel."""
    got = _static_value_and_grads(problem, biases, "NUMBA")
    plain = _value_and_grads(_plain_logp, problem, biases, "FAST_COMPILE")
    for value, expected in zip(got, plain, strict=True):
        np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-10)


def test_infer_shape_gives_the_gradient_shapes_without_running_the_op(problem):
    s = _symbols()
    logp = _fused_logp(problem, s, True)
    wrt = [s[name] for name in PARAMS]
    grads = [logp, *pytensor.grad(logp, wrt)]
    fn = pytensor.function(wrt, [g.shape for g in grads], mode="FAST_RUN")
    assert not any(isinstance(n.op, GaussianPairLogp) for n in fn.maker.fgraph.apply_nodes)
    values = [problem[name] for name in PARAMS]
    got = [tuple(shape) for shape in fn(*values)]
    assert got == [(), *(np.shape(value) for value in values)]


def test_numba_prefetching_loop_for_large_factor_matrices():
    """Factor matrices beyond the L2 cache take the numba loop's prefetching branch."""
    from bpmf.kernels.order import CACHE_BYTES as _CACHE_BYTES

    large = _random_problem(3, 5000, 3000, 10, 20000, runs=False)
    assert (5000 + 3000) * 10 * 8 > _CACHE_BYTES
    fused = _value_and_grads(_fused_logp, large, True, "NUMBA")
    reference = _value_and_grads(_fused_logp, large, True, "FAST_COMPILE")  # numpy perform
    for got, expected in zip(fused, reference, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def _static_value_and_grads(problem, biases, mode):
    """Value and gradients with factor matrices whose type knows the number of columns."""
    n_factors = problem["U"].shape[1]
    s = _symbols()
    s["U"] = pt.tensor("U", shape=(None, n_factors), dtype="float64")
    s["V"] = pt.tensor("V", shape=(None, n_factors), dtype="float64")
    wrt = [s[name] for name in PARAMS if biases or "bias" not in name]
    logp = _fused_logp(problem, s, biases)
    fn = pytensor.function(wrt, [logp, *pytensor.grad(logp, wrt)], mode=mode)
    return fn(*(problem[name] for name in PARAMS if biases or "bias" not in name))


def _random_problem(seed, n_users, n_items, n_factors, n_pairs, runs):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_users, n_pairs)
    i = rng.integers(0, n_items, n_pairs)
    if runs:  # the order rating_likelihood uses: runs of one user
        from bpmf.kernels.order import user_run_order

        order = user_run_order(u, i, n_users, n_items, n_factors=n_factors)
        u, i = u[order], i[order]
    return {
        "ratings": rng.normal(3.0, 1.0, n_pairs),
        "mu": 3.1,
        "U": rng.normal(0, 0.3, (n_users, n_factors)),
        "V": rng.normal(0, 0.3, (n_items, n_factors)),
        "user_bias": rng.normal(0, 0.2, n_users),
        "item_bias": rng.normal(0, 0.2, n_items),
        "sigma": 0.9,
        "u": u,
        "i": i,
    }


@pytest.mark.parametrize("biases", [True, False])
@pytest.mark.parametrize("n_factors", [1, 2, 10, 13])
@pytest.mark.parametrize("runs", [True, False], ids=["user-runs", "random-order"])
def test_numba_row_kernel_any_width_and_order(n_factors, biases, runs):
    """The SIMD row kernel (static factor count, padded rows, user runs in registers) equals
    the numpy perform for widths that pad to 4, 8 and 16 columns, in any pair order."""
    problem = _random_problem(11 + n_factors, 40, 30, n_factors, 600, runs)
    got = _static_value_and_grads(problem, biases, "NUMBA")
    reference = _value_and_grads(_fused_logp, problem, biases, "FAST_COMPILE")
    for value, expected in zip(got, reference, strict=True):
        np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-10)


def test_numba_row_kernel_prefetching_branch():
    """Padded factor rows beyond the L2 cache take the row kernel's prefetching branch."""
    from bpmf.kernels.order import CACHE_BYTES as _CACHE_BYTES

    problem = _random_problem(5, 5000, 3000, 10, 20000, runs=True)
    assert (5000 + 3000) * 12 * 8 > _CACHE_BYTES
    got = _static_value_and_grads(problem, True, "NUMBA")
    reference = _value_and_grads(_fused_logp, problem, True, "FAST_COMPILE")
    for value, expected in zip(got, reference, strict=True):
        np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("side", ["u", "i"])
def test_numba_row_kernel_rejects_out_of_range_codes(side):
    problem = _random_problem(2, 6, 5, 4, 30, runs=False)
    problem[side] = problem[side].copy()
    problem[side][17] = 6 if side == "u" else -1
    with pytest.raises(IndexError, match="out of range"):
        _static_value_and_grads(problem, True, "NUMBA")


def test_numba_cache_key_follows_the_kernel_source(monkeypatch):
    """PyTensor's numba cache keys on the Op and our integer only: an edit of the kernels'
    source must change the integer, or the old compiled code would be served."""
    import inspect

    from bpmf.kernels import likelihood as _likelihood

    key = _likelihood._kernel_source_key()
    assert key == _likelihood._kernel_source_key() and key > 0
    real_getsource = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real_getsource(obj) + "# edited\n")
    _likelihood._kernel_source_key.cache_clear()
    try:
        assert _likelihood._kernel_source_key() != key
    finally:
        _likelihood._kernel_source_key.cache_clear()
