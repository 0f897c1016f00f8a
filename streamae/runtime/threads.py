"""Compute threads: how many a process uses (given to Numba and BLAS alike), and Numba's
thread settings, read and checked before Numba starts its thread pool.

Numba reads ``NUMBA_NUM_THREADS`` when it is imported: a value that is not a number
makes it print its own traceback as a warning, and 0 or a negative number fails later
with an internal error.  :func:`thread_environment_problem` checks the settings without
importing Numba; :func:`set_aside_bad_thread_settings` (called by ``streamae/__init__``
before anything imports Numba) removes a bad value so Numba does not trip on it, and
remembers the sentence that :func:`check_thread_environment` raises later, when a
command that computes starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from streamae.errors import UsageError
from streamae.text import printable

THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "NUMBA_DEFAULT_NUM_THREADS")
# A bound far above any machine: more threads than this is a typo, not a plan.
MAX_THREADS = 1 << 16

_set_aside: list[str] = []


def thread_environment_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """One sentence saying what is wrong with Numba's thread variables, or None."""
    environ = os.environ if environ is None else environ
    for name in THREAD_VARIABLES:
        if name not in environ:
            continue
        raw = environ[name]
        text = raw.strip()
        if not text:
            continue  # set but empty: Numba treats it as unset
        if not text.isdigit() or not text.isascii():
            return (
                f"the environment variable {name} is {printable(repr(raw), 60)}, not a whole "
                f"number of threads; set it to a number from 1 to {MAX_THREADS} or unset it."
            )
        value = int(text)
        if not 1 <= value <= MAX_THREADS:
            return (
                f"the environment variable {name} is {value}; set it to a number of threads "
                f"from 1 to {MAX_THREADS} or unset it."
            )
    return None


def set_aside_bad_thread_settings() -> None:
    """Before Numba is imported: drop bad thread variables, remembering what was wrong."""
    problem = thread_environment_problem()
    if problem is None:
        return
    _set_aside.append(problem)
    for name in THREAD_VARIABLES:
        if thread_environment_problem({name: os.environ[name]} if name in os.environ else {}):
            del os.environ[name]


def thread_problem_found() -> str | None:
    """The sentence about a thread variable that was (or is) invalid, or None."""
    return _set_aside[0] if _set_aside else thread_environment_problem()


def check_thread_environment() -> None:
    """Raise :class:`UsageError` if a thread variable was (or is) invalid."""
    problem = thread_problem_found()
    if problem is not None:
        raise UsageError(problem)


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

    check_thread_environment()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=threads, user_api="blas")
