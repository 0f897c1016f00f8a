"""The reduction across processes: a no-op for one process, MPI Allreduce for many.

With one process nothing of MPI is imported.  Under ``mpiexec``/``srun`` (detected from
the launcher's environment variables) mpi4py is imported and every pass's partial sums,
gathered into one flat float64 buffer, are added across ranks with a single Allreduce.

Collective calls must be reached by every rank in the same order, or the run hangs.
Two rules keep an error on one rank from hanging the others:

* A phase without collectives inside (opening files, checking the output path, writing
  a checkpoint on rank 0) ends with :func:`raise_agreed`: every rank learns whether any
  rank failed, and every rank raises.  Such errors are marked *collective*.
* Any other error (a read failing in the middle of a pass, a bug) is local: the rank
  prints it and aborts the whole job (:func:`abort_on_local_error`), since the others
  are already waiting in a collective that will never complete.

Waiting ranks do not spin: reductions are started non-blocking and polled with short
sleeps (:meth:`MPICommunicator._wait`), so an idle rank (more ranks than chunks) or a
rank waiting for rank 0 to compile or write does not take a core from a working one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from streamae.errors import EXIT_RUNTIME, Interrupted, StreamaeError, UsageError

# Environment variables that MPI launchers set in every rank they start.
LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "HYDRA_CONTROL_FD",
)

# Polling a pending collective: spin this long first (the common case, balanced ranks,
# completes within it), then sleep between tests, doubling up to the longest sleep.
# 1 ms at most adds under 1 ms to a pass that takes tens of ms or more.
_SPIN_SECONDS = 2e-4
_FIRST_SLEEP = 2e-5
_LONGEST_SLEEP = 1e-3

# How long a rank that aborts the job waits after printing why (see abort_on_local_error).
ABORT_GRACE_SECONDS = 1.0


class Communicator(Protocol):
    """What the objective and the trainer need from a group of processes."""

    rank: int
    size: int

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Replace ``buffer`` (float64, flat) by its sum over all processes, in place."""

    def allreduce_min(self, buffer: np.ndarray) -> None:
        """Replace ``buffer`` (float64, flat) by its elementwise minimum over processes."""

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` on every process."""

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any."""

    def allgather(self, value: object) -> list:
        """Every process's ``value``, in rank order, on every process."""

    def barrier(self) -> None:
        """Return when every process has called it."""

    def local_size(self) -> int:
        """How many processes of this group run on this node."""

    def local_rank(self) -> int:
        """This process's number among those on its node (0 on one rank per node)."""

    def abort(self, code: int) -> None:
        """End every process of the group now with exit code ``code``."""


class SingleProcess:
    """The communicator of a run with one process: every reduction is the identity."""

    rank = 0
    size = 1

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Nothing to add: one process already holds the total."""

    def allreduce_min(self, buffer: np.ndarray) -> None:
        """Nothing to compare: one process already holds the minimum."""

    def broadcast(self, value: object) -> object:
        """One process: the value itself."""
        return value

    def any(self, flag: bool) -> bool:
        """One process: the flag itself."""
        return bool(flag)

    def allgather(self, value: object) -> list:
        """One process: a list of one."""
        return [value]

    def barrier(self) -> None:
        """Nobody to wait for."""

    def local_size(self) -> int:
        """One process on this node."""
        return 1

    def local_rank(self) -> int:
        """The first (only) process on this node."""
        return 0

    def abort(self, code: int) -> None:
        """Exit this (only) process."""
        sys.exit(code)


class MPICommunicator:
    """A communicator over ``MPI.COMM_WORLD`` (mpi4py)."""

    def __init__(self) -> None:
        from mpi4py import MPI  # imported only when launched under MPI

        self._mpi = MPI
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self._local: tuple[int, int] | None = None  # (rank, size) on this node

    @staticmethod
    def _check(buffer: np.ndarray) -> None:
        if buffer.dtype != np.float64 or not buffer.flags.c_contiguous:
            raise ValueError("MPI reductions take a contiguous float64 buffer")

    def _wait(self, request) -> None:
        """Complete a non-blocking collective without keeping a core busy.

        MPICH's blocking calls poll in a tight loop; with more ranks than cores (or a
        rank waiting while rank 0 compiles or writes) the pollers steal the cores the
        working ranks need.  Test() also drives MPI's progress engine.
        """
        deadline = time.perf_counter() + _SPIN_SECONDS
        while not request.Test():
            if time.perf_counter() < deadline:
                continue
            pause = _FIRST_SLEEP
            while not request.Test():
                time.sleep(pause)
                pause = min(2.0 * pause, _LONGEST_SLEEP)
            return

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Sum ``buffer`` over all ranks in place with one Allreduce."""
        self._check(buffer)
        self._wait(self._comm.Iallreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM))

    def allreduce_min(self, buffer: np.ndarray) -> None:
        """Elementwise minimum of ``buffer`` over all ranks, in place."""
        self._check(buffer)
        self._wait(self._comm.Iallreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.MIN))

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` on every rank (pickled; for small objects and arrays)."""
        self.barrier()  # wait politely; the bcast itself is then quick
        return self._comm.bcast(value, root=0)

    def any(self, flag: bool) -> bool:
        """Logical OR of ``flag`` over all ranks."""
        buffer = np.array([-1.0 if flag else 0.0])
        self.allreduce_min(buffer)
        return bool(buffer[0] < 0.0)

    def allgather(self, value: object) -> list:
        """Every rank's ``value`` (pickled), in rank order, on every rank."""
        self.barrier()
        return self._comm.allgather(value)

    def barrier(self) -> None:
        """Wait (sleeping, not spinning) until every rank has arrived."""
        self._wait(self._comm.Ibarrier())

    def _node(self) -> tuple[int, int]:
        """(rank, size) within this node: a collective on first use, cached after."""
        if self._local is None:
            local = self._comm.Split_type(self._mpi.COMM_TYPE_SHARED)
            self._local = (local.Get_rank(), local.Get_size())
            local.Free()
        return self._local

    def local_size(self) -> int:
        """Ranks sharing this node (MPI's shared-memory split of the world).

        A collective the first time it is called on any rank: call it on all ranks.
        """
        return self._node()[1]

    def local_rank(self) -> int:
        """This rank's number on its node (a collective the first time, like local_size)."""
        return self._node()[0]

    def abort(self, code: int) -> None:
        """MPI_Abort: the launcher ends every rank of the job."""
        self._comm.Abort(code)


def launched_under_mpi(environ: dict | None = None) -> bool:
    """True when an MPI launcher (mpiexec, srun with PMI) started this process."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in LAUNCHER_VARIABLES):
        return True
    return "SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1


def world() -> Communicator:
    """The communicator of this run: MPI's world when launched under MPI, else one process.

    Raises :class:`UsageError` when a launcher started the process but mpi4py is missing.
    """
    if not launched_under_mpi():
        return SingleProcess()
    try:
        return MPICommunicator()
    except ImportError as error:
        raise UsageError(
            "this process was started by an MPI launcher but mpi4py is not installed; "
            "install it (pip install 'streamae[mpi]') or run without mpiexec/srun."
        ) from error


# -- errors across ranks -------------------------------------------------------------


class PeerError(StreamaeError):
    """Another rank failed in a phase every rank agreed on; its message is on rank 0."""


def mark_collective(error: BaseException) -> BaseException:
    """Mark ``error`` as raised on every rank alike (so no rank needs to abort the job)."""
    error.collective = True  # type: ignore[attr-defined]
    return error


def is_collective(error: BaseException) -> bool:
    """True for an error every rank raises at the same point (see :func:`mark_collective`)."""
    return bool(getattr(error, "collective", False))


def raise_agreed(comm: Communicator, error: StreamaeError | None) -> None:
    """Collective: if any rank's phase failed, raise on every rank; else return.

    The lowest failing rank's error is the one reported: that rank re-raises its own
    error, every other rank a :class:`PeerError` carrying the same message and exit code
    (so rank 0, the one that prints, shows the real message).
    """
    if comm.size == 1:
        if error is not None:
            raise mark_collective(error)
        return
    mine = None if error is None else (str(error), int(error.exit_code))
    reports = comm.allgather(mine)
    for rank, report in enumerate(reports):
        if report is None:
            continue
        if rank == comm.rank and error is not None:
            raise mark_collective(error)
        message, code = report
        peer = PeerError(f"rank {rank}: {message}" if comm.rank == 0 else message)
        peer.exit_code = code
        raise mark_collective(peer)


@contextlib.contextmanager
def agreed_phase(comm: Communicator) -> Iterator[None]:
    """Run a phase with no collective inside; afterwards all ranks agree on its failure.

    An expected failure (:class:`StreamaeError`) on any rank is raised on every rank
    (see :func:`raise_agreed`).  Other exceptions pass through unchanged (and, under
    MPI, end the job by :func:`abort_on_local_error`).
    """
    failure: StreamaeError | None = None
    try:
        yield
    except StreamaeError as error:
        failure = error
    raise_agreed(comm, failure)


@contextlib.contextmanager
def abort_on_local_error(comm: Communicator) -> Iterator[None]:
    """Under MPI, turn an error raised on one rank only into an abort of the whole job.

    A rank that leaves on its own leaves the others waiting forever in their next
    collective.  Collective errors (raised by every rank alike) pass through; anything
    else is printed with the rank's number and the job is aborted with its exit code.
    """
    if comm.size == 1:
        yield
        return
    try:
        yield
    except BaseException as error:
        if is_collective(error) or isinstance(error, SystemExit):
            raise
        code = error.exit_code if isinstance(error, StreamaeError) else EXIT_RUNTIME
        detail = str(error) if isinstance(error, StreamaeError) else f"{type(error).__name__}: {error}"
        print(
            f"Error on MPI rank {comm.rank} of {comm.size}: {detail}; aborting all ranks.",
            file=sys.stderr,
            flush=True,
        )
        # The launcher forwards a rank's stderr from a pipe; on MPI_Abort it kills the
        # ranks, and what it has not yet read from that pipe is lost.  A moment's wait
        # lets the message (the only clue to what went wrong) reach the job's log.
        time.sleep(ABORT_GRACE_SECONDS)
        comm.abort(code)
        raise


@contextlib.contextmanager
def one_rank_reports(comm: Communicator) -> Iterator[None]:
    """Decide which rank reports an error that every rank raised: rank 0 alone.

    An :class:`~streamae.errors.Interrupted` or a collective error leaves every rank
    with the same message; on the other ranks it is marked ``silent`` (see
    :func:`is_silent`), so whoever prints (the CLI) prints it once.  An error raised on
    one rank only never gets here under MPI: :func:`abort_on_local_error` aborts the job
    from that rank, with its number in the message.
    """
    try:
        yield
    except StreamaeError as error:
        if comm.rank != 0 and (isinstance(error, Interrupted) or is_collective(error)):
            error.silent = True  # type: ignore[attr-defined]
        raise


def is_silent(error: BaseException) -> bool:
    """True when another rank reports ``error`` (see :func:`one_rank_reports`)."""
    return bool(getattr(error, "silent", False))


# -- consistency ---------------------------------------------------------------------


def digest(*arrays: np.ndarray) -> float:
    """A 48-bit checksum of the arrays' bytes as an exactly representable float64.

    Equal on two ranks only if the arrays are bit-for-bit equal (up to a 2⁻⁴⁸ chance).
    """
    hasher = hashlib.blake2b(digest_size=6)
    for array in arrays:
        hasher.update(np.ascontiguousarray(array).tobytes())
    return float(int.from_bytes(hasher.digest(), "little"))


def ranks_agree(comm: Communicator, value: float) -> bool:
    """Collective: True when ``value`` is the same on every rank (one tiny Allreduce)."""
    if comm.size == 1:
        return True
    extremes = np.array([value, -value])
    comm.allreduce_min(extremes)
    return bool(extremes[0] == -extremes[1])
