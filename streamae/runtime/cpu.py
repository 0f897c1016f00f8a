"""Full-width vectors for the compiled kernels on CPUs with AVX-512.

LLVM tunes Intel's AVX-512 cores to prefer 256-bit vectors (the ``prefer-256-bit``
tuning flag), which spared the first AVX-512 generation a clock drop on 512-bit
instructions.  While streamae computes, OpenBLAS's SkylakeX kernels run every product at
512 bits anyway, so the core already pays whatever that costs; the kernels between the
products (the sigmoid's exp, the deltas, the sums) then gain from twice the width, as
measured on this project's Emerald Rapids host (benchmarks/README.md, "Notes kept from
building").

:func:`prefer_full_width` is called by ``streamae/__init__`` before Numba compiles
anything.  It gives Numba the host's own CPU features with ``-prefer-256-bit`` appended
(``NUMBA_CPU_FEATURES``), nothing else changed.  A user's own ``NUMBA_CPU_NAME`` or
``NUMBA_CPU_FEATURES`` wins (set ``NUMBA_CPU_FEATURES`` to the host's features to keep
LLVM's choice), and CPUs without AVX-512 are left alone.  Numba's on-disk cache keys
every kernel by its CPU features, so kernels compiled either way never mix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

FEATURE_VARIABLES = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")
NO_NARROW_PREFERENCE = "-prefer-256-bit"


def full_width_features(host_features: str) -> str | None:
    """The feature string that lifts the 256-bit preference, or None where it does not apply.

    host_features: LLVM's comma-separated ``+feature,-feature`` list for this CPU.  Returns
    None when the CPU has no AVX-512 (nothing wider to prefer).
    """
    features = host_features.split(",")
    if "+avx512f" not in features:
        return None
    kept = [f for f in features if f.lstrip("+-") != "prefer-256-bit"]
    return ",".join([*kept, NO_NARROW_PREFERENCE])


def prefer_full_width(
    environ: MutableMapping[str, str] | None = None, host_features: str | None = None
) -> bool:
    """Before Numba compiles: let LLVM use 512-bit vectors on an AVX-512 host.

    Sets ``NUMBA_CPU_FEATURES`` in ``environ`` (default ``os.environ``) unless the user set
    ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES``.  ``host_features`` defaults to llvmlite's
    reading of this CPU.  Returns True when it set the variable.
    """
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in FEATURE_VARIABLES):
        return False
    if host_features is None:
        import llvmlite.binding as llvm

        host_features = llvm.get_host_cpu_features().flatten()
    features = full_width_features(host_features)
    if features is None:
        return False
    environ["NUMBA_CPU_FEATURES"] = features
    config = sys.modules.get("numba.core.config")
    if config is not None and environ is os.environ:
        # Numba was imported first: its configuration has read the environment already,
        # and its code generator reads this value when it first compiles.
        config.CPU_FEATURES = features
    return True
