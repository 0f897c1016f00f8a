"""Training and gradient checking as library functions (the CLI calls these; no click here).

``train`` opens the patch file (this process's share of it under MPI), checks the
values once, runs L-BFGS on the streamed objective and writes the model file.  What a
user sees while it runs goes through a :class:`TrainingMonitor`, so the CLI, a notebook
and a batch job can each show progress their own way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import check_output_path
from .distributed import Communicator, SingleProcess
from .errors import DataError, UsageError
from .model import Hyperparameters, initialize
from .modelfile import HISTORY_FIELDS, Model, write_model
from .objective import Evaluation, Objective, check_values
from .optimize import DEFAULT_MEMORY, LbfgsState, StepReport, StopRules, lbfgs_iteration
from .store import (
    ArrayPatches,
    PatchFile,
    chunk_aligned_share,
    default_block_rows,
    inspect_patch_file,
)

DTYPES = {"float32": np.float32, "float64": np.float64}


class TrainingMonitor:
    """Hooks called while training; the default does nothing.

    ``on_block`` after every block read in a pass (rows in it); ``on_iteration`` after
    every L-BFGS iteration with its record; ``on_message`` for one-off notices.
    """

    def on_start(self, n_rows: int, n_features: int, max_iter: int) -> None:
        """Training is about to start."""

    def on_block(self, rows: int) -> None:
        """A block of ``rows`` rows was processed."""

    def on_pass(self, name: str, n_rows: int) -> None:
        """A pass over the data named ``name`` begins."""

    def on_iteration(self, record: dict) -> None:
        """An iteration ended; ``record`` holds its history entries."""

    def on_message(self, text: str) -> None:
        """Something worth telling the user."""

    def on_finish(self, model: Model, reason: str) -> None:
        """Training ended."""


def resolve_threads(threads: int | None, environ: dict | None = None) -> int:
    """Threads to use: the given number, else SLURM_CPUS_PER_TASK, else the CPU affinity."""
    environ = os.environ if environ is None else environ
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}.")
        return threads
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def apply_threads(threads: int) -> None:
    """Give Numba ``threads`` threads and cap BLAS at the same, so they don't oversubscribe."""
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=threads, user_api="blas")


def _dtype(name: str) -> type:
    if name not in DTYPES:
        raise UsageError(f"--dtype must be float32 or float64, got {name!r}.")
    return DTYPES[name]


@dataclass
class _EvaluationLog:
    """The evaluations of the current iteration, to find the terms at the accepted point."""

    entries: list[tuple[np.ndarray, Evaluation]]

    def find(self, x: np.ndarray) -> Evaluation:
        for point, evaluation in reversed(self.entries):
            if np.array_equal(point, x):
                return evaluation
        raise LookupError("the accepted point was never evaluated")


def _record(
    iteration: int, evaluation: Evaluation, evaluations: int, seconds: float, report: StepReport | None
) -> dict:
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
    }


def train(
    data: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    hidden: int = 25,
    rho: float = 0.01,
    beta: float = 3.0,
    lam: float = 1e-4,
    decoder: str = "sigmoid",
    max_iter: int = 400,
    dtype: str = "float32",
    chunk_rows: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    grad_tol: float = 1e-5,
    progress_tol: float = 1e-9,
    memory: int = DEFAULT_MEMORY,
    log: str | os.PathLike | None = None,
    force: bool = False,
    monitor: TrainingMonitor | None = None,
    comm: Communicator | None = None,
) -> Model:
    """Train the sparse autoencoder on the patch file ``data``; returns the model.

    Writes the model to ``output`` (atomically) when given, and one JSON object per
    iteration to ``log``.  Hyperparameters follow the notes' names (``lam`` is λ).
    """
    hyper = Hyperparameters(hidden=hidden, rho=rho, beta=beta, lam=lam, decoder=decoder)
    compute_dtype = _dtype(dtype)
    if max_iter < 0:
        raise UsageError(f"--max-iter must be at least 0, got {max_iter}.")
    if chunk_rows is not None and chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be at least 1, got {chunk_rows}.")
    if memory < 1:
        raise UsageError(f"the L-BFGS memory must be at least 1, got {memory}.")
    monitor = monitor or TrainingMonitor()
    comm = comm or SingleProcess()
    data = Path(data)
    if output is not None and comm.rank == 0:
        check_output_path(output, force=force, inputs=(data,))
    if log is not None and comm.rank == 0:
        check_output_path(log, force=True, inputs=(data,))
    apply_threads(resolve_threads(threads))

    layout = inspect_patch_file(data)
    share = chunk_aligned_share(
        layout.n_rows, chunk_rows or default_block_rows(layout), comm.rank, comm.size
    )
    with PatchFile(data, dtype=compute_dtype, block_rows=chunk_rows, row_range=share) as source:
        monitor.on_message(
            f"{data}: {layout.n_rows:,} patches of {layout.n_features} values "
            f"({layout.dtype}), {hidden} hidden units, {dtype}"
        )
        monitor.on_pass("checking values", source.n_rows)
        check_values(_Counted(source, monitor), hyper, str(data), comm)
        objective = Objective(
            _Counted(source, monitor), hyper, n_visible=layout.n_features, dtype=compute_dtype, comm=comm
        )
        model = _optimize(
            objective,
            initialize(layout.n_features, hidden, seed),
            StopRules(max_iter=max_iter, grad_tol=grad_tol, progress_tol=progress_tol),
            memory,
            monitor,
            log if comm.rank == 0 else None,
        )
    model.patch_shape = layout.patch_shape
    model.data = layout.fingerprint
    model.info.update({"dtype": dtype, "seed": seed, "ranks": comm.size})
    if output is not None and comm.rank == 0:
        write_model(output, model, force=force, inputs=(data,))
    monitor.on_finish(model, model.info.get("finished", ""))
    return model


class _Counted:
    """A block source that tells the monitor about every block it delivers."""

    def __init__(self, source, monitor: TrainingMonitor) -> None:
        self._source = source
        self._monitor = monitor
        self.dtype = source.dtype
        self.block_rows = source.block_rows

    @property
    def n_rows(self) -> int:
        return self._source.n_rows

    def blocks(self):
        for first, block in self._source.blocks():
            yield first, block
            self._monitor.on_block(block.shape[0])


def _optimize(
    objective: Objective,
    theta0: np.ndarray,
    rules: StopRules,
    memory: int,
    monitor: TrainingMonitor,
    log: str | os.PathLike | None,
) -> Model:
    """Run L-BFGS on ``objective`` from theta0 and collect the history into a Model."""
    started = time.perf_counter()
    entries = _EvaluationLog([])
    n_rows = objective.n_rows

    def value_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        monitor.on_pass("J and gradient", 2 * n_rows)
        evaluation = objective(theta)
        entries.entries.append((theta.copy(), evaluation))
        return evaluation.cost, evaluation.gradient

    f0, g0 = value_and_gradient(theta0)
    first = entries.find(theta0)
    if not np.isfinite(f0):
        raise DataError("J is not finite at the starting point; check the data and --rho.")
    state = LbfgsState.start(theta0, f0, g0, memory)
    history: dict[str, list[float]] = {name: [] for name in HISTORY_FIELDS}
    final = first
    log_handle = open(log, "w", encoding="utf-8") if log is not None else None  # noqa: SIM115
    try:
        if rules.max_iter == 0:
            state.finished = "no iterations asked"
        while not state.finished:
            entries.entries.clear()
            report = lbfgs_iteration(value_and_gradient, state, rules)
            if report.step == 0.0:
                break
            final = entries.find(state.x)
            record = _record(
                state.iteration, final, state.evaluations, time.perf_counter() - started, report
            )
            for name in HISTORY_FIELDS:
                history[name].append(float(record[name]))
            if log_handle is not None:
                log_handle.write(json.dumps(record) + "\n")
                log_handle.flush()
            monitor.on_iteration(record)
    finally:
        if log_handle is not None:
            log_handle.close()
    params = _split(state.x, objective.n_visible, objective.n_hidden)
    return Model(
        **params,
        hyper=objective.hyper,
        iterations=state.iteration,
        history={name: np.asarray(values) for name, values in history.items()},
        rho_hat=final.rho_hat,
        optimizer=state.to_arrays(),
        info={
            "finished": state.finished,
            "cost": final.cost,
            "reconstruction": final.reconstruction,
            "weight_decay": final.weight_decay,
            "sparsity": final.sparsity,
            "seconds": time.perf_counter() - started,
            "evaluations": state.evaluations,
        },
    )


def _split(theta: np.ndarray, n_visible: int, n_hidden: int) -> dict[str, np.ndarray]:
    from .model import unpack

    params = unpack(theta, n_visible, n_hidden)
    return {name: getattr(params, name).copy() for name in ("W1", "W2", "b1", "b2")}


def objective(
    data: str | os.PathLike | np.ndarray,
    theta: np.ndarray | None = None,
    *,
    hidden: int = 25,
    rho: float = 0.01,
    beta: float = 3.0,
    lam: float = 1e-4,
    decoder: str = "sigmoid",
    dtype: str = "float64",
    block_rows: int | None = None,
    seed: int = 0,
) -> Evaluation:
    """J, its terms, ∇J (p,) and ρ̂ (s,) at ``theta`` (default: the notes' initialisation).

    ``data`` is a patch file path or an (m, n) array.  The same streamed kernels as
    training compute it.
    """
    hyper = Hyperparameters(hidden=hidden, rho=rho, beta=beta, lam=lam, decoder=decoder)
    compute_dtype = _dtype(dtype)
    if isinstance(data, np.ndarray):
        source = ArrayPatches(np.asarray(data, dtype=compute_dtype), block_rows=block_rows)
    else:
        source = PatchFile(data, dtype=compute_dtype, block_rows=block_rows)
    with source:
        n = source.layout.n_features
        theta = initialize(n, hidden, seed) if theta is None else np.asarray(theta, dtype=np.float64)
        return Objective(source, hyper, n_visible=n, dtype=compute_dtype)(theta)


@dataclass(frozen=True)
class GradientCheck:
    """The result of a central-difference check: analytic and numeric gradients (p,)."""

    analytic: np.ndarray
    numeric: np.ndarray

    @property
    def relative_difference(self) -> float:
        """‖num − ana‖ / ‖num + ana‖, the notes' measure."""
        return float(
            np.linalg.norm(self.numeric - self.analytic) / np.linalg.norm(self.numeric + self.analytic)
        )


GRADCHECK_THRESHOLD = 1e-9


def gradcheck(
    data: str | os.PathLike | None = None,
    *,
    rows: int = 20,
    hidden: int = 5,
    n_visible: int = 16,
    rho: float = 0.1,
    beta: float = 3.0,
    lam: float = 1e-3,
    decoder: str = "sigmoid",
    block_rows: int | None = None,
    epsilon: float = 1e-4,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> GradientCheck:
    """Compare the streamed float64 ∇J with central differences of J.

    On the first ``rows`` rows of the patch file ``data``, or on a small random problem
    (``rows`` × ``n_visible`` values in [0, 1]) when ``data`` is None.  The rows are
    streamed in several blocks on purpose (``block_rows``, default a third of them).
    """
    hyper = Hyperparameters(hidden=hidden, rho=rho, beta=beta, lam=lam, decoder=decoder)
    if rows < 1:
        raise UsageError(f"--rows must be at least 1, got {rows}.")
    block_rows = block_rows or max(1, -(-rows // 3))
    if block_rows < 1:
        raise UsageError(f"--block-rows must be at least 1, got {block_rows}.")
    if data is None:
        generator = np.random.default_rng(seed)
        values = generator.uniform(0.05, 0.95, size=(rows, n_visible))
        source = ArrayPatches(values, block_rows=block_rows)
    else:
        layout = inspect_patch_file(data)
        rows = min(rows, layout.n_rows)
        source = PatchFile(data, dtype=np.float64, block_rows=block_rows, row_range=(0, rows))
        n_visible = layout.n_features
    with source:
        check_values(source, hyper, str(data or "<random>"))
        objective = Objective(source, hyper, n_visible=n_visible, dtype=np.float64)
        theta = initialize(n_visible, hidden, seed)
        # Nudge the biases off zero so their gradients are checked at a generic point.
        theta[2 * n_visible * hidden :] = np.random.default_rng(seed + 1).normal(
            0.0, 0.1, size=hidden + n_visible
        )
        analytic = objective(theta).gradient
        numeric = np.empty_like(theta)
        for index in range(theta.shape[0]):
            original = theta[index]
            theta[index] = original + epsilon
            plus = objective(theta).cost
            theta[index] = original - epsilon
            minus = objective(theta).cost
            theta[index] = original
            numeric[index] = (plus - minus) / (2.0 * epsilon)
            if progress is not None:
                progress(index + 1, theta.shape[0])
    return GradientCheck(analytic=analytic, numeric=numeric)
