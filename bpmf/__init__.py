"""bpmf: Bayesian Probabilistic Matrix Factorization of rating data."""

from bpmf import datasets, metrics
from bpmf._config import config_context, get_config, set_config
from bpmf._exceptions import DataError, ModelFileError, NotFittedError
from bpmf._version import __version__

__all__ = [
    "DataError",
    "ModelFileError",
    "NotFittedError",
    "__version__",
    "config_context",
    "datasets",
    "get_config",
    "metrics",
    "set_config",
]
