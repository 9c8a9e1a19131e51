"""Helpers that let numba compile short fixed-length row loops into SIMD instructions.

numba leaves LLVM's SLP (superword-level parallelism) vectoriser off by default, and its loop
vectoriser only vectorises across iterations of the pair loop, with gathers, which costs more
than it saves for rows of ten factors. :func:`slp_njit` compiles one function with the SLP
vectoriser on, without touching numba's settings for anything else, and :func:`stack_buffer`
gives it a small fixed-length scratch array that LLVM can keep in registers (a numpy array
lives on the heap, and every update of it goes through memory).
"""

from numba import config, types
from numba.core import cgutils
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher
from numba.extending import intrinsic

__all__ = ["slp_njit", "stack_buffer"]


class _SLPDispatcher(CPUDispatcher):
    """A numba dispatcher whose compilations run with ``config.SLP_VECTORIZE`` on.

    Calls from other jitted functions compile through :meth:`compile` too, so the setting
    holds however the function is reached. The code stays vectorised when it is linked into
    a caller compiled with the default settings (PyTensor's numba function around the
    likelihood kernel ran as fast as the kernel called on its own, 0.55-0.62 ms on u1).
    """

    def compile(self, sig):
        # numba compiles under this (re-entrant) lock, so no other compilation sees the switch
        with global_compiler_lock:
            saved = config.SLP_VECTORIZE
            config.SLP_VECTORIZE = 1
            try:
                return super().compile(sig)
            finally:
                config.SLP_VECTORIZE = saved


def slp_njit(function=None, *, fastmath=None):
    """``numba.njit`` for a function whose inner loops have short constant trip counts.

    The function is compiled lazily, like ``njit``; ``fastmath`` follows PyTensor's numba
    settings when None (``pytensor.config.numba__fastmath``). It is meant to be called from
    other jitted code (no Python wrapper is generated).
    """

    def decorate(py_func):
        options = {"nopython": True, "no_cpython_wrapper": True, "no_cfunc_wrapper": True}
        flags = fastmath
        if flags is None:
            from pytensor import config as pytensor_config

            flags = (
                {"arcp", "contract", "afn", "reassoc", "nsz"}
                if pytensor_config.numba__fastmath
                else False
            )
        options["fastmath"] = flags
        return _SLPDispatcher(py_func=py_func, locals={}, targetoptions=options)

    return decorate if function is None else decorate(function)


@intrinsic
def stack_buffer(typingctx, length):
    """In numba code: a pointer to ``length`` uninitialised float64 slots in the stack frame.

    ``length`` must be a compile-time constant (a literal or a closure constant). Wrap it as
    an array with ``numba.carray(stack_buffer(n), n)``; the array lives as long as the calling
    function's frame, needs no allocation or reference counting, and must not be returned or
    stored. When every access uses an index known after loop unrolling, LLVM keeps the
    elements in registers.
    """
    if not isinstance(length, types.IntegerLiteral):
        return None
    size = length.literal_value

    def codegen(context, builder, signature, args):
        # alloca_once puts the buffer in the entry block: one per call, not one per use
        element = context.get_value_type(types.float64)
        return cgutils.alloca_once(builder, element, size=size)

    return types.CPointer(types.float64)(length), codegen
