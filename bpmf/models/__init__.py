"""Matrix factorisation models: PMF (MAP) and BPMF (NUTS or Gibbs), results as ArviZ DataTrees."""

from bpmf.models._io import FILE_EXTENSION, FORMAT_VERSION, load, read_model_info
from bpmf.models.bpmf import BPMF
from bpmf.models.pmf import PMF

__all__ = ["BPMF", "FILE_EXTENSION", "FORMAT_VERSION", "PMF", "load", "read_model_info"]
