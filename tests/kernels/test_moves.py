"""The correlated prior's compiled translation moves against the generic numpy ones."""

import numpy as np


def test_compiled_shift_moves_match_the_generic_ones():
    """The correlated prior's compiled translation moves give the generic moves' state, from
    the same normals, to rounding."""
    from bpmf.datasets import make_synthetic_ratings
    from bpmf.inference import gibbs
    from bpmf.models import BPMF

    ratings = make_synthetic_ratings(40, 30, n_factors=2, density=0.4, random_state=0)[0]
    states = []
    original = gibbs._shift_moves

    def grab(state, hyper, biases, config, rng):
        states.append(({k: np.copy(v) for k, v in state.items()}, hyper, config))
        return original(state, hyper, biases, config, rng)

    try:
        gibbs._shift_moves = grab
        BPMF(3, random_state=0, progressbar=False,
             sampler_config={"chains": 1, "tune": 9, "draws": 3}).fit(ratings)
    finally:
        gibbs._shift_moves = original
    state, hyper, config = states[-1]
    assert hyper.name == "lkj-correlated"
    compiled = {k: np.copy(v) for k, v in state.items()}
    generic = {k: np.copy(v) for k, v in state.items()}
    original(compiled, hyper, True, config, np.random.default_rng(5))

    class Generic(type(hyper)):
        def shift_moves(self, state, config, rng):
            return False

    hyper.__class__ = Generic
    original(generic, hyper, True, config, np.random.default_rng(5))
    for name in ("U", "V", "user_bias", "item_bias", "mu"):
        np.testing.assert_allclose(compiled[name], generic[name], rtol=1e-12, atol=1e-12)
        assert not np.allclose(compiled[name], state[name])  # the moves moved them


def test_split_move_matches_its_numpy_form():
    """The compiled level-split move against the same move written with numpy, accepted and
    refused, from the same normals and uniform."""
    from bpmf.kernels.lkj import lkj_cholesky_prior_logp
    from bpmf.kernels.moves import split_move

    rng = np.random.default_rng(3)
    D, n_rows, n_partners = 3, 25, 40
    rows, own_bias = rng.normal(size=(n_rows, D)), rng.normal(size=n_rows)
    partner, partner_bias = rng.normal(size=(n_partners, D)), rng.normal(size=n_partners)
    chol = np.tril(rng.normal(size=(D + 1, D + 1)))
    np.fill_diagonal(chol, np.abs(np.diag(chol)) + 0.5)
    root = np.tril(rng.normal(size=(D + 1, D + 1))) + 2 * np.eye(D + 1)
    partner_precision = root @ root.T
    normals = rng.normal(size=D)
    # numpy: w ~ N(P^-1 h, P^-1) with P = n Lambda[:D, :D], h = Lambda[:D] . sums
    sums = np.append(partner.sum(0), partner_bias.sum())
    P = n_partners * partner_precision[:D, :D]
    L = np.linalg.cholesky(P)
    shift = np.linalg.solve(L.T, np.linalg.solve(L, partner_precision[:D] @ sums) + normals)
    proposal = chol.copy()
    proposal[D] += shift @ chol[:D]
    log_ratio = (lkj_cholesky_prior_logp(proposal, 2.0, 1.0, 0.5)
                 - lkj_cholesky_prior_logp(chol, 2.0, 1.0, 0.5))
    for uniform, accepted in ((min(0.999, 0.5 * np.exp(min(log_ratio, 0.0))), True),
                              (min(1.0, 2.0 * np.exp(log_ratio)) - 1e-12, False)):
        if not accepted and log_ratio >= 0:
            continue  # a move that always accepts cannot be refused
        args = [a.copy() for a in (rows, own_bias, partner, partner_bias)]
        got, took = split_move(*args, partner_precision, chol, 2.0, 1.0, 0.5, normals, uniform)
        assert took == accepted
        np.testing.assert_allclose(got, proposal, rtol=1e-12, atol=1e-12)
        if accepted:
            np.testing.assert_allclose(args[2], partner - shift, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(args[1], own_bias + rows @ shift, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_array_equal(args[2], partner)
            np.testing.assert_array_equal(args[1], own_bias)


def test_lkj_prior_logp_has_the_closed_form():
    from bpmf.kernels.lkj import lkj_cholesky_prior_logp

    rng = np.random.default_rng(4)
    dim, eta = 4, 1.7
    L = np.tril(rng.normal(size=(dim, dim)))
    np.fill_diagonal(L, np.abs(np.diag(L)) + 0.3)
    sd = np.sqrt((L**2).sum(1))
    scales = np.array([0.8, 0.8, 0.8, 0.4])
    k = np.arange(dim)
    expected = np.sum((2 * eta - 2 + dim - k) * np.log(np.diag(L))
                      - (2 * eta - 2 + dim) * np.log(sd) - 0.5 * sd**2 / scales**2)
    assert np.isclose(lkj_cholesky_prior_logp(L, eta, 0.8, 0.4), expected, rtol=1e-12)
