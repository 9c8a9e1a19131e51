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
