"""Ordered overrelaxation of the noise precision: exact, and anti-correlated."""

import numpy as np
import pytest
from scipy import stats

from bpmf.inference.gibbs import ordered_overrelaxation, sample_gibbs
from bpmf.inference.hyperpriors import draw_halfnormal_scale, draw_halfnormal_scales


def test_the_current_value_is_mirrored_by_rank():
    candidates = [3.0, 1.0, 2.0]
    assert ordered_overrelaxation(10.0, candidates) == 1.0  # above all: the smallest
    assert ordered_overrelaxation(0.0, candidates) == 3.0  # below all: the largest
    assert ordered_overrelaxation(1.5, candidates) == 2.0  # rank 1 of 3 -> rank 2 of 4


def test_a_draw_from_the_conditional_stays_a_draw_and_moves_across_the_median():
    """Started from exact draws of a skewed law, the overrelaxed values have the same law
    (two-sample KS) and are negatively correlated with where they started."""
    rng = np.random.default_rng(0)
    shape = 3.0
    start = rng.gamma(shape, size=4000)
    moved = np.array([ordered_overrelaxation(x, rng.gamma(shape, size=15)) for x in start])
    assert stats.ks_2samp(moved, rng.gamma(shape, size=4000)).pvalue > 0.01
    assert np.corrcoef(start, moved)[0, 1] < -0.5


def test_vectorised_noise_scales_have_the_scalar_samplers_law():
    rng = np.random.default_rng(1)
    batch = draw_halfnormal_scales(40, 30.0, 1.0, 4000, rng)
    scalar = np.array([draw_halfnormal_scale(40, 30.0, 1.0, rng) for _ in range(4000)])
    assert batch.shape == (4000,) and np.all(batch > 0)
    assert stats.ks_2samp(batch, scalar).pvalue > 0.01


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_noise_overrelax_is_refused(bad):
    codes = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="noise_overrelax"):
        sample_gibbs(codes, codes, np.array([1.0, 2.0, 3.0]), 2, 2, n_factors=1, draws=2,
                     tune=1, chains=1, biases=True, covariance_prior="wishart",
                     model_config={"mu_sd": 10.0, "sigma": None}, noise_overrelax=bad)
