"""Running ``streamae train`` in subprocesses, alone or under ``mpiexec``, for the cluster tests.

The MPI tests use the PyPI ``mpich`` wheel's ``mpiexec`` and are skipped where mpi4py
or mpiexec is missing.  Every run has a timeout, so a hang fails the test instead of
blocking the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# A hang must fail, not block: generous against a slow shared machine (8 ranks on 2
# cores import Numba eight times), short against "forever".
RUN_TIMEOUT = 120
# Entry point of the command line without relying on the console script being on PATH.
CLI = "from streamae.cli.main import main; main()"
LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "HYDRA_CONTROL_FD",
    "SLURM_STEP_ID",
    "SLURM_NTASKS",
    "SLURM_CPUS_PER_TASK",
)


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the mpich wheel's), else one on PATH, else None."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


def have_mpi() -> bool:
    """True when mpi4py imports and an mpiexec exists."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return mpiexec() is not None


needs_mpi = pytest.mark.skipif(
    not have_mpi(), reason="needs mpi4py and mpiexec (pip install 'streamae[mpi]')"
)


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables, plus ``extra``."""
    environ = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    environ.update(extra)
    return environ


def command(args: list[str], ranks: int | None = None, script: str = CLI) -> list[str]:
    """The argv running ``script`` with ``args``, under ``mpiexec -n ranks`` if given."""
    python = [sys.executable, "-c", script, *args]
    if ranks is None:
        return python
    return [mpiexec(), "-n", str(ranks), *python]


def run(
    args: list[str], ranks: int | None = None, *, script: str = CLI, cwd: Path | None = None, **extra: str
) -> subprocess.CompletedProcess:
    """Run to the end (or the timeout) and return the completed process (text output)."""
    return subprocess.run(
        command(args, ranks, script),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=clean_environment(**extra),
        cwd=cwd,
    )


def start(args: list[str], ranks: int | None = None, **extra: str) -> subprocess.Popen:
    """Start a run in the background (text output piped)."""
    return subprocess.Popen(
        command(args, ranks),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environment(**extra),
    )


def wait_for_lines(path: Path, lines: int, process: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> int:
    """Wait until the file ``path`` has at least ``lines`` lines; returns the count seen.

    Fails if the process ends first or the timeout passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            count = path.read_text().count("\n")
            if count >= lines:
                return count
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (code {process.returncode}) before {lines} iterations:\n{err}")
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"no {lines} iterations within {timeout} s")


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖ (0 when both are zero)."""
    scale = float(np.linalg.norm(b))
    difference = float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
    return difference / scale if scale else difference


def rank_pids(marker: str, rank: int) -> list[int]:
    """Process ids of the MPI rank ``rank`` of the job started with ``STREAMAE_TEST_JOB=marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"STREAMAE_TEST_JOB={marker}".encode() in environ and f"PMI_RANK={rank}".encode() in environ:
            found.append(int(entry.name))
    return found
