"""One baseline in its own process: load the patch file into memory, warm up, time calls.

Run by bench_objective.py (not by hand), so each baseline can run with its own allocator
settings (the steady state: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 keep freed
memory, so re-allocated temporaries cause no page faults) and its own threads:

    python baseline_worker.py PATH HIDDEN IMPL THREADS CALLS

IMPL is numpy, torch-hand or torch-autograd.  Prints one JSON line: {"seconds": [...],
"cost": J, "gradient_norm": |∇J|} for the timed calls (after one untimed warm-up call).
"""

from __future__ import annotations

import json
import sys
import time

import h5py
import numpy as np
from reference import TorchObjective, numpy_objective


def main() -> None:
    path, hidden, impl, threads, calls = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
    from threadpoolctl import threadpool_limits

    from streamae.compute.parameters import initialize

    with h5py.File(path, "r") as handle:
        X = np.empty(handle["patches"].shape, dtype=np.float32)
        handle["patches"].read_direct(X)
    theta = initialize(X.shape[1], hidden, seed=0)
    if impl == "numpy":

        def call(theta):
            with threadpool_limits(threads, user_api="blas"):
                return numpy_objective(theta, X, hidden)

    else:
        import torch

        torch.set_num_threads(threads)
        call = TorchObjective(X, hidden, autograd=impl == "torch-autograd")
    cost, gradient = call(theta)  # warm-up: first-touch of the temporaries, lazy init
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        cost, gradient = call(theta)
        seconds.append(time.perf_counter() - started)
    print(
        json.dumps(
            {"seconds": seconds, "cost": float(cost), "gradient_norm": float(np.linalg.norm(gradient))}
        )
    )


if __name__ == "__main__":
    main()
