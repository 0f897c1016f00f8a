"""The arithmetic: Numba kernels, the compiled passes, the streaming schemes and L-BFGS (no file I/O)."""
