"""The reduction across processes: a no-op for one process, MPI Allreduce for many.

With one process nothing of MPI is imported.  Under ``mpiexec``/``srun`` (detected from
the launcher's environment variables) mpi4py is imported and every pass's partial sums,
gathered into one flat float64 buffer, are added across ranks with a single Allreduce.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

# Environment variables that MPI launchers set in every rank they start.
_LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "HYDRA_CONTROL_FD",
)


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


class MPICommunicator:
    """A communicator over ``MPI.COMM_WORLD`` (mpi4py)."""

    def __init__(self) -> None:
        from mpi4py import MPI  # imported only when launched under MPI

        self._mpi = MPI
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()

    @staticmethod
    def _check(buffer: np.ndarray) -> None:
        if buffer.dtype != np.float64 or not buffer.flags.c_contiguous:
            raise ValueError("MPI reductions take a contiguous float64 buffer")

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Sum ``buffer`` over all ranks in place with one Allreduce."""
        self._check(buffer)
        self._comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)

    def allreduce_min(self, buffer: np.ndarray) -> None:
        """Elementwise minimum of ``buffer`` over all ranks, in place."""
        self._check(buffer)
        self._comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.MIN)

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` on every rank."""
        return self._comm.bcast(value, root=0)

    def any(self, flag: bool) -> bool:
        """Logical OR of ``flag`` over all ranks."""
        return bool(self._comm.allreduce(bool(flag), op=self._mpi.LOR))


def launched_under_mpi(environ: dict | None = None) -> bool:
    """True when an MPI launcher (mpiexec, srun with PMI) started this process."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in _LAUNCHER_VARIABLES):
        return True
    return "SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1


def world() -> Communicator:
    """The communicator of this run: MPI's world when launched under MPI, else one process."""
    if launched_under_mpi():
        return MPICommunicator()
    return SingleProcess()
