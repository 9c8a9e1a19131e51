"""The shared argument checks (bpmf._validation) and the estimator-level input contract:
settings, rating scale, thresholds, unseen-pair warnings and where warnings point."""

import warnings

import numpy as np
import pandas as pd
import pytest

from bpmf import DataError, _validation
from bpmf._estimator import RatingEstimator
from bpmf._exceptions import RatingScaleWarning
from bpmf._validation import (
    check_factor_memory,
    check_n_factors,
    check_prob,
    check_random_state,
    check_scale,
    check_threshold,
    default_threshold,
    describe,
    posterior_bytes,
)
from bpmf.baselines import OLSRegressor, UserMean


# ---------------------------------------------------------------------- the checks
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", r"n_factors must be a positive integer \(e.g. n_factors=10\), got 'abc' \(a str\)"),
        (None, "got None"),
        (2.5, "got 2.5"),
        (True, r"got True \(a bool\)"),
        (0, "got 0"),
        (-3, "got -3"),
    ],
)
def test_n_factors_errors_say_what_and_how(value, message):
    with pytest.raises(ValueError, match=message):
        check_n_factors(value)


def test_n_factors_accepts_numpy_ints():
    assert check_n_factors(np.int64(4)) == 4 and isinstance(check_n_factors(np.int64(4)), int)


def test_random_state_contract():
    assert check_random_state(None) is None
    assert check_random_state(np.uint32(7)) == 7
    with pytest.raises(ValueError, match=r"got -1; use random_state=1"):
        check_random_state(-1)
    with pytest.raises(ValueError, match=r"numpy Generator; pass a seed drawn from it"):
        check_random_state(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"got '3' \(a str\)"):
        check_random_state("3")


def test_scale_threshold_and_prob_checks():
    assert check_scale((1, 5)) == (1.0, 5.0)
    assert check_scale("0.5,5") == (0.5, 5.0)
    for bad in ((5, 1), (1,), "a,b", (1, np.inf), 3):
        with pytest.raises(ValueError, match="scale must"):
            check_scale(bad)
    assert check_threshold(4, (1.0, 5.0)) == 4.0
    with pytest.raises(ValueError, match=r"got '4' \(a str\)"):
        check_threshold("4", (1.0, 5.0))
    with pytest.raises(ValueError, match="outside the rating scale 0-1"):
        check_threshold(4, (0.0, 1.0))
    assert check_threshold(40.0, None) == 40.0
    assert default_threshold((1.0, 5.0)) == 4.0 and default_threshold((0.0, 1.0)) == 0.75
    with pytest.raises(ValueError, match="prob must be a probability"):
        check_prob(1.0)


def test_describe_never_prints_a_whole_frame():
    frame = pd.DataFrame({"user": range(1000), "item": range(1000)})
    assert describe(frame) == "a DataFrame of shape (1000, 2)"
    assert len(describe("x" * 500)) < 80


def test_factor_memory_check_refuses_before_allocating(monkeypatch):
    # 10,000 factors keep two 10^4 x 10^4 covariances per draw: 1.6 GB a draw.
    assert posterior_bytes(10_000, 8, 6, 1) > 1.6e9
    monkeypatch.setattr(_validation, "_memory_bytes", lambda: 8 * 2**30)
    with pytest.raises(ValueError, match=r"n_factors=10000.*use fewer n_factors"):
        check_factor_memory(10_000, 8, 6, n_samples=2_000, what="Gibbs sampling")
    assert check_factor_memory(5, 8, 6, n_samples=2_000) < 2**22


# ---------------------------------------------------------------------- estimators
class _Scaled(RatingEstimator):
    """A minimal estimator with the shared settings (n_factors, random_state, rating_scale)."""

    def __init__(self, n_factors=2, random_state=None, rating_scale=None):
        self.n_factors = n_factors
        self.random_state = random_state
        self.rating_scale = rating_scale

    def fit(self, train):
        self._start_fit(train)
        return self


FRAME = pd.DataFrame({"user": [1, 1, 2, 3], "item": ["a", "b", "a", "c"], "rating": [3.0] * 4})


def test_fit_checks_the_shared_settings():
    with pytest.raises(ValueError, match="n_factors must be a positive integer"):
        _Scaled(n_factors="abc").fit(FRAME.assign(rating=[1.0, 2.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="random_state must be an int seed"):
        _Scaled(random_state=np.random.default_rng(1)).fit(FRAME)


def test_fit_refuses_draws_that_cannot_fit_in_memory(monkeypatch):
    class Sampled(_Scaled):
        def _kept_draws(self):
            return 2_000

    monkeypatch.setattr(_validation, "_memory_bytes", lambda: 8 * 2**30)
    train = FRAME.assign(rating=[1.0, 2.0, 4.0, 5.0])
    with pytest.raises(ValueError, match=r"Sampled.fit would keep .* GiB of draws"):
        Sampled(n_factors=10_000).fit(train)
    assert Sampled(n_factors=3).fit(train).n_train_ == 4


def test_declared_rating_scale_wins_and_is_checked():
    # Constant ratings cannot tell the scale; a declared one is used without a warning.
    model = _Scaled(rating_scale=(1, 5)).fit(FRAME)
    assert model.scale_ == (1.0, 5.0)
    with pytest.raises(DataError, match=r"outside the declared scale \(0.0, 1.0\)"):
        _Scaled(rating_scale=(0, 1)).fit(FRAME)
    with pytest.raises(ValueError, match="rating_scale must satisfy low < high"):
        _Scaled(rating_scale=(5, 1)).fit(FRAME)


def test_constant_ratings_warn_and_leave_the_scale_open():
    with pytest.warns(RatingScaleWarning, match=r"All 4 ratings equal 3.*scale=\(low, high\)"):
        model = UserMean().fit(FRAME)
    assert model.scale_ is None


def test_unseen_warning_names_rows_and_points_at_the_caller():
    train = FRAME.assign(rating=[1.0, 2.0, 4.0, 5.0])
    model = OLSRegressor(on_unseen="warn").fit(train)
    pairs = pd.DataFrame({"user": [1, 9, 2, 8, 7, 6], "item": ["a", "a", "z", "a", "a", "a"]})
    with pytest.warns(UserWarning) as record:
        model.predict(pairs)
    (warning,) = [w for w in record if "unseen" in str(w.message)]
    message = str(warning.message)
    assert message.startswith("4 pair(s) with a user and 1 with an item unseen in training")
    assert "(rows 1, 2, 3 and 2 more)" in message
    assert warning.filename == __file__


# ---------------------------------------------------------------------- posterior models
@pytest.fixture(scope="module")
def pmf_01():
    """A PMF on a 0-1 scale: defaults derived from the scale, not from 1-5 stars."""
    from bpmf.models import PMF

    rng = np.random.default_rng(0)
    users, items = np.meshgrid(np.arange(12), np.arange(8))
    frame = pd.DataFrame(
        {
            "user": [f"u{u}" for u in users.ravel()],
            "item": items.ravel(),
            "rating": rng.integers(0, 2, users.size).astype(float),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # optimiser notices on toy data
        return PMF(n_factors=1, random_state=0, progressbar=False).fit(frame)


def test_recommend_threshold_follows_the_scale(pmf_01):
    assert pmf_01.scale_ == (0.0, 1.0)
    table = pmf_01.recommend("u1", k=3)
    assert table.attrs["threshold"] == 0.75
    assert (table["prob_at_least"] > 1e-3).all()  # not P(r >= 4) on a 0-1 scale
    with pytest.raises(ValueError, match="outside the rating scale 0-1"):
        pmf_01.recommend("u1", threshold=4)
    with pytest.raises(ValueError, match=r"got '0.5' \(a str\)"):
        pmf_01.recommend("u1", threshold="0.5")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        pmf_01.recommend("u1", k=2.5)


def test_pairs_of_another_id_type_are_named(pmf_01):
    pairs = pd.DataFrame({"user": [1, 2], "item": [0, 1]})
    with pytest.warns(UserWarning, match=r"user ids given are integers but the model's are text"):
        pmf_01.predict(pairs)


def test_gibbs_with_huge_n_factors_fails_before_allocating(monkeypatch):
    from bpmf.models import BPMF

    monkeypatch.setattr(_validation, "_memory_bytes", lambda: 64 * 2**30)
    rng = np.random.default_rng(0)
    users, items = np.meshgrid(np.arange(8), np.arange(6))
    frame = pd.DataFrame(
        {"user": users.ravel(), "item": items.ravel(), "rating": rng.integers(1, 6, 48) * 1.0}
    )
    frame.loc[:1, "rating"] = [1.0, 5.0]
    model = BPMF(n_factors=10_000, method="gibbs", random_state=0)
    with pytest.raises(ValueError, match=r"BPMF.fit would keep \d+\.\d GiB of draws"):
        model.fit(frame)
