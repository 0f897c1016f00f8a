"""The thread split: one compute lane per core, each with BLAS at one thread.

On 2 cores, Numba-parallel kernels between multi-threaded GEMMs meet at a barrier after
every kernel and every product: with compute blocks sized for the cache that is
thousands of fork-joins per evaluation, and two thread pools (OpenMP's and OpenBLAS's)
taking turns on the same cores.  Here instead each of ``count`` lanes (Python threads)
runs whole compute blocks on its own: a compiled pass (:mod:`streamae.compute.passes`) holds no
GIL, calls single-threaded BLAS, and writes only its own buffers and totals.  The lanes
meet once per source block.

Determinism: a lane's rows and the order it adds them are fixed by the source blocks,
the compute-block size and the lane count; so results are bitwise repeatable for a given
thread count, and agree to float64 rounding across thread counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

import numba


def default_lane_count() -> int:
    """Lanes to run: Numba's thread count, which the trainer sets from the ``threads`` option."""
    return max(1, int(numba.get_num_threads()))


def lane_ranges(rows: int, block_rows: int, lanes: int) -> list[tuple[int, int]]:
    """Split rows [0, rows) into ``lanes`` contiguous ranges of whole compute blocks.

    Every range but possibly the last holds a multiple of ``block_rows`` rows; ranges
    may be empty when there are fewer blocks than lanes.
    """
    blocks = -(-rows // block_rows)
    ranges = []
    for lane in range(lanes):
        start = min(rows, lane * blocks // lanes * block_rows)
        stop = min(rows, (lane + 1) * blocks // lanes * block_rows)
        ranges.append((start, stop))
    return ranges


class SingleThreadedBlas(AbstractContextManager):
    """Within the ``with``: every loaded BLAS at one thread (the lanes are the threads).

    The controller is built once, as listing the loaded libraries costs about a
    millisecond and the limit is set around every evaluation.
    """

    def __init__(self) -> None:
        # Numba's np.dot calls the BLAS that SciPy ships: load it now so it is controlled.
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import ThreadpoolController

        self._controller = ThreadpoolController()
        self._limiter = None

    def __enter__(self) -> SingleThreadedBlas:
        self._limiter = self._controller.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None


class Lanes:
    """``count`` worker lanes: lane 0 is the calling thread, the others a thread pool."""

    def __init__(self, count: int | None = None) -> None:
        self.count = int(count or default_lane_count())
        if self.count < 1:
            raise ValueError(f"lane count must be at least 1, got {self.count}")
        self._pool = (
            ThreadPoolExecutor(self.count - 1, thread_name_prefix="streamae-lane") if self.count > 1 else None
        )

    def run(self, work: Callable[[int], None], lanes: Sequence[int] | None = None) -> None:
        """Call ``work(lane)`` for every lane (concurrently) and wait for all of them.

        An exception in any lane is raised here, after every lane has finished.
        """
        lanes = range(self.count) if lanes is None else lanes
        others = [self._pool.submit(work, lane) for lane in lanes if lane != 0] if self._pool else []
        error: BaseException | None = None
        try:
            if 0 in lanes:
                work(0)
        except BaseException as exc:  # noqa: BLE001 - re-raised after the others finish
            error = exc
        for future in others:
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001
                error = error or exc
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
