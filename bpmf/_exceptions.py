"""Exceptions raised by bpmf."""


class DataError(ValueError):
    """Rating data or prediction pairs are malformed (the message says what and how to fix it)."""


class NotFittedError(RuntimeError, AttributeError):
    """A method that needs a fitted model was called before ``fit``."""


class ModelFileError(ValueError):
    """A saved model file is corrupted, truncated or of another model type."""


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics (divergences, R-hat, ESS) say its draws may not be trusted."""


class RatingScaleWarning(UserWarning):
    """The rating scale was inferred from ratings that do not span a plausible scale."""
