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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae.compute.lbfgs import LbfgsState, StopRules
from streamae.compute.objective import Evaluation, StreamedObjective, check_values
from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import TwoPassObjective, make_objective
from streamae.errors import DataError, InputFileError, Interrupted, MissingInputError, UsageError
from streamae.io.atomic import check_output_path
from streamae.io.hdf5 import open_hdf5
from streamae.io.modelfile import Model, load_model, write_model
from streamae.io.patchfile import (
    ArrayPatches,
    PatchFile,
    PatchLayout,
    chunk_aligned_share,
    default_block_rows,
    read_layout,
    validate_patch_dataset,
)
from streamae.options import TrainOptions
from streamae.runtime.mpi import (
    Communicator,
    SingleProcess,
    abort_on_local_error,
    agreed_phase,
    mark_collective,
    one_rank_reports,
)
from streamae.runtime.signals import StopFlag, StopRequested, stop_on_signals
from streamae.training.checkpoint import (
    CheckpointPolicy,
    Progress,
    ResumePoint,
    check_compatible,
    resume_point,
)
from streamae.training.loop import CountedBlocks, Trainer, TrainingMonitor
from streamae.training.threads import apply_threads, resolve_threads

__all__ = ["TrainingMonitor", "train"]


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
        raise UsageError("resume=True needs a model file to continue from (output).", parameter="resume")
    if comm.rank == 0:
        if output is not None:
            if resume and not Path(output).exists():
                raise MissingInputError(
                    f"{output}: no such model file to resume from; train without resume=True first."
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
                data,
                dtype=np.dtype(dtype).type,
                block_rows=chunk_rows,
                row_range=share,
                file_locking=file_locking,
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
            "Lustre, or another program writing it); pass file_locking=False or set "
            "HDF5_USE_FILE_LOCKING=FALSE if nothing writes it."
        ) from error


def train(
    data: str | os.PathLike,
    output: str | os.PathLike | None = None,
    options: TrainOptions | None = None,
    *,
    monitor: TrainingMonitor | None = None,
    comm: Communicator | None = None,
    stop_signals: bool = True,
    stop: StopFlag | None = None,
    **values: object,
) -> Model:
    """Train the sparse autoencoder on the patch file ``data``; returns the model.

    Writes the model to ``output`` (atomically) when given.  The options come from
    ``options`` (a frozen :class:`~streamae.options.TrainOptions`) and/or keyword
    arguments, checked against :data:`streamae.options.TRAIN`: ``hidden``, ``rho``,
    ``beta``, ``lam`` (λ), ``max_iter``, ``decoder``, ``dtype``, ``chunk_rows``,
    ``threads``, ``seed``, ``grad_tol``, ``progress_tol``, ``lbfgs_pairs`` (L-BFGS
    correction pairs kept), ``resume``, ``checkpoint_every``, ``checkpoint_minutes``,
    ``scheme``, ``memory_budget`` (bytes, or text such as ``"8G"``), ``file_locking``,
    ``log`` (one JSON object per iteration) and ``force``.  A wrong value raises
    :class:`~streamae.errors.UsageError` naming the parameter.

    Checkpoints: the model file is rewritten every ``checkpoint_every`` iterations (0:
    only at the end) and every ``checkpoint_minutes`` minutes; ``resume=True`` continues
    from the model file at ``output``, exactly where it stopped (refused if the data or
    the hyperparameters differ).  ``stop_signals`` catches SIGTERM, SIGINT and SIGUSR1
    while training: the run stops at the last completed iteration, writes a checkpoint
    and raises :class:`~streamae.errors.Interrupted`.  ``stop`` is the flag the handlers
    set (pass one to stop a run from another thread).  ``file_locking=False`` opens the
    data without HDF5 file locks (NFS, Lustre).  ``comm`` is the group of processes
    (default: this one alone); under MPI every rank calls ``train`` alike, and an error
    every rank raises is marked ``silent`` on all but rank 0
    (:func:`streamae.runtime.mpi.is_silent`), so it is reported once.
    """
    if "memory" in values:  # the L-BFGS pairs' old name
        values["lbfgs_pairs"] = values.pop("memory")
    comm = comm or SingleProcess()
    with one_rank_reports(comm):
        return _train(data, output, TrainOptions.build(options, values), monitor, comm, stop_signals, stop)


def _train(
    data: str | os.PathLike,
    output: str | os.PathLike | None,
    o: TrainOptions,
    monitor: TrainingMonitor | None,
    comm: Communicator,
    stop_signals: bool,
    stop: StopFlag | None,
) -> Model:
    """:func:`train` with its options checked."""
    hidden, dtype, log, resume = o.hidden, o.dtype, o.log, o.resume
    monitor = monitor or TrainingMonitor()
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
            hyper = Hyperparameters(hidden=hidden, rho=o.rho, beta=o.beta, lam=o.lam, decoder=o.decoder)
            compute_dtype = np.dtype(dtype).type
            policy = CheckpointPolicy(every=o.checkpoint_every, minutes=o.checkpoint_minutes)
            rules = StopRules(max_iter=o.max_iter, grad_tol=o.grad_tol, progress_tol=o.progress_tol)
            setup = _open(
                data,
                output,
                log,
                hyper=hyper,
                dtype=dtype,
                chunk_rows=o.chunk_rows,
                force=o.force,
                resume=resume,
                file_locking=o.file_locking,
                comm=comm,
                stack=stack,
            )
            threads_used = resolve_threads(o.threads, local_ranks=local_ranks)
            apply_threads(threads_used)
        layout = setup.layout
        resumed = comm.broadcast(setup.resumed) if comm.size > 1 else setup.resumed
        warm_up_kernels(comm, layout.n_features, hyper, compute_dtype)

        counted = CountedBlocks(setup.source, monitor, stop, abandon=comm.size == 1)
        monitor.on_message(
            f"{data}: {layout.n_rows:,} patches of {layout.n_features} values "
            f"({layout.dtype}), {hidden} hidden units, {dtype}"
            + (f", {comm.size} MPI ranks" if comm.size > 1 else "")
        )
        monitor.on_pass("checking values", setup.source.n_rows)
        try:
            check_values(counted, hyper, str(data), comm)
        except DataError as error:
            raise mark_collective(error) from None  # found on the reduced summary: all ranks
        except StopRequested:  # one process only: under MPI a pass is never abandoned
            raise Interrupted(
                f"stopped by {stop.signal_name} while checking the values; nothing new was written."
            ) from None
        objective = make_objective(
            counted,
            hyper,
            n_visible=layout.n_features,
            dtype=compute_dtype,
            comm=comm,
            scheme=o.scheme,
            memory_budget=o.memory_budget,
        )
        _close_when_done(stack, objective)
        monitor.on_message(f"scheme {objective.scheme}: {objective.reason}")

        info = {
            "dtype": dtype,
            "seed": o.seed,
            "ranks": comm.size,
            "chunk_rows": setup.block_rows,
            "threads": threads_used,
            "scheme": objective.scheme,
        }

        def save(state: LbfgsState, progress: Progress) -> str:
            model = _model(state, progress, objective, layout, info)
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
                f"the checkpoint {output} holds it; continue with resume=True and the same options."
            ),
        )
        if resumed is not None:
            state, progress = resumed.state, resumed.progress
            _note_resume(monitor, resumed, comm.size, setup.block_rows, output)
        else:
            state, progress = trainer.start(initialize(layout.n_features, hidden, o.seed), o.lbfgs_pairs)
        trainer.run(state, progress)
        model = _model(state, progress, objective, layout, info)
        with agreed_phase(comm):
            if output is not None and comm.rank == 0:
                # The opening checks ran already; replacing our own checkpoint is expected.
                write_model(output, model, force=True, inputs=(data,))
    monitor.on_finish(model, model.info.get("finished", ""))
    return model


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
    state: LbfgsState, progress: Progress, objective: StreamedObjective, layout: PatchLayout, info: dict
) -> Model:
    """The model file's contents at ``state``: weights, history, ρ̂, optimizer state, info."""
    current: Evaluation = progress.current
    model = Model(
        **_split(state.x, objective.n_visible, objective.n_hidden),
        hyper=objective.hyper,
        patch_shape=layout.patch_shape,
        data=layout.fingerprint,
        iterations=state.iteration,
        history={name: np.asarray(values) for name, values in progress.history.items()},
        rho_hat=current.rho_hat,
        optimizer=state.to_arrays(),
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
