"""Re-measure the BLAS / register-tiled crossover of streamae.compute.small.

Run:  python benchmarks/bench_kernels.py [--rows 512] [--rounds 15] [--shapes 64x25,784x196,...]

For each layer shape (n x s) it times out = B·Aᵀ, A (rows, n), B (s, n), on one core:
OpenBLAS (np.dot inside Numba, as the passes call it) and ``small.tiled_abt``, taken in
rotation, best of ``rounds`` x 50 calls.  Then one single-pass evaluation of case (a)
(10^5 x 64 -> 25 in memory, the lanes at --threads) with each choice.  It prints the
``MEASURED`` table to paste into streamae/compute/small.py and the crossover it implies.
About 30 s.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import machine, save_json, table

SHAPES = "16x25,32x16,64x25,64x64,64x100,128x50,192x400,784x196"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="rows of a compute block")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated n x s")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from numba import njit
    from threadpoolctl import threadpool_limits

    from streamae.compute import small
    from streamae.compute.lanes import SingleThreadedBlas  # noqa: F401 - loads SciPy's BLAS

    @njit(nogil=True)
    def blas_times(A, B, out, times):
        for _ in range(times):
            np.dot(B, A.T, out)

    @njit(nogil=True)
    def tiled_times(A, B, out, times):
        for _ in range(times):
            small.tiled_abt(A, B, out)

    load = os.getloadavg()
    rng = np.random.default_rng(0)
    measured, rows = {}, []
    with threadpool_limits(1, user_api="blas"):
        for shape in args.shapes.split(","):
            n, s = (int(v) for v in shape.split("x"))
            A = rng.random((args.rows, n), dtype=np.float32)
            B = rng.random((s, n), dtype=np.float32)
            out = np.empty((s, args.rows), dtype=np.float32)
            best = {"tiled": np.inf, "blas": np.inf}
            kernels = {"tiled": tiled_times, "blas": blas_times}
            for kernel in kernels.values():
                kernel(A, B, out, 1)
            for round_ in range(args.rounds):
                for name in ("tiled", "blas") if round_ % 2 == 0 else ("blas", "tiled"):
                    started = time.perf_counter()
                    kernels[name](A, B, out, 50)
                    best[name] = min(best[name], (time.perf_counter() - started) / 50)
            flops = 2.0 * args.rows * n * s
            rates = (flops / best["tiled"] / 1e9, flops / best["blas"] / 1e9)
            measured[(n, s)] = rates
            rows.append([f"{n}x{s}", f"{rates[0]:.1f}", f"{rates[1]:.1f}", f"{rates[0] / rates[1]:.2f}"])
    crossover = small.crossover(measured)
    evaluation = _evaluation(args.threads)
    text = table(rows, ["n x s", "tiled GFLOP/s", "OpenBLAS GFLOP/s", "tiled / BLAS"])
    print(
        f"load average {load[0]:.2f} (before), {os.getloadavg()[0]:.2f} (after); "
        f"{args.rows}-row blocks, one core"
    )
    print(text)
    print(f"crossover: tiled where n*s <= {crossover} (0: nowhere; small.crossover's rule)")
    print(
        "case (a) single-pass evaluation of 10^5 rows in memory: "
        + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in evaluation.items())
    )
    print("MEASURED = {")
    for (n, s), (t, b) in measured.items():
        print(f"    ({n}, {s}): ({t:.1f}, {b:.1f}),")
    print("}")
    result = {
        "machine": machine(),
        "args": vars(args),
        "measured": {f"{n}x{s}": v for (n, s), v in measured.items()},
        "crossover_ns": crossover,
        "evaluation_seconds": evaluation,
        "table": text,
    }
    print(f"JSON: {save_json(result, args.json, 'kernels')}")


def _evaluation(threads: int, rounds: int = 7) -> dict:
    """Median seconds of one single-pass evaluation of case (a) with each product choice."""
    import numba

    from streamae.compute.parameters import Hyperparameters, initialize
    from streamae.compute.schemes import make_objective
    from streamae.io.patchfile import ArrayPatches

    numba.set_num_threads(threads)
    X = np.random.default_rng(1).uniform(0.1, 0.9, size=(100_000, 64)).astype(np.float32)
    theta = initialize(64, 25, 0)
    objectives = {
        products: make_objective(
            ArrayPatches(X, block_rows=32768),
            Hyperparameters(),
            n_visible=64,
            scheme="single-pass",
            products=products,
        )
        for products in ("blas", "tiled")
    }
    times = {products: [] for products in objectives}
    for objective in objectives.values():
        objective(theta)
    for round_ in range(rounds):
        for products in ("blas", "tiled") if round_ % 2 == 0 else ("tiled", "blas"):
            started = time.perf_counter()
            objectives[products](theta)
            times[products].append(time.perf_counter() - started)
    for objective in objectives.values():
        objective.close()
    return {products: float(np.median(values)) for products, values in times.items()}


if __name__ == "__main__":
    main()
