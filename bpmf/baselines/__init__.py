"""Baselines: simple averages and numpy gradient-descent models (never imports PyMC)."""

from bpmf.baselines.simple import GlobalMean, ItemMean, UniformRandom, UserItemMean, UserMean

__all__ = ["GlobalMean", "ItemMean", "UniformRandom", "UserItemMean", "UserMean"]
