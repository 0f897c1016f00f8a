"""Training and gradient checking as library functions (the CLI calls these; no click here).

``train`` opens the patch file (this process's share of it under MPI), checks the
values once, runs L-BFGS on the streamed objective (:mod:`streamae.training.loop`) and writes
the model file, with checkpoints along the way (:mod:`streamae.training.checkpoint`).  What a
user sees while it runs goes through a :class:`TrainingMonitor`, so the CLI, a notebook
and a batch job can each show progress their own way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.compute.lbfgs import LbfgsState, StopRules
from streamae.compute.objective import Evaluation, StreamedObjective, check_values
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import TwoPassObjective, make_objective, parse_memory_budget
from streamae.errors import DataError, InputFileError, Interrupted, MissingInputError, UsageError
from streamae.io.atomic import check_output_path
from streamae.io.hdf5 import open_hdf5
from streamae.io.modelfile import Model, load_model, write_model
from streamae.io.normalization import read_normalization
from streamae.io.patchfile import (
    ArrayPatches,
    PatchFile,
    PatchLayout,
    chunk_aligned_share,
    default_block_rows,
    inspect_patch_file,
    read_layout,
    validate_patch_dataset,
)
from streamae.runtime.mpi import (
    Communicator,
    SingleProcess,
    abort_on_local_error,
    agreed_phase,
    mark_collective,
)
from streamae.runtime.signals import StopFlag, StopRequested, stop_on_signals
from streamae.training.checkpoint import (
    DEFAULT_CHECKPOINT_EVERY,
    CheckpointPolicy,
    Progress,
    ResumePoint,
    check_compatible,
    resume_point,
)
from streamae.training.loop import CountedBlocks, Trainer, TrainingMonitor
from streamae.training.resume import resolve_settings, stored_settings
from streamae.training.runlog import format_header, run_header
from streamae.training.warnings import data_warnings, resume_warnings

__all__ = [
    "DTYPES",
    "GRADCHECK_THRESHOLD",
    "GradientCheck",
    "TrainingMonitor",
    "apply_threads",
    "gradcheck",
    "objective",
    "resolve_threads",
    "train",
]

DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_threads(threads: int | None, environ: dict | None = None, local_ranks: int = 1) -> int:
    """Threads to use: the given number, else SLURM_CPUS_PER_TASK, else the CPU affinity.

    Under MPI without SLURM's hint, ``local_ranks`` processes share this node: when the
    launcher did not bind them (each sees every CPU), each takes its share of the CPUs
    instead of all of them.
    """
    environ = os.environ if environ is None else environ
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}.")
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


def _dtype(name: str) -> type:
    if name not in DTYPES:
        raise UsageError(f"--dtype must be float32 or float64, got {name!r}.")
    return DTYPES[name]


def warm_up_kernels(comm: Communicator, n_visible: int, hyper: Hyperparameters, dtype: type) -> None:
    """Collective: compile the kernels once into Numba's cache before all ranks use them.

    N ranks compiling the same functions into one cache directory at once waste N times
    the CPU and race on the cache files.  So rank 0 compiles first, on a tiny block;
    then the first rank of every other node does the same, which loads the cached code
    when NUMBA_CACHE_DIR is shared and compiles once per node when it is node-local;
    then everyone else loads it.  Waiting ranks sleep in the barriers.
    """
    if comm.size == 1:
        return  # compiled on first use; nothing to coordinate

    def compile_on_a_tiny_block() -> None:
        rows = np.full((8, n_visible), 0.5, dtype=dtype)
        tiny = ArrayPatches(rows)
        check_values(tiny, hyper, "<warm-up>")
        theta = initialize(n_visible, hyper.hidden, 0)
        with contextlib.ExitStack() as stack:
            objective = TwoPassObjective(tiny, hyper, n_visible=n_visible, dtype=dtype)
            _close_when_done(stack, objective)
            objective(theta)

    if comm.rank == 0:
        compile_on_a_tiny_block()
    comm.barrier()
    if comm.rank != 0 and comm.local_rank() == 0:
        compile_on_a_tiny_block()
    comm.barrier()


def _close_when_done(stack: contextlib.ExitStack, objective: StreamedObjective) -> None:
    """Stop the objective's worker threads when ``stack`` closes (if it has any)."""
    close = getattr(objective, "close", None)
    if close is not None:
        stack.callback(close)


@dataclass
class _Setup:
    """What every rank knows after the (agreed) opening phase."""

    layout: PatchLayout
    source: PatchFile
    block_rows: int
    resumed: ResumePoint | None


def _open(
    data: Path,
    output: str | os.PathLike | None,
    log: str | os.PathLike | None,
    *,
    hyper: Hyperparameters,
    dtype: str,
    chunk_rows: int | None,
    force: bool,
    resume: bool,
    file_locking: bool | None,
    comm: Communicator,
    stack: contextlib.ExitStack,
) -> _Setup:
    """Check the outputs (rank 0), open this rank's share of the data, read the checkpoint."""
    if resume and output is None:
        raise UsageError("--resume needs the model file to continue from (-o/--output).")
    if comm.rank == 0:
        if output is not None:
            if resume and not Path(output).exists():
                raise MissingInputError(
                    f"{output}: no such model file to resume from; train without --resume first."
                )
            # Resuming replaces the checkpoint it continues from: that is the point of it.
            check_output_path(output, force=force or resume, inputs=(data,))
        if log is not None:
            check_output_path(log, force=True, inputs=(data,))
    with _explained_lock_failure(data):
        layout = _layout(data, file_locking)
        block_rows = chunk_rows or default_block_rows(layout)
        share = chunk_aligned_share(layout.n_rows, block_rows, comm.rank, comm.size)
        source = stack.enter_context(
            PatchFile(
                data, dtype=DTYPES[dtype], block_rows=chunk_rows, row_range=share, file_locking=file_locking
            )
        )
    resumed = None
    if resume and comm.rank == 0:
        previous = load_model(output)
        check_compatible(previous, output, hyper=hyper, fingerprint=layout.fingerprint, dtype=dtype)
        resumed = resume_point(previous, output)
    return _Setup(layout=layout, source=source, block_rows=block_rows, resumed=resumed)


def _layout(data: Path, file_locking: bool | None) -> PatchLayout:
    """inspect_patch_file, honouring ``file_locking`` (which it does not take)."""
    with open_hdf5(data, file_locking=file_locking) as handle:
        return read_layout(validate_patch_dataset(handle, data), data)


@contextlib.contextmanager
def _explained_lock_failure(data: Path) -> Iterator[None]:
    """Say what to do when HDF5 cannot lock the file (NFS, Lustre, a writer holding it)."""
    try:
        yield
    except InputFileError as error:
        if "unable to lock file" not in str(error):
            raise
        raise InputFileError(
            f"{data}: HDF5 could not lock the file (a file system without locks, such as NFS or "
            "Lustre, or another program writing it); pass --no-file-locking or set "
            "HDF5_USE_FILE_LOCKING=FALSE if nothing writes it."
        ) from error


def train(
    data: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    hidden: int | None = None,
    rho: float | None = None,
    beta: float | None = None,
    lam: float | None = None,
    decoder: str | None = None,
    max_iter: int | None = None,
    dtype: str | None = None,
    chunk_rows: int | None = None,
    threads: int | None = None,
    seed: int | None = None,
    grad_tol: float | None = None,
    progress_tol: float | None = None,
    memory: int | None = None,
    log: str | os.PathLike | None = None,
    force: bool = False,
    monitor: TrainingMonitor | None = None,
    comm: Communicator | None = None,
    resume: bool = False,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    checkpoint_minutes: float | None = None,
    file_locking: bool | None = None,
    stop_signals: bool = True,
    stop: StopFlag | None = None,
    scheme: str | None = None,
    memory_budget: int | str | None = None,
    keep_state: bool = False,
    command: str | None = None,
) -> Model:
    """Train the sparse autoencoder on the patch file ``data``; returns the model.

    Writes the model to ``output`` (atomically) when given, and one JSON object per
    iteration to ``log``.  Hyperparameters follow the notes' names (``lam`` is λ).

    A setting left at None takes its default (hidden 25, rho 0.01, beta 3, lam 1e-4,
    sigmoid decoder, max_iter 400, float32, seed 0, grad_tol 1e-5, progress_tol 1e-9,
    scheme auto) or, with ``resume``, the value the checkpoint was trained with
    (:mod:`streamae.training.resume`).  The finished model holds the weights, the history
    and what describes them; the L-BFGS state is written in checkpoints only and dropped
    at the end unless ``keep_state`` (a finished model without it cannot be resumed).
    ``command`` is the command line the run header records (default: this process's).

    Checkpoints: the model file is rewritten every ``checkpoint_every`` iterations (0:
    only at the end) and every ``checkpoint_minutes`` minutes; ``resume=True`` continues
    from the model file at ``output``, exactly where it stopped (refused if the data or
    the hyperparameters differ).  ``stop_signals`` catches SIGTERM, SIGINT and SIGUSR1
    while training: the run stops at the last completed iteration, writes a checkpoint
    and raises :class:`~streamae.errors.Interrupted`.  ``stop`` is the flag the handlers
    set (pass one to stop a run from another thread).  ``file_locking=False`` opens the
    data without HDF5 file locks (NFS, Lustre).  ``comm`` is the group of processes
    (default: this one alone); under MPI every rank calls ``train`` alike.
    """
    monitor = monitor or TrainingMonitor()
    comm = comm or SingleProcess()
    stop = stop or StopFlag()
    data = Path(data)
    # A collective (MPI_Comm_split_type): before the agreed phase, which must hold none.
    local_ranks = comm.local_size()  # also caches local_rank() for the warm-up
    with (
        abort_on_local_error(comm),
        stop_on_signals(stop) if stop_signals else contextlib.nullcontext(stop),
        contextlib.ExitStack() as stack,
    ):
        with agreed_phase(comm):
            given = {
                "hidden": hidden,
                "rho": rho,
                "beta": beta,
                "lam": lam,
                "decoder": decoder,
                "dtype": dtype,
                "max_iter": max_iter,
                "seed": seed,
                "grad_tol": grad_tol,
                "progress_tol": progress_tol,
                "scheme": scheme,
                "chunk_rows": chunk_rows,
                "memory": memory,
            }
            stored = None
            if resume and output is not None and Path(output).is_file():
                stored = stored_settings(output)
            settings = resolve_settings(given, stored, output)
            hidden, dtype, max_iter, seed = (settings[k] for k in ("hidden", "dtype", "max_iter", "seed"))
            grad_tol, progress_tol, scheme = (
                settings["grad_tol"],
                settings["progress_tol"],
                settings["scheme"],
            )
            chunk_rows, memory = settings["chunk_rows"], settings["memory"]
            hyper = Hyperparameters(
                hidden=hidden,
                rho=settings["rho"],
                beta=settings["beta"],
                lam=settings["lam"],
                decoder=settings["decoder"],
            )
            compute_dtype = _dtype(dtype)
            if max_iter < 0:
                raise UsageError(f"--max-iter must be at least 0, got {max_iter}.")
            if chunk_rows is not None and chunk_rows < 1:
                raise UsageError(f"--chunk-rows must be at least 1, got {chunk_rows}.")
            if memory < 1:
                raise UsageError(f"the L-BFGS memory must be at least 1, got {memory}.")
            policy = CheckpointPolicy(every=checkpoint_every, minutes=checkpoint_minutes)
            rules = StopRules(max_iter=max_iter, grad_tol=grad_tol, progress_tol=progress_tol)
            setup = _open(
                data,
                output,
                log,
                hyper=hyper,
                dtype=dtype,
                chunk_rows=chunk_rows,
                force=force,
                resume=resume,
                file_locking=file_locking,
                comm=comm,
                stack=stack,
            )
            threads_used = resolve_threads(threads, local_ranks=local_ranks)
            apply_threads(threads_used)
        layout = setup.layout
        resumed = comm.broadcast(setup.resumed) if comm.size > 1 else setup.resumed
        effective = dict(settings.values, chunk_rows=setup.block_rows)
        effective.update(
            output=None if output is None else os.fspath(output),
            log=None if log is None else os.fspath(log),
            resume=resume,
            keep_state=keep_state,
            checkpoint_every=checkpoint_every,
            checkpoint_minutes=checkpoint_minutes,
            memory_budget=memory_budget,
            file_locking=file_locking,
        )
        header = run_header(
            settings=effective,
            data=layout.fingerprint,
            threads=threads_used,
            ranks=comm.size,
            command=command,
        )
        monitor.on_message(format_header(header))
        for note in settings.notes:
            monitor.on_message(f"resume: {note}")
        warm_up_kernels(comm, layout.n_features, hyper, compute_dtype)

        counted = CountedBlocks(setup.source, monitor, stop, abandon=comm.size == 1)
        monitor.on_message(
            f"{data}: {layout.n_rows:,} patches of {layout.n_features} values "
            f"({layout.dtype}), {hidden} hidden units, {dtype}"
            + (f", {comm.size} MPI ranks" if comm.size > 1 else "")
        )
        counted.label = "checking values"
        try:
            summary = check_values(counted, hyper, str(data), comm)
        except DataError as error:
            raise mark_collective(error) from None  # found on the reduced summary: all ranks
        except StopRequested:  # one process only: under MPI a pass is never abandoned
            raise Interrupted(
                f"stopped by {stop.signal_name} while checking the values; nothing new was written."
            ) from None
        budget = parse_memory_budget(memory_budget) if isinstance(memory_budget, str) else memory_budget
        objective = make_objective(
            counted,
            hyper,
            n_visible=layout.n_features,
            dtype=compute_dtype,
            comm=comm,
            scheme=scheme,
            memory_budget=budget,
        )
        _close_when_done(stack, objective)
        counted.label = "J and gradient"
        warnings = data_warnings(hyper, layout.n_features, summary.minimum, summary.maximum)
        if resumed is not None:
            warnings += resume_warnings(max_iter, resumed.state.iteration)
        for text in warnings:
            monitor.on_message(f"warning: {text}")
        if objective.reason == "asked for":
            monitor.on_message(f"scheme: {objective.scheme}, as asked")
        else:
            monitor.on_message(f"scheme: {objective.scheme}, since {objective.reason}")

        # The model remembers its data's normalisation, for pictures and new data.
        normalization = read_normalization(data, file_locking=file_locking)
        info = {
            "dtype": dtype,
            "seed": seed,
            "ranks": comm.size,
            "chunk_rows": setup.block_rows,
            "threads": threads_used,
            "scheme": objective.scheme,
            "max_iter": max_iter,
            "grad_tol": grad_tol,
            "progress_tol": progress_tol,
            "memory": memory,
        }

        def save(state: LbfgsState, progress: Progress) -> str:
            model = _model(state, progress, objective, layout, info, normalization, keep_state=True)
            write_model(output, model, force=True, inputs=(data,))
            return str(output)

        trainer = Trainer(
            objective,
            rules,
            comm=comm,
            monitor=monitor,
            stop=stop,
            policy=policy,
            save=save if output is not None else None,
            log=log,
            append_log=resumed is not None,
            resume_hint=(
                f"the checkpoint {output} holds it; continue with "
                f"`{resume_command(data, output)}` (the settings come from the checkpoint)."
                if output is not None
                else ""
            ),
            header=header,
        )
        if resumed is not None:
            state, progress = resumed.state, resumed.progress
            _note_resume(monitor, resumed, comm.size, setup.block_rows, output)
        else:
            state, progress = trainer.start(initialize(layout.n_features, hidden, seed), memory)
        trainer.run(state, progress)
        model = _model(state, progress, objective, layout, info, normalization, keep_state=keep_state)
        with agreed_phase(comm):
            if output is not None and comm.rank == 0:
                # The opening checks ran already; replacing our own checkpoint is expected.
                write_model(output, model, force=True, inputs=(data,))
    monitor.on_finish(model, model.info.get("finished", ""))
    return model


def resume_command(data: str | os.PathLike, output: str | os.PathLike) -> str:
    """The shell command that continues a run from its checkpoint, quoted to work as printed."""
    import shlex

    return shlex.join(["streamae", "train", os.fspath(data), "-o", os.fspath(output), "--resume"])


def _note_resume(
    monitor: TrainingMonitor, resumed: ResumePoint, ranks: int, block_rows: int, output: object
) -> None:
    """Tell the monitor where training continues, and when it will not be bit-for-bit exact."""
    hook = getattr(monitor, "on_resume", None)  # newer than some monitors
    if hook is not None:
        hook(resumed.state.iteration)
    monitor.on_message(f"resuming from {output} at iteration {resumed.state.iteration}")
    changed = []
    if resumed.ranks is not None and resumed.ranks != ranks:
        changed.append(f"{resumed.ranks} MPI ranks before, {ranks} now")
    if resumed.chunk_rows is not None and resumed.chunk_rows != block_rows:
        changed.append(f"{resumed.chunk_rows} rows per block before, {block_rows} now")
    if changed:
        monitor.on_message(
            "note: " + "; ".join(changed) + ": sums are added in another order, so the "
            "continuation agrees with an uninterrupted run to rounding, not bit for bit"
        )


def _model(
    state: LbfgsState,
    progress: Progress,
    objective: StreamedObjective,
    layout: PatchLayout,
    info: dict,
    normalization: tuple[dict | None, dict[str, np.ndarray]],
    *,
    keep_state: bool,
) -> Model:
    """The model file's contents at ``state``: weights, history, ρ̂, info, and the optimizer
    state when ``keep_state`` (checkpoints always; a finished model only when asked)."""
    current: Evaluation = progress.current
    model = Model(
        **_split(state.x, objective.n_visible, objective.n_hidden),
        hyper=objective.hyper,
        patch_shape=layout.patch_shape,
        data=layout.fingerprint,
        iterations=state.iteration,
        history={name: np.asarray(values) for name, values in progress.history.items()},
        rho_hat=current.rho_hat,
        optimizer=state.to_arrays() if keep_state else None,
        normalization=normalization[0],
        normalization_arrays=normalization[1],
        info={
            **info,
            "finished": state.finished,
            "cost": current.cost,
            "reconstruction": current.reconstruction,
            "weight_decay": current.weight_decay,
            "sparsity": current.sparsity,
            "seconds": progress.seconds,
            "evaluations": state.evaluations,
        },
    )
    return model


def _split(theta: np.ndarray, n_visible: int, n_hidden: int) -> dict[str, np.ndarray]:
    from streamae.compute.parameters import unpack

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
        return TwoPassObjective(source, hyper, n_visible=n, dtype=compute_dtype)(theta)


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
        objective = TwoPassObjective(source, hyper, n_visible=n_visible, dtype=np.float64)
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
