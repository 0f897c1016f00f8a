"""Helpers every test module shares: run the command line, judge a failure, write patch files.

``invoke`` runs ``streamae ARGS`` in this process (CliRunner); ``run``/``start`` run it in
a subprocess, alone or under ``mpiexec``, always with a timeout, so a hang fails the test
instead of blocking the suite.  The MPI tests use the PyPI ``mpich`` wheel's ``mpiexec``
and are skipped where mpi4py or mpiexec is missing.  Fixtures built on these live in
``conftest.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner, Result

from streamae.cli.main import cli
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.io.modelfile import HISTORY_FIELDS, load_model
from streamae.runtime.mpi import LAUNCHER_VARIABLES as MPI_LAUNCHER_VARIABLES
from streamae.runtime.signals import StopFlag
from streamae.training.loop import TrainingMonitor

TESTS = Path(__file__).resolve().parent
IMAGES_DIR = TESTS.parent / "streamae" / "data" / "images"
MNIST_IMAGES = TESTS.parent / "streamae" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
# A hang must fail, not block: generous against a slow shared machine (8 ranks on 2
# cores import Numba eight times), short against "forever".
RUN_TIMEOUT = 120
# Entry point of the command line without relying on the console script being on PATH.
CLI = "from streamae.cli.main import main; main()"
# A message is "plain" when it is short: one or two sentences, never a dump of a value.
MAX_MESSAGE_CHARS = 600
MAX_SENTENCES = 2
# Words a message uses to tell the user what to do; a message with none of them only
# describes the problem.  "must" and click's "not in the range" state the valid values of
# an option, which is the fix for a bad option value.
FIX_WORDS = (
    "must", "not in the range", "is not one of",
    "give", "pass", "choose", "check", "extract", "train", "use", "free", "replace", "lower",
    "remove", "rename", "create", "write", "encode", "pick", "leave", "save", "download", "resume",
    "convert", "rerun", "delete", "set",
)  # fmt: skip
# Launcher variables a subprocess must not inherit (the test may itself run under MPI).
# Those the library looks for, and Slurm's (a test run inside an allocation).
LAUNCHER_VARIABLES = (
    *MPI_LAUNCHER_VARIABLES,
    "SLURM_STEP_ID",
    "SLURM_NTASKS",
    "SLURM_CPUS_PER_TASK",
)


# --------------------------------------------------------------------------- in this process


def invoke(*args: object) -> Result:
    """Run ``streamae ARGS`` in this process, as a user types it (stdout and stderr apart).

    The output is printed, so pytest shows it when the test fails.
    """
    result = CliRunner().invoke(cli, [os.fspath(a) if isinstance(a, Path) else str(a) for a in args])
    print(result.output)
    return result


def error_line(stderr: str) -> str:
    """The single ``Error: ...`` line of ``stderr`` (empty if there is none or several)."""
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    return errors[0] if len(errors) == 1 else ""


def sentence_count(message: str, names: Iterable[str] = ()) -> int:
    """Sentences in ``message``: full stops ending a word, paths and numbers left out."""
    text = message
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(name, "FILE")
    # Paths hold dots that end nothing.  Token by token, not a regex: a regex with \S*
    # backtracks quadratically over a hostile 10 MB word.
    text = " ".join("PATH" if "/" in token or "\\" in token else token for token in text.split())
    return len(re.findall(r"[.!?](?=\s|$)", text))


def failure_problems(
    stdout: str,
    stderr: str,
    exit_code: int,
    codes: Sequence[int],
    names: Sequence[str],
    fragments: Sequence[str] = (),
) -> list[str]:
    """What is wrong with a failure's output, as a list of complaints (empty: clean)."""
    problems = []
    if exit_code not in codes:
        problems.append(f"exit code {exit_code}, expected {' or '.join(map(str, codes))}")
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append("a traceback was printed")
    line = error_line(stderr)
    if not line:
        problems.append("not exactly one 'Error:' line on stderr")
        return problems
    if not stderr.rstrip().endswith(line):
        problems.append("the error is not the last thing said")
    message = line[len("Error: ") :]
    if "internal error" in message:
        problems.append("an internal error (a bug), not an expected failure")
    if len(message) > MAX_MESSAGE_CHARS:
        problems.append(f"the message is {len(message)} characters long")
    if sentence_count(message, names) > MAX_SENTENCES:
        problems.append("the message has more than two sentences")
    if names and not any(name in message for name in names):
        problems.append(f"the message names none of {list(names)}")
    # Whole words: "the checkpoint is damaged" says nothing to do, though it holds "check".
    if not any(re.search(rf"\b{word}\b", message, re.IGNORECASE) for word in FIX_WORDS):
        problems.append("the message does not say what to do")
    problems += [f"the message lacks {fragment!r}" for fragment in fragments if fragment not in message]
    return problems


def assert_clean_failure(result: Result, code: int, *fragments: str) -> str:
    """What DESIGN.md promises for an expected failure: exit ``code``, one short ``Error:``
    line, said last, holding every fragment and saying what to do, no traceback.

    Returns the message (the error line without ``Error: ``).
    """
    problems = failure_problems(result.stdout, result.stderr, result.exit_code, (code,), (), fragments)
    assert not problems, f"{problems}\nstderr: {result.stderr}"
    return error_line(result.stderr)[len("Error: ") :]


# --------------------------------------------------------------------------- files


def write_patch_file(
    path: Path,
    data: np.ndarray,
    *,
    chunk_rows: int | None = 256,
    patch_shape: tuple[int, ...] | None = None,
    dataset: str = "patches",
    attrs: dict | None = None,
) -> Path:
    """Write ``data`` (m, n) as a minimal patch file: ``/<dataset>`` chunked by ``chunk_rows``
    rows (or contiguous), the format string, ``patch_shape`` and any other ``attrs``."""
    with h5py.File(path, "w") as handle:
        chunks = None
        if chunk_rows and data.ndim >= 1 and data.size:
            chunks = (min(chunk_rows, data.shape[0]), *data.shape[1:])
        handle.create_dataset(dataset, data=data, chunks=chunks)
        handle.attrs["format"] = "streamae.patches/1"
        if patch_shape is not None:
            handle.attrs["patch_shape"] = np.asarray(patch_shape, dtype=np.int64)
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value
    return path


def write_large_patch_file(
    path: Path, rows: int, *, n: int = 64, chunk_rows: int = 1024, seed: int = 7
) -> Path:
    """A float32 (rows, n) patch file of values in [0.1, 0.9], written slab by slab of 16
    chunks, so the test process stays small however many rows it writes."""
    generator = np.random.default_rng(seed)
    slab = 16 * chunk_rows
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "streamae.patches/1"
        dataset = handle.create_dataset("patches", shape=(rows, n), dtype=np.float32, chunks=(chunk_rows, n))
        for first in range(0, rows, slab):
            last = min(rows, first + slab)
            dataset[first:last] = generator.uniform(0.1, 0.9, size=(last - first, n)).astype(np.float32)
    return path


def read_patches(path: Path) -> tuple[np.ndarray, dict]:
    """The ``/patches`` rows of a patch file and its attributes."""
    with h5py.File(path, "r") as handle:
        return handle["patches"][...], dict(handle.attrs)


# --------------------------------------------------------------------------- subprocesses


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


def marked_pids(marker: str, rank: int | None = None, *, variable: str = "STREAMAE_TEST_JOB") -> list[int]:
    """Process ids started with ``variable=marker`` in their environment (and, if ``rank`` is
    given, ``PMI_RANK=rank``): the processes of one test's job, MPI ranks included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{variable}={marker}".encode() not in environ:
            continue
        if rank is None or f"PMI_RANK={rank}".encode() in environ:
            found.append(int(entry.name))
    return found


# --- training runs: stop at a given point, compare with an uninterrupted run -----------


class StopAt(TrainingMonitor):
    """Requests a stop after iteration ``iteration``, or at block ``block`` of the run."""

    def __init__(self, flag: StopFlag, *, iteration: int | None = None, block: int | None = None):
        self.flag, self.iteration, self.block = flag, iteration, block
        self.blocks = 0
        self.checkpoints: list[int] = []

    def on_block(self, rows: int) -> None:
        self.blocks += 1
        if self.blocks == self.block:
            self.flag.request("SIGTERM")

    def on_iteration(self, record: dict) -> None:
        if record["iteration"] == self.iteration:
            self.flag.request("SIGTERM")

    def on_checkpoint(self, iteration: int, path: str) -> None:
        saved = load_model(path)
        assert saved.iterations == iteration and saved.info["finished"] == ""
        self.checkpoints.append(iteration)


def assert_same_run(resumed, reference, *, exact: bool = True) -> None:
    assert resumed.iterations == reference.iterations
    assert resumed.info["evaluations"] == reference.info["evaluations"]
    assert resumed.info["finished"] == reference.info["finished"]
    assert relative_difference(resumed.theta, reference.theta) < 1e-10
    for name in HISTORY_FIELDS:
        if name != "seconds":
            np.testing.assert_allclose(resumed.history[name], reference.history[name], rtol=1e-10)
    if exact:  # same data, dtype, blocks and ranks: bit for bit
        assert np.array_equal(resumed.theta, reference.theta)
        assert np.array_equal(resumed.history["cost"], reference.history["cost"])


def orientation_coherence(W1: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per unit, (λ1 − λ2)/(λ1 + λ2) of the gradient structure tensor: 1 for a pure edge."""
    values = []
    for weights in W1:
        gy, gx = np.gradient(weights.reshape(shape))
        tensor = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]])
        low, high = np.linalg.eigvalsh(tensor)
        values.append((high - low) / (high + low))
    return np.array(values)


def objective_problem(rng, n, s, rows, decoder="sigmoid", activation="sigmoid"):
    """Data in [0.05, 0.95] (rows, n), hyperparameters for ``s`` hidden units and a point
    theta (2*n*s + s + n,) with non-zero biases, for comparing objectives to the dense twin."""
    X = rng.uniform(0.05, 0.95, size=(rows, n))
    hyper = Hyperparameters(hidden=s, rho=0.05, beta=2.0, lam=1e-3, decoder=decoder, activation=activation)
    theta = initialize(n, s, seed=3)
    theta[2 * n * s :] = rng.normal(0.0, 0.3, size=s + n)
    return X, hyper, theta


def uniform_patch_file(path: Path, *, seed: int, rows: int, n: int = 16, chunk_rows: int = 256) -> Path:
    """A patch file of ``rows`` float32 rows (rows, n) uniform in [0.05, 0.95], drawn with ``seed``."""
    values = np.random.default_rng(seed).uniform(0.05, 0.95, size=(rows, n)).astype(np.float32)
    return write_patch_file(path, values, chunk_rows=chunk_rows)


class Recorder(TrainingMonitor):
    """Keeps every message; requests a stop after iteration ``stop_after``."""

    def __init__(self, flag: StopFlag | None = None, stop_after: int | None = None) -> None:
        self.flag, self.stop_after = flag, stop_after
        self.messages: list[str] = []
        self.checkpoints: list[int] = []
        self.finish_reason = None

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_iteration(self, record: dict) -> None:
        if record["iteration"] == self.stop_after:
            self.flag.request("SIGTERM")

    def on_checkpoint(self, iteration: int, path: str) -> None:
        self.checkpoints.append(iteration)

    def on_finish(self, model, reason: str) -> None:
        self.finish_reason = reason
