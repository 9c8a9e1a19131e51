"""Argument checks shared by every estimator, the datasets, ``compare`` and the command line.

Each check either returns the value in a canonical form or raises an error whose one-line
message names the argument, what was given and what to pass instead. Nothing here knows a
particular model.

Seeds: ``random_state`` is ``None`` (fresh entropy) or a non-negative integer. A numpy
``Generator`` is refused: a fitted model stores its arguments and must be savable and
reproducible from them, which a generator's hidden state is not (draw a seed from it with
``int(rng.integers(2**32))`` instead).
"""

from __future__ import annotations

import math
import numbers
import os
import warnings

import numpy as np

__all__ = [
    "check_choice",
    "check_factor_memory",
    "check_n_factors",
    "check_positive",
    "check_positive_int",
    "check_prob",
    "check_random_state",
    "check_scale",
    "check_threshold",
    "default_threshold",
    "describe",
    "posterior_bytes",
    "warn",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def describe(value, limit=60):
    """A short description of ``value`` for messages: its repr, cut, with the type."""
    if isinstance(value, np.ndarray | list | tuple | dict) or hasattr(value, "shape"):
        shape = getattr(value, "shape", None)
        size = f" of shape {shape}" if shape is not None else f" of length {len(value)}"
        return f"a {type(value).__name__}{size}"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if isinstance(value, str | bool | numbers.Number) or value is None:
        kind = type(value).__name__
        return f"{text} (a {kind})" if isinstance(value, str | bool) else text
    return f"{text} (a {type(value).__name__})"


def warn(message, category=UserWarning):
    """``warnings.warn`` attributed to the first caller outside the bpmf package."""
    warnings.warn(message, category, skip_file_prefixes=(_PACKAGE_DIR,))


# ---------------------------------------------------------------------- numbers
def check_positive(name, value, *, integer=False, allow_none=False, allow_zero=False):
    """A positive (or, with ``allow_zero``, non-negative) finite number; int when ``integer``."""
    if value is None and allow_none:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what}, got {describe(value)}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")
    return int(value) if integer else float(value)


def check_positive_int(name, value, *, allow_none=False):
    """A positive integer (a float such as ``3.0`` is refused: say ``3``)."""
    return check_positive(name, value, integer=True, allow_none=allow_none)


def check_n_factors(n_factors):
    """``n_factors`` as a positive int; a clear error for strings, None, floats, bools."""
    if isinstance(n_factors, bool) or not isinstance(n_factors, numbers.Integral):
        raise ValueError(
            f"n_factors must be a positive integer (e.g. n_factors=10), got {describe(n_factors)}."
        )
    if n_factors < 1:
        raise ValueError(f"n_factors must be a positive integer, got {n_factors!r}.")
    return int(n_factors)


def check_random_state(random_state, name="random_state"):
    """``None`` or a non-negative integer seed; returns ``None`` or an int.

    A numpy ``Generator`` or ``RandomState`` is refused with the fix in the message (see the
    module docstring for why).
    """
    if random_state is None:
        return None
    if isinstance(random_state, np.random.Generator | np.random.RandomState):
        raise ValueError(
            f"{name} must be an int seed or None, got a numpy {type(random_state).__name__}; "
            f"pass a seed drawn from it instead, e.g. {name}=int(rng.integers(2**32)), so the "
            "fit can be saved and reproduced."
        )
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise ValueError(
            f"{name} must be a non-negative int seed or None, got {describe(random_state)}."
        )
    if random_state < 0:
        raise ValueError(
            f"{name} must be a non-negative int seed or None, got {random_state}; use "
            f"{name}={-int(random_state)} or any other seed >= 0."
        )
    return int(random_state)


def check_prob(value, name="prob"):
    """A probability strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(
            f"{name} must be a probability strictly between 0 and 1, got {describe(value)}."
        )
    return float(value)


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {describe(value)}.")
    return value


# ---------------------------------------------------------------------- rating scale
def check_scale(scale, name="scale"):
    """``None`` or ``(low, high)`` with finite ``low < high``; returns a tuple of floats."""
    if scale is None:
        return None
    if isinstance(scale, str):
        parts = scale.split(",")
    else:
        try:
            parts = list(scale)
        except TypeError:
            parts = None
    if parts is None or len(parts) != 2:
        raise ValueError(f"{name} must be (low, high), e.g. (1, 5); got {describe(scale)}.")
    try:
        low, high = (_real(part) for part in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be two numbers (low, high), e.g. (1, 5); got {describe(scale)}."
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name} must satisfy low < high (finite), got ({low:g}, {high:g}).")
    return (low, high)


def _real(value):
    if isinstance(value, str):
        return float(value.strip())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(value)
    return float(value)


def check_threshold(threshold, scale):
    """A rating threshold: a real number, inside the rating ``scale`` when there is one."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(
            f"threshold must be a number on the rating scale{_scale_text(scale)}, got "
            f"{describe(threshold)}."
        )
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}.")
    if scale is not None and not scale[0] <= threshold <= scale[1]:
        raise ValueError(
            f"threshold={threshold:g} lies outside the rating scale{_scale_text(scale)}; "
            "give a value on the scale."
        )
    return threshold


def default_threshold(scale):
    """Three quarters of the way up the scale: 4 on 1-5, 0.75 on 0-1, 7.75 on 1-10."""
    low, high = scale
    return low + 0.75 * (high - low)


def _scale_text(scale):
    return "" if scale is None else f" {scale[0]:g}-{scale[1]:g}"


# ---------------------------------------------------------------------- model size
def posterior_bytes(n_factors, n_users, n_items, n_samples):
    """Bytes of the float64 draws a factor model keeps: U, V, biases and two K x K covariances
    per draw (the layout of :data:`bpmf.models._posterior.POSTERIOR_DIMS`)."""
    k = int(n_factors)
    per_draw = (int(n_users) + int(n_items)) * (k + 1) + 2 * k * k + 2 * k + 4
    return 8 * int(n_samples) * per_draw


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def check_factor_memory(n_factors, n_users, n_items, n_samples=1, *, what="this fit"):
    """Refuse, before allocating, a fit whose kept draws alone exceed the machine's memory.

    ``n_samples`` is the number of draws kept (chains x draws; 1 for a MAP). The estimate is
    :func:`posterior_bytes`; the limit is the physical memory.
    """
    n_factors = check_n_factors(n_factors)
    need = posterior_bytes(n_factors, n_users, n_items, n_samples)
    have = _memory_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"{what} would keep {need / 2**30:.1f} GiB of draws (n_factors={n_factors}, "
            f"{n_users} users, {n_items} items, {n_samples} draws) but the machine has "
            f"{have / 2**30:.1f} GiB; use fewer n_factors (at most a few dozen is usual) or "
            "fewer draws."
        )
    return need
