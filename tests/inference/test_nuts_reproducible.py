"""A seeded joint-NUTS fit (nutpie) gives the same draws whether pytensor's compile cache
is cold or warm: its numba functions are compiled without fastmath, whose freshly compiled
and cached copies summed in different orders."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("nutpie")

FIT = """
import warnings
warnings.simplefilter("ignore")
from bpmf.datasets import make_synthetic_ratings
from bpmf.models import BPMF
ratings, _ = make_synthetic_ratings(n_users=12, n_items=10, n_factors=2, density=0.5,
                                    noise_sd=0.5, random_state=2)
model = BPMF(2, method="nuts", sampler_config={"draws": 30, "tune": 30, "chains": 1},
             random_state=3, progressbar=False).fit(ratings)
print(repr(model.idata_["posterior"]["sigma"].values.ravel().tolist()))
"""


@pytest.mark.slow
def test_seeded_nuts_draws_do_not_depend_on_the_compile_cache(tmp_path):
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={tmp_path}"}
    runs = [
        subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True,
                       check=True).stdout
        for _ in range(2)  # the first compiles into the empty cache, the second loads it
    ]
    assert (tmp_path / "numba").exists()
    assert runs[0] == runs[1] and len(runs[0]) > 100
