"""What this host is, as the kernels see it: CPU, the code Numba generates for it, BLAS, versions.

:func:`describe_host` is the identity a calibration is cached under (see
:mod:`streamae.compute.calibration`): a different CPU model, Numba target (CPU name and
features, e.g. ``NUMBA_CPU_NAME=generic``) or library version measures again.
:func:`vector_bits` compiles a small loop and reads its machine code: the vector width
the kernels actually get (the features alone do not say it: Intel's AVX-512 cores are
tuned by LLVM to prefer 256 bits, AMD's Zen 4 is not).  Both import Numba; call them
when computing, not on import.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model(cpuinfo: Path = CPUINFO) -> tuple[str, str]:
    """(vendor, model name) of this CPU, from /proc/cpuinfo (else the platform's guess)."""
    vendor = model = ""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "model name" and not model:
                model = value.strip()
            if vendor and model:
                break
    except OSError:
        pass
    return vendor or platform.machine() or "unknown", model or platform.processor() or "unknown"


def numba_target() -> tuple[str, str]:
    """(CPU name, feature string) Numba compiles for in this process.

    Numba's own reading: ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` (as
    :func:`streamae.runtime.configure` may have set them) or the host's.
    """
    import llvmlite.binding as llvm
    from numba.core import config

    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return name, features


def blas_libraries() -> list[dict[str, str]]:
    """The BLAS libraries loaded (NumPy's and SciPy's, which Numba's ``np.dot`` calls).

    Each: internal API (openblas, mkl, ...), version, architecture (OpenBLAS's kernel
    set, e.g. SkylakeX, Zen) and file name.
    """
    import numpy  # noqa: F401 - loads NumPy's BLAS
    import scipy.linalg.cython_blas  # noqa: F401 - the BLAS Numba's np.dot calls
    from threadpoolctl import threadpool_info

    return [
        {
            "api": str(lib.get("internal_api")),
            "version": str(lib.get("version")),
            "architecture": str(lib.get("architecture")),
            "file": Path(str(lib.get("filepath"))).name,
        }
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]


def library_versions() -> dict[str, str]:
    """Versions of what the kernels' speed depends on: numba, llvmlite, numpy, scipy, streamae."""
    import llvmlite
    import numba
    import numpy
    import scipy

    from streamae._version import __version__

    return {
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "streamae": __version__,
    }


def describe_host() -> dict:
    """This host as the kernels see it (JSON-ready; the calibration cache's key).

    Keys: vendor, model, numba_cpu, numba_features, blas (list), versions (dict).
    """
    vendor, model = cpu_model()
    name, features = numba_target()
    return {
        "vendor": vendor,
        "model": model,
        "numba_cpu": name,
        "numba_features": features,
        "blas": blas_libraries(),
        "versions": library_versions(),
    }


def vector_bits() -> int:
    """Width in bits of the vector arithmetic Numba generates here for a float32 loop.

    512 (zmm registers), 256 (ymm) or 128 (xmm, SSE: also ``NUMBA_CPU_NAME=generic``).
    Compiles one small function (not cached, about 0.1 s) and reads its assembly.
    """
    import numpy as np
    from numba import njit

    two, one = np.float32(2.0), np.float32(1.0)

    @njit(cache=False, fastmath=True)
    def scale(x, out):
        for i in range(x.shape[0]):
            out[i] = two * x[i] + one

    x = np.ones(64, dtype=np.float32)
    scale(x, np.empty_like(x))
    return widest_arithmetic(scale.inspect_asm(scale.signatures[0]))


def widest_arithmetic(asm: str) -> int:
    """The widest register (512, 256 or 128 bits) used by float32 vector arithmetic in ``asm``."""
    arithmetic = ("vfmadd", "vmulps", "vaddps", "mulps", "addps")
    lines = [line for line in asm.splitlines() if any(op in line for op in arithmetic)]
    for register, bits in (("zmm", 512), ("ymm", 256)):
        if any(register in line for line in lines):
            return bits
    return 128
