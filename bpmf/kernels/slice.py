"""Slice sampling (Neal, 2003) of independent one-dimensional log-concave conditionals."""

import math

import numpy as np
from numba import njit

__all__ = ["slice_log_scales"]


@njit(cache=True)
def _log_density(t, a, b, c):
    return -a * math.exp(2.0 * t) - b * math.exp(-2.0 * t) + c * t


@njit(cache=True)
def slice_log_scales(a, b, uniforms, c=None):
    """One slice-sampling update from ``t = 0`` of each density
    ``exp(-a e^{2t} - b e^{-2t} + c t)`` (``c``: None for zero).

    The density of the log of a factor's rescaling ``g`` between the two sides (see
    :mod:`bpmf.inference.hyperpriors`). ``uniforms`` holds, per entry, a row of uniforms on
    [0, 1) that the stepping out and the shrinkage consume; the initial width is the
    density's curvature scale at its mode, so a handful are used. Returns the new ``t``.
    """
    n = a.shape[0]
    tilt = np.zeros(n) if c is None else c
    out = np.zeros(n)
    for k in range(n):
        u = uniforms[k]
        used = 0
        width = 1.0 / math.sqrt(8.0 * math.sqrt(a[k] * b[k]) + 1e-12)
        level = _log_density(0.0, a[k], b[k], tilt[k]) + math.log(max(u[used], 1e-300))
        used += 1
        left = -width * u[used]
        used += 1
        right = left + width
        while _log_density(left, a[k], b[k], tilt[k]) > level and used < u.shape[0]:
            left -= width
        while _log_density(right, a[k], b[k], tilt[k]) > level and used < u.shape[0]:
            right += width
        t = 0.0
        while used < u.shape[0]:
            proposal = left + (right - left) * u[used]
            used += 1
            if _log_density(proposal, a[k], b[k], tilt[k]) > level:
                t = proposal
                break
            if proposal < 0.0:
                left = proposal
            else:
                right = proposal
        out[k] = t
    return out
