"""Hyperprior helpers: SciPy's lazy imports settled before chains start in threads."""

import pytest


def test_scipy_imports_settle_before_chains_start_in_threads():
    """ArviZ registers ``jax`` as a lazily loaded module, which SciPy's array-API helpers
    import on first use; :func:`settle_scipy_imports` makes that happen in the calling thread
    (two chain threads importing it at once could see it half-imported)."""
    import subprocess
    import sys

    pytest.importorskip("jax")
    code = (
        "import sys, importlib.util, arviz_base\n"
        "lazy = isinstance(sys.modules.get('jax'), importlib.util._LazyModule)\n"
        "from bpmf.inference.hyperpriors import settle_scipy_imports\n"
        "settle_scipy_imports()\n"
        "print(lazy, isinstance(sys.modules.get('jax'), importlib.util._LazyModule))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    if out[0] != "True":
        pytest.skip("this ArviZ does not register jax lazily")
    assert out[1] == "False"
