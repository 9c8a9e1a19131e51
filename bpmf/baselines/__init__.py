"""Baselines: simple averages and numpy gradient-descent models (never imports PyMC)."""

from bpmf.baselines._features import ConvergenceWarning
from bpmf.baselines.adagrad_mf import AdaGradMF
from bpmf.baselines.mlp import MLPRegressor
from bpmf.baselines.ols import DivergenceError, OLSRegressor
from bpmf.baselines.optimizers import SGD, AdaGrad
from bpmf.baselines.simple import GlobalMean, ItemMean, UniformRandom, UserItemMean, UserMean
from bpmf.baselines.softmax import SoftmaxRegression

__all__ = [
    "SGD",
    "AdaGrad",
    "AdaGradMF",
    "ConvergenceWarning",
    "DivergenceError",
    "GlobalMean",
    "ItemMean",
    "MLPRegressor",
    "OLSRegressor",
    "SoftmaxRegression",
    "UniformRandom",
    "UserItemMean",
    "UserMean",
]
