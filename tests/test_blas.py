"""PyTensor's C backend links to the OpenBLAS scipy ships, so it never warns about BLAS."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bpmf import _blas

REPO = Path(__file__).resolve().parents[1]

needs_scipy_openblas = pytest.mark.skipif(
    _blas.scipy_openblas_library() is None,
    reason="scipy brings no bundled OpenBLAS here (not a Linux wheel)",
)

# Runs a product through PyTensor's C BLAS Ops (Dot22 / Gemm), with every warning an error.
_GEMM = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("error")
    {imports}
    import numpy as np
    import pytensor
    import pytensor.tensor as pt
    from pytensor.compile.mode import Mode

    a, b, c = pt.matrix("a"), pt.matrix("b"), pt.matrix("c")
    f = pytensor.function([a, b, c], c + 2.0 * (a @ b), mode=Mode(linker="c", optimizer="fast_run"))
    ops = {{type(node.op).__name__ for node in f.maker.fgraph.apply_nodes}}
    assert ops & {{"Gemm", "Dot22", "Dot22Scalar"}}, ops
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(40, 30)), rng.normal(size=(30, 20)), rng.normal(size=(40, 20))
    np.testing.assert_allclose(f(x, y, z), z + 2.0 * (x @ y), rtol=1e-12, atol=1e-12)
    print(pytensor.config.blas__ldflags)
    """
)


def _run(imports, compiledir, env_changes=()):
    """Run the product in a fresh interpreter whose PyTensor compiles into ``compiledir``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTENSOR_FLAGS", "PYTENSORRC")}
    env.update({"PYTHONPATH": os.pathsep.join([str(REPO), *sys.path]),
                "PYTENSOR_FLAGS": f"compiledir={compiledir}", **dict(env_changes)})
    code = _GEMM.format(imports=imports)
    return subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)


@needs_scipy_openblas
@pytest.mark.parametrize("imports", ["import bpmf", "import pytensor\nimport bpmf"],
                         ids=["bpmf-first", "pytensor-first"])
def test_c_backend_uses_scipys_openblas_without_a_warning(imports, tmp_path):
    # an empty compile folder, so that the C code is compiled and linked in this run
    result = _run(imports, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "BLAS" not in result.stderr
    flags = result.stdout.strip()
    library = _blas.scipy_openblas_library()
    assert f"-l{library.name[3:-3]}" in flags and "-Ddgemm_=scipy_dgemm_" in flags
    assert "did not find a dynamic library" not in result.stderr


def test_user_configuration_wins(monkeypatch):
    monkeypatch.setenv("PYTENSOR_FLAGS", "blas__ldflags=-lblas")
    assert _blas.configure_pytensor_blas() is None
    assert os.environ["PYTENSOR_FLAGS"] == "blas__ldflags=-lblas"


def test_user_rc_file_wins(monkeypatch, tmp_path):
    rc = tmp_path / "pytensorrc"
    rc.write_text("[blas]\nldflags = -lopenblas\n")
    monkeypatch.delenv("PYTENSOR_FLAGS", raising=False)
    monkeypatch.setenv("PYTENSORRC", str(rc))
    assert _blas.configure_pytensor_blas() is None


def test_flags_rename_every_routine_and_skip_unsafe_paths(tmp_path):
    library = tmp_path / "libscipy_openblas-0.so"
    flags = _blas.scipy_openblas_ldflags(library).split()
    assert flags[:2] == [f"-L{tmp_path}", "-lscipy_openblas-0"]
    assert len(flags) == 2 + len(_blas.BLAS_ROUTINES)
    assert "-Dsgemv_=scipy_sgemv_" in flags and "-Dzdscal_=scipy_zdscal_" in flags
    assert _blas.scipy_openblas_ldflags(tmp_path / "a dir" / "lib.so") is None
    assert _blas.scipy_openblas_ldflags(tmp_path / "a,b" / "lib.so") is None
    assert _blas.scipy_openblas_ldflags(tmp_path / "libscipy_openblas.so.0") is None
