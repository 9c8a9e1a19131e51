"""BPMF with sampler_config keep="moments": retained joint draws predict, the trace group
keeps every draw of the scalars, save/load round trip; thin and threads pass through."""

import warnings

import numpy as np

from bpmf.datasets import make_synthetic_ratings
from bpmf.models import BPMF


def test_moments_fit_predicts_like_the_full_fit_and_round_trips(tmp_path):
    ratings, _ = make_synthetic_ratings(
        n_users=120, n_items=60, n_factors=2, density=0.3, random_state=0
    )
    config = {"draws": 60, "tune": 40}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = BPMF(2, sampler_config=config, random_state=1, progressbar=False).fit(ratings)
        kept = BPMF(
            2,
            sampler_config={**config, "keep": "moments", "factor_draws": 60, "threads": 1},
            random_state=1,
            progressbar=False,
        ).fit(ratings)
        thin = BPMF(
            2, sampler_config={**config, "thin": 2, "keep": "moments", "factor_draws": 5},
            random_state=1, progressbar=False,
        ).fit(ratings)
    pairs = ratings.to_frame()[["user", "item"]].iloc[:50]
    np.testing.assert_allclose(kept.predict(pairs), full.predict(pairs))
    assert kept.idata_["trace"].sizes["draw"] == 60
    assert thin.idata_["posterior"].sizes["draw"] == 5 and thin.idata_["trace"].sizes["draw"] == 60
    loaded = BPMF.load(kept.save(tmp_path / "kept.bpmf"))
    np.testing.assert_allclose(loaded.predict(pairs), kept.predict(pairs))
    assert "posterior_moments" in loaded.idata_.children
