"""Link PyTensor's C backend to the OpenBLAS that scipy's wheels already ship.

PyTensor compiles some operations (matrix products in PyMC's initial-point and FAST_COMPILE
functions, for example) to C code that calls BLAS routines such as ``dgemm_``. It looks for a
BLAS library in the system folders; a ``pip`` install has none there, so PyTensor warns that
it "could not link to a BLAS installation" and falls back to slower code.

scipy's Linux wheels carry OpenBLAS in ``site-packages/scipy.libs`` (the ``scipy-openblas``
build, 32-bit integers). Its routines are exported with a ``scipy_`` prefix (``scipy_dgemm_``)
so that they never clash with another BLAS. :func:`configure_pytensor_blas` points PyTensor's
``blas__ldflags`` at that library and renames the routines PyTensor's C code calls with
``-D`` defines (``-Ddgemm_=scipy_dgemm_``), so the C code links to the very library numpy and
scipy use (one thread pool, governed by ``threadpoolctl`` like the rest).

Nothing is changed when the user has set ``blas__ldflags`` (``PYTENSOR_FLAGS`` or a
``.pytensorrc`` file), when PyTensor has already resolved it, or when scipy brings no such
library (conda installs link scipy to a system BLAS, which PyTensor finds by itself; macOS
wheels use Accelerate, which PyTensor also finds).
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import sys
from pathlib import Path

# The Fortran BLAS routines PyTensor's C headers declare (pytensor/tensor/blas/c_code).
_REAL = (
    "axpy copy dot gbmv gemm gemv ger rot rotg rotm rotmg sbmv scal spmv spr spr2 swap symm "
    "symv syr syr2 syr2k syrk tbmv tbsv tpmv tpsv trmm trmv trsm trsv"
).split()
_COMPLEX = (
    "axpy copy gbmv gemm gemv gerc geru hbmv hemm hemv her her2 her2k herk hpmv hpr hpr2 scal "
    "swap symm syr2k syrk tbmv tbsv tpmv tpsv trmm trmv trsm trsv"
).split()
BLAS_ROUTINES = tuple(
    [f"{p}{r}" for p in "sd" for r in _REAL]
    + [f"{p}{r}" for p in "cz" for r in _COMPLEX]
    + ["csscal", "zdscal"]
)
_PREFIX = "scipy_"


def scipy_openblas_library():
    """The OpenBLAS shared library bundled with scipy's wheel, or ``None`` (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "scipy.libs"
    if not libs.is_dir():
        return None
    # the LP64 build (32-bit integers, as PyTensor's C code declares); not the ILP64 "64_" one
    found = sorted(p for p in libs.glob("libscipy_openblas*.so") if "64_" not in p.name)
    return found[0] if found else None


def scipy_openblas_ldflags(library=None):
    """``blas__ldflags`` that link PyTensor to ``library`` (default: scipy's OpenBLAS).

    Returns ``None`` when there is no such library, or when its path holds characters that
    PyTensor's flag parser would split (whitespace, commas, quotes).
    """
    library = scipy_openblas_library() if library is None else Path(library)
    if library is None or re.search(r"[\s,'\"]", str(library)):
        return None
    # -lNAME (not -l:FILE): PyTensor matches NAME against the files of the -L folder
    name = re.fullmatch(r"lib(.+)\.so", library.name)
    if name is None:
        return None
    tokens = [f"-L{library.parent}", f"-l{name.group(1)}"]
    tokens += [f"-D{name}_={_PREFIX}{name}_" for name in BLAS_ROUTINES]
    return " ".join(tokens)


def _user_set_ldflags():
    """Whether the user configured ``blas__ldflags`` (environment or a .pytensorrc file)."""
    if re.search(r"blas(__|\.)ldflags", os.environ.get("PYTENSOR_FLAGS", "")):
        return True
    files = os.environ.get("PYTENSORRC", "~/.pytensorrc").split(os.pathsep)
    for name in files:
        path = Path(name).expanduser()
        if not path.is_file():
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.has_option("blas", "ldflags"):
            return True
    return False


def configure_pytensor_blas():
    """Point PyTensor at scipy's OpenBLAS unless BLAS was configured otherwise.

    Called when bpmf is imported. Before PyTensor is imported the flags go into
    ``PYTENSOR_FLAGS`` (so subprocesses inherit them); if PyTensor is already imported and has
    not yet resolved ``blas__ldflags``, they are set on ``pytensor.config`` directly.

    Returns
    -------
    str or None
        The flags set, or ``None`` when nothing was changed.
    """
    if _user_set_ldflags():
        return None
    flags = scipy_openblas_ldflags()
    if flags is None:
        return None
    if "pytensor" not in sys.modules:
        current = os.environ.get("PYTENSOR_FLAGS", "")
        setting = f'blas__ldflags="{flags}"'
        os.environ["PYTENSOR_FLAGS"] = f"{current},{setting}" if current else setting
        return flags
    config = sys.modules["pytensor"].config
    param = getattr(type(config), "blas__ldflags", None)
    if param is None or hasattr(param, "val"):  # already resolved: too late to change
        return None
    config.blas__ldflags = flags
    return flags
