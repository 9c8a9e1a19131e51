"""Gibbs at scale: rows drawn in parallel blocks give the draws of one thread, thinning, and
the memory-bounded ``keep="moments"`` output against the full draws of the same chain."""

import numpy as np
import pytest

from bpmf.datasets import make_synthetic_ratings
from bpmf.inference.gibbs import row_threads, sample_gibbs
from bpmf.kernels.rows import csr_pair, row_blocks, sample_rows, sample_rows_parallel
from bpmf.models import BPMF

N_FACTORS = 2


@pytest.fixture(scope="module")
def ratings():
    data, _ = make_synthetic_ratings(
        n_users=400, n_items=150, n_factors=N_FACTORS, density=0.3, random_state=5
    )
    return data


def _fit(ratings, **overrides):
    kwargs = dict(
        n_factors=N_FACTORS,
        draws=6,
        tune=4,
        chains=1,
        biases=True,
        covariance_prior="lkj",
        model_config=BPMF(N_FACTORS)._model_config(),
        random_state=11,
        progressbar=False,
    )
    kwargs.update(overrides)
    return sample_gibbs(
        ratings.user_codes,
        ratings.item_codes,
        ratings.values,
        ratings.n_users,
        ratings.n_items,
        **kwargs,
    )


def test_parallel_blocks_give_the_serial_draws_and_sums_bit_for_bit(ratings):
    (indptr, partners, values), _ = csr_pair(
        ratings.user_codes.astype(np.int64),
        ratings.item_codes.astype(np.int64),
        ratings.values,
        ratings.n_users,
        ratings.n_items,
    )
    blocks = row_blocks(indptr, block_ratings=300)  # many blocks of uneven sizes
    assert len(blocks) > 20 and blocks[0] == 0 and blocks[-1] == ratings.n_users
    rng = np.random.default_rng(0)
    dim = N_FACTORS + 1
    X = np.column_stack([rng.normal(size=(ratings.n_items, dim)), rng.normal(size=ratings.n_items)])
    z = rng.normal(size=(ratings.n_users, dim))
    args = (indptr, partners, values, X, 0.3, 2.0 * np.eye(dim), np.ones((1, dim)), 1.5, z)
    serial, parallel, one_block = (np.empty((ratings.n_users, dim)) for _ in range(3))
    sums = sample_rows(*args, serial, True, blocks)
    import numba

    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    parallel_sums = sample_rows_parallel(*args, parallel, True, blocks)
    np.testing.assert_array_equal(parallel, serial)
    assert parallel_sums == sums
    # the blocks change only the order in which the residual sums are added
    whole = sample_rows(*args, one_block, True)
    np.testing.assert_array_equal(one_block, serial)
    np.testing.assert_allclose(whole, sums, rtol=1e-12)


def test_draws_do_not_depend_on_the_number_of_threads(ratings, monkeypatch):
    import bpmf.inference.rows

    monkeypatch.setattr(bpmf.inference.rows, "PARALLEL_MIN_RATINGS", 0)  # small data, parallel
    one = _fit(ratings, threads=1)
    two = _fit(ratings, threads=2)
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_single_precision_partner_rows_keep_the_draws_and_their_thread_independence(
    ratings, monkeypatch
):
    """Large fits read the partner rows from a float32 copy: the same chain as in double
    precision up to the rounding of the partner values, and still independent of the
    number of threads."""
    import bpmf.inference.rows

    double = _fit(ratings, threads=1)
    monkeypatch.setattr(bpmf.inference.rows, "SINGLE_PRECISION_MIN_BYTES", 0)
    monkeypatch.setattr(bpmf.inference.rows, "PARALLEL_MIN_RATINGS", 0)
    assert bpmf.inference.rows.partner_dtype(10, 3) == np.float32
    one = _fit(ratings, threads=1)
    two = _fit(ratings, threads=2)
    assert not np.array_equal(one["U"], double["U"])  # the float32 path ran
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
        # rounding the partner rows (relative 6e-8) moves the draws at that order
        np.testing.assert_allclose(one[name], double[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_map_does_not_depend_on_the_number_of_threads(ratings, monkeypatch):
    import bpmf.inference.rows
    from bpmf.inference.map import alternating_least_squares

    monkeypatch.setattr(bpmf.inference.rows, "PARALLEL_MIN_RATINGS", 0)
    points = [
        alternating_least_squares(
            ratings.user_codes,
            ratings.item_codes,
            ratings.values,
            ratings.n_users,
            ratings.n_items,
            n_factors=N_FACTORS,
            biases=True,
            factor_sd=0.3,
            bias_sd=1.0,
            mu_sd=1.0,
            n_iter=5,
            random_state=0,
            threads=threads,
        )[0]
        for threads in (1, 2)
    ]
    for name in points[0]:
        np.testing.assert_array_equal(points[0][name], points[1][name], err_msg=name)


def test_row_threads_share_the_budget_between_chains():
    assert row_threads(1, 1) == 1
    assert row_threads(8, 1) == 8
    assert row_threads(2, 2) == 1  # chains fill the cores: rows run single-threaded
    assert row_threads(8, 1, n_ratings=1000) == 1  # small data: the fork-join costs more
    assert row_threads(8, 2, n_ratings=10**6, check_layer=False) == 4
    with pytest.raises(ValueError, match="threads"):
        row_threads(0, 1)


def test_thin_keeps_every_kth_sweep_of_the_same_chain(ratings):
    full = _fit(ratings, draws=6)
    thinned = _fit(ratings, draws=3, thin=2)
    for name in full:
        np.testing.assert_array_equal(thinned[name], full[name][:, 1::2], err_msg=name)


def test_moments_match_the_full_draws_of_the_same_chain(ratings):
    full = _fit(ratings, chains=2, cores=1)
    users = np.array([0, 5, 7, 399])
    items = np.array([3, 3, 149, 0])
    kept = _fit(
        ratings, chains=2, cores=1, keep="moments", factor_draws=2, predict_pairs=(users, items)
    )
    np.testing.assert_array_equal(kept["retained"], [0, 5])
    for name in ("mu", "sigma", "mu_U", "Sigma_V", "user_bias_sd", "diverging"):
        np.testing.assert_array_equal(kept[name], full[name], err_msg=name)
    for name in ("U", "V", "user_bias", "item_bias"):
        np.testing.assert_array_equal(kept[name], full[name][:, [0, 5]], err_msg=name)
        np.testing.assert_allclose(kept[f"{name}_mean"], full[name].mean(1), rtol=1e-10)
        np.testing.assert_allclose(kept[f"{name}_var"], full[name].var(1), rtol=1e-8, atol=1e-14)
    expected = (
        full["mu"][..., None]
        + np.einsum("cdnk,cdnk->cdn", full["U"][:, :, users], full["V"][:, :, items])
        + full["user_bias"][:, :, users]
        + full["item_bias"][:, :, items]
    )
    np.testing.assert_allclose(kept["pair_mean"], expected.mean(1), rtol=1e-10)
    np.testing.assert_allclose(kept["pair_var"], expected.var(1), rtol=1e-8, atol=1e-14)


def test_moments_without_row_draws_and_bad_options(ratings):
    kept = _fit(ratings, keep="moments")
    assert "U" not in kept and kept["U_mean"].shape == (1, ratings.n_users, N_FACTORS)
    assert kept["mu"].shape == (1, 6)
    for overrides, message in (
        ({"keep": "some"}, "keep must be one of"),
        ({"thin": 0}, "thin must be an integer"),
        ({"factor_draws": 2}, "keep='moments' only"),
        ({"keep": "moments", "factor_draws": -1}, "factor_draws"),
        ({"keep": "moments", "predict_pairs": ([0], [999])}, r"item codes must be integers"),
    ):
        with pytest.raises(ValueError, match=message):
            _fit(ratings, **overrides)
