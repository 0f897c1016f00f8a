"""The training loop (streamae/training/loop.py): what it sets up around the iterations."""

from __future__ import annotations

import numpy as np
from helpers import write_patch_file
from threadpoolctl import threadpool_info, threadpool_limits

from streamae.training.session import TrainingMonitor, train


def _blas_threads() -> list[int]:
    return [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"]


class BlasThreads(TrainingMonitor):
    """Records every loaded BLAS's thread count after each iteration (inside the loop)."""

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def on_iteration(self, record: dict) -> None:
        self.seen.append(_blas_threads())


def test_blas_runs_on_one_thread_between_evaluations_and_is_restored_after(tmp_path):
    values = np.random.default_rng(3).uniform(0.05, 0.95, size=(600, 16)).astype(np.float32)
    path = write_patch_file(tmp_path / "data.h5", values, chunk_rows=200)
    monitor = BlasThreads()
    with threadpool_limits(limits=2, user_api="blas"):  # leaves the process as it found it
        train(path, tmp_path / "m.h5", hidden=4, max_iter=3, threads=2, monitor=monitor)
        after = _blas_threads()
    assert len(monitor.seen) == 3
    # Between evaluations OpenBLAS's spare thread would only spin on a core the lanes need.
    assert all(threads == [1] * len(threads) and threads for threads in monitor.seen)
    # The training session gives BLAS the run's threads; the loop's limit is undone at its end.
    assert after and all(threads == 2 for threads in after)
