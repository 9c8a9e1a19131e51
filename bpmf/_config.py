"""Package-wide settings (currently: whether long work shows progress bars)."""

import contextlib
import os

_config = {"progressbar": os.environ.get("BPMF_QUIET", "").lower() not in {"1", "true", "yes"}}


def get_config():
    """Return a copy of the package-wide settings."""
    return dict(_config)


def set_config(*, progressbar=None):
    """Change package-wide settings; ``progressbar=False`` silences every progress bar."""
    if progressbar is not None:
        _config["progressbar"] = bool(progressbar)


@contextlib.contextmanager
def config_context(**settings):
    """Temporarily change settings: ``with bpmf.config_context(progressbar=False): ...``."""
    old = get_config()
    set_config(**settings)
    try:
        yield
    finally:
        _config.update(old)


def resolve_progressbar(progressbar):
    """An explicit ``progressbar`` argument wins; ``None`` means the package-wide setting."""
    return _config["progressbar"] if progressbar is None else bool(progressbar)
