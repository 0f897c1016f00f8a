"""Whether the kernels are already compiled into Numba's on-disk cache.

The first run on a machine (or after an upgrade changes the kernels' source) compiles
every kernel once, which takes longer than many whole trainings; later runs load the
compiled code.  :func:`kernels_cached` looks at the cache index of a few kernels every
training evaluation uses, so a caller can say so before the wait, not after it.
"""

from __future__ import annotations

# CPU seconds of a cold compile of the training kernels, measured on this project's
# 2-vCPU machine (2026-12-07: 18.7 s of CPU for a 2-iteration `train` with an empty
# NUMBA_CACHE_DIR against under 2 s warm; the issue saw 18 s of silence).  A rough figure
# for the message, not a promise: a loaded machine takes longer.
COLD_COMPILE_SECONDS = 20


def _key_kernels() -> list:
    from streamae.compute import kernels

    return [kernels.hidden_forward, kernels.output_backward, kernels.hidden_backward]


def kernels_cached() -> bool:
    """True when Numba's cache holds compiled code for the training kernels (or nothing compiles).

    Reads each kernel's cache index as Numba does (an index whose source stamp no longer
    matches reads as empty).  Anything unexpected (another Numba, JIT disabled) counts as
    cached, so the worst case is a missing notice, never a false one.
    """
    try:
        for dispatcher in _key_kernels():
            cache = getattr(dispatcher, "_cache", None)
            if cache is None:
                return True  # NUMBA_DISABLE_JIT: plain Python, nothing to compile
            if not cache._cache_file._load_index():
                return False
    except Exception:  # noqa: BLE001 - a private Numba API: any failure means "don't know"
        return True
    return True


def compile_notice() -> str | None:
    """The message to show before a cold compile, or None when the kernels are cached."""
    if kernels_cached():
        return None
    return f"compiling kernels, once per machine: ~{COLD_COMPILE_SECONDS} s"
