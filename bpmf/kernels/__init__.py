"""Compiled kernels: the fused likelihood and pair-product Ops (C, numba and JAX code), the
row kernels of the Gibbs samplers, the NUTS transition for small conditional blocks, pair
orders and their radix sort, and the LLVM intrinsics they use."""
