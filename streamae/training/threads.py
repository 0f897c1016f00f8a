"""How many compute threads a process uses, and giving them to Numba and BLAS alike."""

from __future__ import annotations

import os

from streamae.errors import UsageError

__all__ = ["apply_threads", "resolve_threads"]


def resolve_threads(threads: int | None, environ: dict | None = None, local_ranks: int = 1) -> int:
    """Threads to use: the given number, else SLURM_CPUS_PER_TASK, else the CPU affinity.

    Under MPI without SLURM's hint, ``local_ranks`` processes share this node: when the
    launcher did not bind them (each sees every CPU), each takes its share of the CPUs
    instead of all of them.
    """
    environ = os.environ if environ is None else environ
    if threads is not None:
        if threads < 1:
            raise UsageError(f"threads must be an integer ≥ 1, got {threads}.", parameter="threads")
        return threads
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    if local_ranks > 1 and available >= (os.cpu_count() or 1):
        return max(1, available // local_ranks)
    return available


def apply_threads(threads: int) -> None:
    """Give Numba ``threads`` threads and cap BLAS at the same, so they don't oversubscribe."""
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=threads, user_api="blas")
