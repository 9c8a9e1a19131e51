"""Matrix factorisation models: PMF (MAP) and BPMF (NUTS or Gibbs), results as ArviZ DataTrees."""

from bpmf.models.bpmf import BPMF
from bpmf.models.pmf import PMF

__all__ = ["BPMF", "PMF"]
