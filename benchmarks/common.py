"""Helpers shared by the benchmark scripts: the host, machine facts, data files, timing, tables."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import h5py
import numpy as np

from streamae.runtime import configure

# A benchmark script owns its process, as the command line does: configured before any
# script imports streamae's kernels (the scripts import this module first), so the
# kernels it times are compiled as `streamae train` compiles them.
CONFIGURATION = configure()

RESULTS = Path(__file__).resolve().parent / "results"
# HDF5 chunks of about this many bytes, as `streamae extract` writes them.
CHUNK_BYTES = 1 << 20


def host() -> dict:
    """The host as the kernels see it: CPU, vector width used, BLAS, library versions."""
    from streamae.runtime.host import describe_host, vector_bits

    return describe_host() | {"vector_bits": vector_bits()}


def print_host() -> dict:
    """Print which host the figures come from (every benchmark does, first); returns it.

    Vendor and model, the Numba target and the vector width its kernels get, the BLAS
    libraries with their versions and kernels, and numba/llvmlite/numpy versions: figures
    from different machines can then be told apart.
    """
    facts = host()
    blas = "; ".join(f"{b['api']} {b['version']} ({b['architecture']})" for b in facts["blas"]) or "none"
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items())
    print(
        f"host: {facts['vendor']} {facts['model']}, {len(os.sched_getaffinity(0))} cores; "
        f"Numba target {facts['numba_cpu']}, {facts['vector_bits']}-bit vectors; "
        f"BLAS {blas}; {versions}",
        flush=True,
    )
    return facts


def machine() -> dict:
    """CPU model, cores, memory and library versions, for the record."""
    import numba
    from threadpoolctl import threadpool_info

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "h5py": h5py.__version__,
        "blas": [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture", "filepath")}
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ],
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "host": host(),
        "configured": CONFIGURATION.lines(),
        "load_average": os.getloadavg(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def write_patches(path: Path, m: int, n: int, seed: int = 0, rows_per_write: int = 1 << 20) -> Path:
    """A patch file of m uniform [0.1, 0.9] float32 rows of n values, chunked ~1 MiB.

    Written in slabs, so a file larger than memory can be made.
    """
    chunk_rows = max(1, min(m, CHUNK_BYTES // (4 * n)))
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("patches", shape=(m, n), dtype=np.float32, chunks=(chunk_rows, n))
        for first in range(0, m, rows_per_write):
            last = min(m, first + rows_per_write)
            dataset[first:last] = rng.uniform(0.1, 0.9, size=(last - first, n)).astype(np.float32)
        handle.attrs["format"] = "streamae.patches/1"
    return path


def read_through(path: Path, block: int = 16 << 20) -> float:
    """Read a file sequentially and discard it (``cat FILE > /dev/null``); seconds taken."""
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(block)
        view = memoryview(buffer)
        while handle.readinto(view):
            pass
    return time.perf_counter() - started


# Longer than OpenBLAS threads spin after a call (2^28 cycles by default).
OPENBLAS_PARK_SECONDS = 0.5


def sgemm_rate(size: int = 4096) -> float:
    """GFLOP/s of one large float32 matrix product with NumPy's BLAS (its current threads)."""
    rng = np.random.default_rng(1)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    started = time.perf_counter()
    np.matmul(a, b, out=out)
    rate = 2.0 * size**3 / (time.perf_counter() - started) / 1e9
    # OpenBLAS's threads busy-wait for more work after a product (~0.1 s, its
    # THREAD_TIMEOUT): let them park before the next contender runs beside them.
    time.sleep(OPENBLAS_PARK_SECONDS)
    return rate


def save_json(data: dict, out: str | None, stem: str) -> Path:
    """Write ``data`` to ``out`` or to results/<stem>-<time>.json; returns the path."""
    if out is None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    else:
        path = Path(out)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    return path


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def orientation_coherence(W1: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per unit of W1 (s, h*w), (λ1 − λ2)/(λ1 + λ2) of the gradient structure tensor of its
    weights drawn as an (h, w) patch: 1 for a pure edge, 0 for a dot or noise (s,)."""
    values = []
    for weights in W1:
        gy, gx = np.gradient(weights.reshape(shape))
        tensor = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]])
        low, high = np.linalg.eigvalsh(tensor)
        values.append((high - low) / (high + low))
    return np.array(values)
