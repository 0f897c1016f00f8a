"""The training loop: L-BFGS iterations, history, checkpoints, stop signals, rank checks.

Every rank runs this loop on identical reduced numbers, so every rank takes the same
decisions at the same iteration; the few decisions only one rank can make (rank 0's
clock for ``checkpoint_minutes``, a signal that reached one rank) are combined by a
collective first.  Rank 0 alone writes the log and the checkpoints.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from streamae.compute.lanes import SingleThreadedBlas
from streamae.compute.lbfgs import (
    LbfgsState,
    StepReport,
    StopRules,
    lbfgs_iteration,
    relative_progress_reason,
)
from streamae.compute.objective import Evaluation, StreamedObjective
from streamae.errors import DataError, Interrupted, StreamaeError
from streamae.io.logfile import JsonLinesLog
from streamae.io.modelfile import HISTORY_FIELDS
from streamae.runtime.mpi import Communicator, agreed_phase, digest, mark_collective, ranks_agree
from streamae.runtime.signals import StopFlag, StopRequested
from streamae.training.checkpoint import CheckpointPolicy, Progress
from streamae.training.runlog import timestamp

# Compare a checksum of the parameters across ranks this often (and at the end).  The
# check is one 16-byte Allreduce and a hash of p values: cheap, but not free for
# millions of parameters, and a divergence cannot go unnoticed for long.
CONSISTENCY_EVERY = 10


class RanksDisagree(StreamaeError):
    """MPI ranks hold different parameters: the reductions did not give equal numbers."""


class TrainingMonitor:
    """Hooks called while training; the default does nothing.

    ``on_block`` after every block read in a pass (rows in it); ``on_iteration`` after
    every L-BFGS iteration with its record; ``on_message`` for one-off notices.
    """

    def on_start(self, n_rows: int, n_features: int, max_iter: int) -> None:
        """Training is about to start."""

    def on_resume(self, iteration: int, max_iter: int | None = None) -> None:
        """Training continues from a checkpoint at ``iteration``, up to ``max_iter`` (the run's)."""

    def on_block(self, rows: int) -> None:
        """A block of ``rows`` rows was processed."""

    def on_pass(self, name: str, n_rows: int) -> None:
        """A pass over the data named ``name`` begins."""

    def on_iteration(self, record: dict) -> None:
        """An iteration ended; ``record`` holds its history entries."""

    def on_checkpoint(self, iteration: int, path: str) -> None:
        """A checkpoint at ``iteration`` was written to ``path`` (rank 0 only)."""

    def on_message(self, text: str) -> None:
        """Something worth telling the user."""

    def on_finish(self, model, reason: str) -> None:
        """Training ended."""


class CountedBlocks:
    """A block source that reports every block to the monitor and can be abandoned.

    With ``abandon=True`` (one process) a stop request raises :class:`StopRequested`
    between blocks, so a signal ends even a long pass quickly.  Under MPI it must not:
    a rank leaving a pass alone would leave the others waiting in its Allreduce.

    Every pass over the source starts with ``monitor.on_pass(label, n_rows)``, so a
    progress bar counts each row once per pass (two-pass reads every row twice, in two
    passes, not one bar of 2m rows).
    """

    def __init__(self, source, monitor: TrainingMonitor, stop: StopFlag, *, abandon: bool) -> None:
        self._source = source
        self._monitor = monitor
        self._stop = stop
        self._abandon = abandon
        self.dtype = source.dtype
        self.block_rows = source.block_rows
        self.label = "pass"
        self.layout = source.layout  # messages name the file's dataset
        self._count_lock = threading.Lock()

    @property
    def n_rows(self) -> int:
        """Rows this source delivers."""
        return self._source.n_rows

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The source's ``(first_row, block)`` pairs."""
        self._monitor.on_pass(self.label, self._source.n_rows)
        for first, block in self._source.blocks():
            if self._abandon and self._stop.requested:
                raise StopRequested
            yield first, block
            self._monitor.on_block(block.shape[0])

    # The lanes' own reads (compute/objective.py, StreamedObjective._stream_by_lanes):
    # the same announcements, stop checks and counts, from several threads at once.

    @property
    def reads_in_parallel(self) -> bool:
        """Whether the lanes may read their own rows (the wrapped source says)."""
        return bool(getattr(self._source, "reads_in_parallel", False))

    def start_pass(self) -> None:
        """A pass of :meth:`read_rows` begins: announced as :meth:`blocks` announces one."""
        self._monitor.on_pass(self.label, self._source.n_rows)
        self._source.start_pass()

    def read_rows(self, first: int, last: int, out: np.ndarray) -> None:
        """Rows [first, last) into ``out``, counted; raises StopRequested as blocks does."""
        if self._abandon and self._stop.requested:
            raise StopRequested
        self._source.read_rows(first, last, out)
        with self._count_lock:  # the monitor's progress bar is not thread-safe
            self._monitor.on_block(last - first)

    def end_pass(self) -> None:
        """The pass of :meth:`read_rows` calls ended."""
        self._source.end_pass()


@dataclass
class TimeSplit:
    """The iterations' evaluation time split into waiting for data and computing (this
    process), the time the iterations spent besides evaluating, and the evaluation at the
    starting point on its own.

    ``waiting``: seconds the lanes waited for the source to deliver a block (reads not
    hidden behind computing); ``computing``: the rest of the evaluations' wall time;
    ``besides``: the rest of the iterations' wall time (the L-BFGS arithmetic over the
    correction pairs, checkpoints, the log), counted by :meth:`Trainer.run`.  ``start``:
    the wall time of the evaluation at the starting point, which is not in the others: on
    a cold Numba cache it includes compiling the kernels (~10 s), which averaged into
    the iterations' evaluations would overstate each of them many times over.
    """

    evaluations: int = 0
    waiting: float = 0.0
    computing: float = 0.0
    besides: float = 0.0
    start: float = 0.0

    def add(self, timing) -> None:
        """Count one evaluation's :class:`~streamae.compute.objective.Timing`."""
        self.evaluations += 1
        self.waiting += timing.waiting
        self.computing += max(0.0, timing.seconds - timing.waiting)

    def as_info(self) -> dict:
        """The entry stored in a model file's info (read back by ``describe``)."""
        return {
            "evaluations": self.evaluations,
            "waiting_seconds": self.waiting,
            "computing_seconds": self.computing,
            "besides_seconds": self.besides,
            "start_seconds": self.start,
        }

    def summary(self) -> str:
        """One sentence: per evaluation of the iterations, how long computing and waiting for
        data took, the share of the training time spent besides evaluating, and the
        evaluation at the starting point when it took much longer than the others."""
        count = max(1, self.evaluations)
        total = self.waiting + self.computing
        share = self.waiting / total if total > 0 else 0.0
        bound = "reading" if share > 0.2 else "computing"
        text = (
            f"per evaluation ({self.evaluations}): {self.computing / count:.3g} s computing, "
            f"{self.waiting / count:.3g} s waiting for data ({share:.0%}): {bound} bounds the run"
        )
        if self.besides > 0:
            text += (
                f"; besides the evaluations (L-BFGS, checkpoints, the log): {self.besides:.3g} s, "
                f"{self.besides / (total + self.besides):.0%} of the training time"
            )
        if self.start > 2 * total / count:
            text += (
                f"; the evaluation at the starting point took {self.start:.3g} s "
                "(with a cold Numba cache it compiles the kernels)"
            )
        return text


def make_record(
    iteration: int,
    evaluation: Evaluation,
    evaluations: int,
    seconds: float,
    report: StepReport | None,
    split: TimeSplit | None = None,
) -> dict:
    """The history entries and display values of one iteration.

    ``split``: this iteration's evaluations' time, waiting for data vs computing.
    """
    split = split or TimeSplit()
    return {
        "iteration": iteration,
        "cost": evaluation.cost,
        "reconstruction": evaluation.reconstruction,
        "weight_decay": evaluation.weight_decay,
        "sparsity": evaluation.sparsity,
        "grad_norm": float(np.linalg.norm(evaluation.gradient)),
        "rho_hat_mean": float(np.mean(evaluation.rho_hat)),
        "rho_hat_min": float(np.min(evaluation.rho_hat)),
        "rho_hat_max": float(np.max(evaluation.rho_hat)),
        "step": report.step if report else 0.0,
        "seconds": seconds,
        "evaluations": evaluations,
        "waiting_seconds": split.waiting,
        "computing_seconds": split.computing,
    }


@dataclass
class _Evaluations:
    """The evaluations of the current iteration, to find the terms at the accepted point."""

    entries: list[tuple[np.ndarray, Evaluation]]

    def find(self, x: np.ndarray) -> Evaluation:
        for point, evaluation in reversed(self.entries):
            if np.array_equal(point, x):
                return evaluation
        raise LookupError("the accepted point was never evaluated")


# save(state, progress) writes the model file (called on rank 0 only) and returns its path.
SaveFunction = Callable[[LbfgsState, Progress], str]


@dataclass(frozen=True)
class RunContext:
    """What every stage's trainer of a run shares: the group of processes, the monitor,
    the stop flag the signal handlers set, and when to write checkpoints."""

    comm: Communicator
    monitor: TrainingMonitor
    stop: StopFlag
    policy: CheckpointPolicy


@dataclass(frozen=True)
class Outputs:
    """Where a trainer writes (rank 0 only).

    ``save`` writes a checkpoint of a state and its progress (None: nothing is written,
    e.g. no output file); ``log`` is the JSON-lines file of iteration records, appended
    to when ``append_log`` (a resumed run, a later stage); ``header`` its first record
    (None: none); ``resume_hint`` ends the message of the :class:`Interrupted` raised when
    a stop signal arrives.
    """

    save: SaveFunction | None = None
    log: str | os.PathLike | None = None
    append_log: bool = False
    resume_hint: str = ""
    header: dict | None = None


class Trainer:
    """Runs L-BFGS iterations on ``objective`` until a stop rule, a signal or an error.

    Every rank builds one alike, from the run's shared ``context`` and its ``outputs``.
    ``tags`` are added to every record (the warm-start stage and its sample size;
    default: stage 1, all the rows).  ``after_iteration(iteration, x, record)`` runs after
    every iteration on every rank (the held-out evaluation): it may add entries to the
    record and return a reason to stop.
    """

    def __init__(
        self,
        objective: StreamedObjective,
        rules: StopRules,
        context: RunContext,
        outputs: Outputs | None = None,
        *,
        after_iteration: Callable[[int, np.ndarray, dict], str | None] | None = None,
        tags: dict | None = None,
    ) -> None:
        outputs = outputs or Outputs()
        self.objective = objective
        self.rules = rules
        self.comm, self.monitor, self.stop, self.policy = (
            context.comm,
            context.monitor,
            context.stop,
            context.policy,
        )
        self.save, self.log, self.append_log = outputs.save, outputs.log, outputs.append_log
        self.resume_hint, self.header = outputs.resume_hint, outputs.header
        self.after_iteration = after_iteration
        self.tags = tags if tags is not None else {"stage": 1, "sample_rows": getattr(objective, "n_rows", 0)}
        self._evaluations = _Evaluations([])
        # Waiting for data vs computing: over the whole run, and over the current iteration.
        self.time_split = TimeSplit()
        self._iteration_split = TimeSplit()

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """J and ∇J at theta (p,), or StopRequested when any rank was asked to stop."""
        return self._evaluate(theta, at_start=False)

    def _evaluate(self, theta: np.ndarray, at_start: bool) -> tuple[float, np.ndarray]:
        """:meth:`value_and_gradient`; ``at_start``: time it apart from the iterations'."""
        # One tiny collective per evaluation: every rank abandons the same evaluation.
        if self.comm.any(self.stop.requested):
            raise StopRequested
        started = time.perf_counter()
        evaluation = self.objective(theta)
        timing = getattr(self.objective, "timing", None)
        if at_start:
            self.time_split.start += time.perf_counter() - started
        elif timing is not None:
            self.time_split.add(timing)
            self._iteration_split.add(timing)
        self._evaluations.entries.append((theta.copy(), evaluation))
        return evaluation.cost, evaluation.gradient

    def start(self, theta0: np.ndarray, memory: int) -> tuple[LbfgsState, Progress]:
        """The state and progress at theta0 (one evaluation), before the first iteration."""
        try:
            f0, g0 = self._evaluate(theta0, at_start=True)
        except StopRequested:
            raise mark_collective(self._interrupted(None)) from None
        if not np.isfinite(f0):
            # J is a reduced number: every rank sees the same, so every rank raises.
            raise mark_collective(DataError("J is not finite at the starting point; check the data and rho."))
        state = LbfgsState.start(theta0, f0, g0, memory)
        return state, Progress(current=self._evaluations.find(theta0))

    def run(self, state: LbfgsState, progress: Progress) -> None:
        """Iterate from ``state`` (updated in place) and extend ``progress``.

        Raises :class:`Interrupted` (on every rank) after writing a checkpoint when a
        stop signal arrives.
        """
        # BLAS at one thread for the whole loop, not only inside the passes: between
        # evaluations it sees only vectors of p values (the line search's slopes, the
        # norms), where a second OpenBLAS thread gains microseconds and then busy-waits
        # for more work (~0.1 s, OpenBLAS's THREAD_TIMEOUT) on a core that the next
        # evaluation's lanes need.  784 -> 196, in-core, 12 iterations: the evaluations
        # took 0.427 and 0.440 s (medians of two runs) inside the loop against 0.390 s for
        # the same objective right after it, in the same process; 0.394 s inside with that
        # wait cut short (OPENBLAS_THREAD_TIMEOUT=4), 0.412 and 0.402 s with this limit
        # (0.428 and 0.413 s right after).
        with SingleThreadedBlas():
            self._iterate(state, progress)

    def _iterate(self, state: LbfgsState, progress: Progress) -> None:
        """The loop of :meth:`run`."""
        started = time.perf_counter()
        # When the last checkpoint ended, at which iteration, and how long its write took.
        checkpoints = [started, state.iteration, 0.0]
        earlier = progress.seconds  # training time of the runs this one continues
        if not state.finished:
            state.finished = self._finished_before_start(state, progress)
        log = None
        if self.log is not None and self.comm.rank == 0:
            log = JsonLinesLog(self.log, append=self.append_log)
        try:
            if log is not None and self.header is not None:
                log.write(self.header)  # inside the try: the log is closed if this fails
            while not state.finished:
                iteration_started = time.perf_counter()
                if not self._one_iteration(state, progress, log, earlier + iteration_started - started):
                    break
                # Rank 0's clock decides; _boundary tells every rank (a collective, every time).
                wanted = self.comm.rank == 0 and self.policy.due(
                    state.iteration,
                    state.iteration - checkpoints[1],
                    time.perf_counter() - checkpoints[0],
                    checkpoints[2],
                )
                if self._boundary(state, wanted) and not state.finished:  # the final write follows anyway
                    writing = time.perf_counter()
                    self._checkpoint(state, progress)
                    checkpoints[:] = [time.perf_counter(), state.iteration, time.perf_counter() - writing]
                spent = self._iteration_split.waiting + self._iteration_split.computing
                self.time_split.besides += max(0.0, time.perf_counter() - iteration_started - spent)
        finally:
            if log is not None:
                log.close()
        progress.seconds = earlier + time.perf_counter() - started

    def _finished_before_start(self, state: LbfgsState, progress: Progress) -> str:
        """Why a run has nothing to do before its first iteration ("" when it has): the
        budget is spent, or (a resumed run) the relative-progress rule is met already."""
        asked, done = self.rules.budget, state.iteration - self.rules.first_iteration
        if done > asked:  # a resumed run: say so rather than "reached"
            return f"max_iter {asked} is below the {done} {self.rules.counted} done"
        if done == asked:
            return "no iterations asked" if asked == 0 else f"reached {asked} {self.rules.counted}"
        return relative_progress_reason(progress.history["cost"][self.rules.first_iteration :], self.rules)

    def _one_iteration(self, state: LbfgsState, progress: Progress, log, seconds_before: float) -> bool:
        """One L-BFGS iteration, its record and the rules after it; False when it made no
        step.  ``seconds_before``: the training time when it began."""
        began = time.perf_counter()
        self._evaluations.entries.clear()
        self._iteration_split = TimeSplit()
        try:
            report = lbfgs_iteration(self.value_and_gradient, state, self.rules)
        except StopRequested:
            # The state is still the one after the last completed iteration:
            # lbfgs_iteration changes it only after the line search (except for
            # dropping the pairs when descent is lost, which the resumed
            # iteration would do identically).
            # The Interrupted message names the checkpoint: no separate line for it.
            self._checkpoint(state, progress, announce=False)
            raise mark_collective(self._interrupted(state)) from None
        if report.step == 0.0:
            return False
        progress.current = self._evaluations.find(state.x)
        progress.seconds = seconds_before + time.perf_counter() - began
        record = make_record(
            state.iteration,
            progress.current,
            state.evaluations,
            progress.seconds,
            report,
            self._iteration_split,
        )
        record.update(self.tags)
        for name in HISTORY_FIELDS:
            progress.history[name].append(float(record[name]))
        record["time"] = timestamp()
        if self.after_iteration is not None:
            reason = self.after_iteration(state.iteration, state.x, record)
            if reason:
                state.finished = reason
        if not state.finished:  # J is a reduced number: every rank decides alike
            stage_costs = progress.history["cost"][self.rules.first_iteration :]
            state.finished = relative_progress_reason(stage_costs, self.rules)
        if log is not None:
            log.write(record)
        self.monitor.on_iteration(record)
        return True

    def _boundary(self, state: LbfgsState, wanted: bool) -> bool:
        """Collective at the end of an iteration: True if rank 0 asks for a checkpoint.

        Every CONSISTENCY_EVERY iterations (and at the end) it also checks that all
        ranks hold bit-identical parameters, raising :class:`RanksDisagree` if not.
        """
        if self.comm.size == 1:
            return wanted
        check = state.iteration % CONSISTENCY_EVERY == 0 or bool(state.finished)
        value = digest(state.x, state.g) if check else 0.0
        buffer = np.array([-1.0 if wanted else 0.0, value, -value])
        self.comm.allreduce_min(buffer)
        if buffer[1] != -buffer[2]:
            raise mark_collective(
                RanksDisagree(
                    f"the MPI ranks hold different parameters at iteration {state.iteration}; "
                    "their reductions did not return identical numbers. Report this with the "
                    "name and version of the MPI library."
                )
            )
        return bool(buffer[0] < 0.0)

    def _checkpoint(self, state: LbfgsState, progress: Progress, *, announce: bool = True) -> None:
        """Collective: rank 0 writes a checkpoint; a failure is raised on every rank."""
        if self.comm.size > 1 and not ranks_agree(self.comm, digest(state.x, state.g)):
            raise mark_collective(
                RanksDisagree(
                    f"the MPI ranks hold different parameters at iteration {state.iteration}; "
                    "no checkpoint was written."
                )
            )
        with agreed_phase(self.comm):
            if self.save is not None and self.comm.rank == 0:
                path = self.save(state, progress)
                # A hook added with checkpoints: monitors written before it may lack it.
                hook = getattr(self.monitor, "on_checkpoint", None)
                if hook is not None and announce:
                    hook(state.iteration, path)

    def _interrupted(self, state: LbfgsState | None) -> Interrupted:
        name = self.stop.signal_name or "a signal on another rank"
        if state is None:
            return Interrupted(f"stopped by {name} before the first iteration; nothing new was written.")
        if self.save is None:
            return Interrupted(
                f"stopped by {name} after iteration {state.iteration}; no output file was given, "
                "so nothing was written."
            )
        return Interrupted(f"stopped by {name} after iteration {state.iteration}; {self.resume_hint}")
