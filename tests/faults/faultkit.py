"""Helpers of the fault campaign: run the CLI, judge a failure, guard outputs, count figures.

Every bad-input test ends in :func:`assert_clean_case`, which checks what DESIGN.md
promises for an expected failure (exit code 1 or 2, one plain ``Error:`` line naming the
file and what to do, no traceback) and records the case in :data:`FIGURES`, so the run
prints how many cases each command was given and how many produced the clear message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import Result
from helpers import clean_environment, error_line, failure_problems, mpiexec

from streamae.io.atomic import TEMP_SUFFIX

# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """The campaign's counts, filled in as the tests run and printed at the end."""

    cases: Counter = field(default_factory=Counter)
    clear: Counter = field(default_factory=Counter)
    kills: Counter = field(default_factory=Counter)
    torn: Counter = field(default_factory=Counter)
    mid_write: Counter = field(default_factory=Counter)
    left: Counter = field(default_factory=Counter)
    resumes: Counter = field(default_factory=Counter)
    matched: Counter = field(default_factory=Counter)

    def record_case(self, command: str, ok: bool) -> None:
        """One bad-input case given to ``command``; ``ok`` if it produced the clear message."""
        self.cases[command] += 1
        self.clear[command] += int(ok)

    def record_kill(
        self, command: str, torn: bool, mid_write: bool = False, left: bool | None = None
    ) -> None:
        """One SIGKILL of ``command``; ``torn`` if it left a torn or lost file; ``mid_write``
        if a temporary of an atomic write existed at the moment of the kill; ``left`` if a
        temporary was still there after the next run that writes the same target."""
        self.kills[command] += 1
        self.torn[command] += int(torn)
        self.mid_write[command] += int(mid_write)
        if left is not None:  # only harnesses that run the next write and look say it
            self.left[command] += int(left)

    def record_resume(self, command: str, matched: bool) -> None:
        """One resumed run completed; ``matched`` if it equals the uninterrupted run."""
        self.resumes[command] += 1
        self.matched[command] += int(matched)

    def summary_lines(self) -> list[str]:
        """Human-readable lines, one per command and kind of figure."""
        lines = [
            f"bad input  {command:<12} {self.cases[command]:4d} cases, {self.clear[command]:4d} clear"
            for command in sorted(self.cases)
        ]
        if self.cases:
            lines.append(
                f"bad input  {'total':<12} {sum(self.cases.values()):4d} cases, "
                f"{sum(self.clear.values()):4d} clear"
            )
        lines += [
            f"SIGKILL    {command:<12} {self.kills[command]:4d} kills "
            f"({self.mid_write[command]} while writing), {self.torn[command]:4d} torn or lost"
            + (f", {self.left[command]} left behind after the next run" if command in self.left else "")
            for command in sorted(self.kills)
        ]
        lines += [
            f"resume     {command:<12} {self.resumes[command]:4d} resumes, {self.matched[command]:4d} matched"
            for command in sorted(self.resumes)
        ]
        return lines


FIGURES = Figures()


# --------------------------------------------------------------------------- the CLI


# command -> (builder of its argv for an output path, the inputs it reads)
Builder = Callable[[dict[str, Path], Path], list[object]]
WRITERS: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "extract": (lambda i, o: ["extract", i["image"], "-o", o, "--num-patches", "10", "-q"], ("image",)),
    "train": (lambda i, o: ["train", i["patches"], "-o", o, "--max-iter", "1", "--hidden", "2", "-q"],
              ("patches",)),
    "train --log": (lambda i, o: ["train", i["patches"], "-o", o.parent / "m-log.h5", "--log", o,
                                  "--max-iter", "1", "--hidden", "2", "-q"], ("patches",)),
    "encode": (lambda i, o: ["encode", i["model"], i["patches"], "-o", o, "-q"], ("model", "patches")),
    "visualize": (lambda i, o: ["visualize", i["model"], "-o", o], ("model",)),
    "visualize --curves": (lambda i, o: ["visualize", i["model"], "--curves", o], ("model",)),
    "visualize --activations": (lambda i, o: ["visualize", i["model"], "--activations", o], ("model",)),
}  # fmt: skip


def assert_clean_case(
    result: Result,
    command: str,
    codes: int | Sequence[int],
    names: Sequence[str | Path] = (),
    fragments: Sequence[str] = (),
) -> str:
    """Check an in-process CLI failure, record it in FIGURES and return the message.

    ``names`` are files (paths or bare names) of which the message must name one.
    """
    codes = (codes,) if isinstance(codes, int) else tuple(codes)
    names = [name.name if isinstance(name, Path) else str(name) for name in names]
    problems = failure_problems(result.stdout, result.stderr, result.exit_code, codes, names, fragments)
    FIGURES.record_case(command, not problems)
    assert not problems, f"{problems}\nstderr: {result.stderr}"
    return error_line(result.stderr)[len("Error: ") :]


# --------------------------------------------------------------------------- outputs


@dataclass
class OutputGuard:
    """A pre-existing output file and its bytes and mtime, to check a failure kept it."""

    path: Path
    content: bytes
    mtime_ns: int

    @classmethod
    def create(cls, path: Path, content: bytes = b"previous output, must survive\n") -> OutputGuard:
        """Write ``content`` at ``path`` with an old mtime (so any rewrite shows)."""
        path.write_bytes(content)
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        return cls(path, content, path.stat().st_mtime_ns)

    def assert_intact(self) -> None:
        """The file is there with the same bytes and mtime, and no temporary is left beside it."""
        assert self.path.exists(), f"{self.path} was removed"
        assert self.path.read_bytes() == self.content, f"{self.path} was altered"
        assert self.path.stat().st_mtime_ns == self.mtime_ns, f"{self.path} was rewritten"
        assert_no_temporaries(self.path.parent)


def assert_no_temporaries(folder: Path) -> None:
    """No temporary of an atomic write is left in ``folder``."""
    left = sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))
    assert not left, f"temporaries left behind: {left}"


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime_ns) of every file in ``folder`` (to see what a run created)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


# --------------------------------------------------------------------------- files


def write_model(path: Path, *, n: int = 64, s: int = 9, patch_shape=(8, 8, 1), seed: int = 3) -> Path:
    """A valid model file (small random weights, a short history) written by streamae itself."""
    from streamae.compute.parameters import Hyperparameters
    from streamae.io.modelfile import Model
    from streamae.io.modelfile import write_model as write

    rng = np.random.default_rng(seed)
    history = {name: np.linspace(1.0, 0.5, 3) for name in ("cost", "reconstruction", "grad_norm")}
    history |= {name: np.full(3, 0.1) for name in ("weight_decay", "sparsity", "seconds")}
    history["evaluations"] = np.arange(1.0, 4.0)
    model = Model(
        W1=rng.normal(0, 0.1, (s, n)),
        W2=rng.normal(0, 0.1, (n, s)),
        b1=np.zeros(s),
        b2=np.zeros(n),
        hyper=Hyperparameters(hidden=s),
        patch_shape=patch_shape,
        iterations=3,
        history=history,
        rho_hat=np.full(s, 0.05),
        data={"path": "planted", "shape": [0, n], "dtype": "float32"},
    )
    write(path, model, force=True)
    return path


def edit_hdf5(path: Path, source: Path, edit) -> Path:
    """Copy ``source`` to ``path`` and apply ``edit(handle)`` to the copy opened for writing."""
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as handle:
        edit(handle)
    return path


# --------------------------------------------------------------------------- subprocesses


def streamae_command(args: Sequence[object], ranks: int | None = None) -> list[str]:
    """argv of ``streamae ARGS`` (the console script beside this Python), under mpiexec if asked."""
    script = Path(sys.executable).parent / "streamae"
    program = [str(script)] if script.exists() else [sys.executable, "-m", "streamae.cli.main"]
    argv = [*program, *(os.fspath(a) if isinstance(a, Path) else str(a) for a in args)]
    if ranks is None:
        return argv
    return [mpiexec(), "-n", str(ranks), *argv]


def subprocess_environment(**extra: str) -> dict[str, str]:
    """This environment without launcher variables, one compute thread, plus ``extra``.

    One thread each keeps the subprocesses light on a machine shared with other work.
    """
    threads = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return clean_environment(**(threads | extra))


def run_streamae(args: Sequence[object], ranks: int | None = None, timeout: float = 180, **extra: str):
    """Run ``streamae ARGS`` to the end in a subprocess; returns the CompletedProcess (text)."""
    return subprocess.run(
        streamae_command(args, ranks),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_environment(**extra),
    )


def assert_clean_subprocess_failure(
    completed: subprocess.CompletedProcess,
    command: str,
    codes: int | Sequence[int],
    names: Sequence[str | Path] = (),
    fragments: Sequence[str] = (),
) -> str:
    """:func:`assert_clean_case` for a run of :func:`run_streamae` (a subprocess)."""
    codes = (codes,) if isinstance(codes, int) else tuple(codes)
    names = [name.name if isinstance(name, Path) else str(name) for name in names]
    problems = failure_problems(
        completed.stdout, completed.stderr, completed.returncode, codes, names, fragments
    )
    FIGURES.record_case(command, not problems)
    assert not problems, f"{problems}\nstderr: {completed.stderr}"
    return error_line(completed.stderr)[len("Error: ") :]


@contextmanager
def mounted_tmpfs(folder: Path, options: str, why_root: str) -> Iterator[Path]:
    """``folder`` (created here) with a tmpfs mounted on it with ``options`` for the block,
    unmounted after; skips the test with ``why_root`` when not root, or when mount fails."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip(why_root)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
