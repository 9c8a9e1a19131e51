"""bpmf: Bayesian Probabilistic Matrix Factorization of rating data."""

import importlib

from bpmf import datasets, metrics
from bpmf._blas import configure_pytensor_blas
from bpmf._config import config_context, get_config, set_config
from bpmf._exceptions import ConvergenceWarning, DataError, ModelFileError, NotFittedError
from bpmf._version import __version__
from bpmf.compare import compare

# Link PyTensor's C backend to the OpenBLAS that scipy ships (before PyTensor is imported, so
# that it never warns that it found no BLAS).
configure_pytensor_blas()

# PyMC and the baselines load on first use, so `import bpmf` (and the CLI) stays fast.
_LAZY = {
    "PMF": "bpmf.models",
    "BPMF": "bpmf.models",
    "load": "bpmf.models",
    "baselines": "bpmf",
    "models": "bpmf",
}

__all__ = [
    "BPMF",
    "PMF",
    "ConvergenceWarning",
    "DataError",
    "ModelFileError",
    "NotFittedError",
    "__version__",
    "baselines",
    "compare",
    "config_context",
    "datasets",
    "get_config",
    "load",
    "metrics",
    "models",
    "set_config",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'bpmf' has no attribute {name!r}")
    if _LAZY[name] == "bpmf":
        return importlib.import_module(f"bpmf.{name}")
    return getattr(importlib.import_module(_LAZY[name]), name)
