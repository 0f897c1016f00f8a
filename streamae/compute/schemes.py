"""The three streaming schemes, and :func:`make_objective`, which picks one.

All schemes compute the exact full-batch J and ∇J (DESIGN.md, "The streaming schemes"):

- **two-pass** (the notes' own, the reference): pass 1 streams every block and sums a2
  (so ρ̂ is known), pass 2 streams them again, recomputes the forward pass and sums J
  and ∇J with the now-known sparsity term: two reads per evaluation.
- **single-pass**: δ2 = e + β·s ⊙ g with e = (W2ᵀδ3) ⊙ g and g = f′(z2), so one read can
  sum Σ e xᵀ, Σ g xᵀ, Σ e, Σ g and Σ a2, and the sparsity term (known only once ρ̂ is)
  is added after the pass: ∇W1 = (Σ e xᵀ + β·diag(s) Σ g xᵀ)/m + λW1.  The product
  [e; g]ᵀ-stacked @ x makes Σ e xᵀ and Σ g xᵀ one GEMM.
- **in-core**: the rows are read into memory once; each evaluation then runs pass 1,
  keeping the hidden activations (s values a row), and pass 2 from them: no I/O, and
  exactly the 10·n·s FLOPs a row of one forward and backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from streamae.compute.objective import (
    BlockSource,
    Evaluation,
    StreamedObjective,
    assemble,
    sparsity_delta,
)
from streamae.compute.parameters import Hyperparameters, unpack
from streamae.compute.passes import accumulator_layout
from streamae.io.patchfile import ArrayPatches
from streamae.options import SCHEMES, TRAIN
from streamae.runtime.memory import available_memory
from streamae.runtime.mpi import Communicator, SingleProcess

# Share of the memory available at start-up that ``auto`` lets in-core use when the
# caller gives no budget: leaves room for the page cache, other processes and ranks.
DEFAULT_BUDGET_FRACTION = 0.5
# Environment variables in which MPI launchers give the number of ranks on this node.
_LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")


class TwoPassObjective(StreamedObjective):
    """J(θ) and ∇J(θ) by the two-pass scheme (the reference): two reads per evaluation."""

    scheme = "two-pass"

    def __call__(self, theta: np.ndarray) -> Evaluation:
        """J and ∇J at theta (p,) float64."""
        started = self._begin(theta)
        rho_hat = self._sum_a2(self._pass1_visit)  # pass 1
        self.sparsity_row[...] = sparsity_delta(self.hyper, rho_hat)
        self._stream_gradient(single=False)
        # totals = [Σ ½‖a3 − x‖², ΣΔW1, ΣΔW2, Σδ2, Σδ3]: after the first entry it is laid
        # out exactly like theta, so one reduction carries J and ∇J together.
        totals = self._reduce_lanes("acc", 1 + self.n_parameters)
        self.comm.allreduce_sum(totals)
        self._finish(started)
        return assemble(theta, totals, rho_hat, self.n_rows, self.hyper, self.n_visible)


class SinglePassObjective(StreamedObjective):
    """J and ∇J with one read of the data per evaluation (exact; see the module doc)."""

    scheme = "single-pass"

    def __call__(self, theta: np.ndarray) -> Evaluation:
        """J and ∇J at theta (p,) float64."""
        started = self._begin(theta)
        self._stream_gradient(single=True)
        n, s = self.n_visible, self.n_hidden
        dW1, _, db1, _, gx, g, a2, size = accumulator_layout(n, s)
        totals = self._reduce_lanes("acc", size)
        self.comm.allreduce_sum(totals)
        rho_hat = totals[a2 : a2 + s] / self.n_rows
        beta_s = sparsity_delta(self.hyper, rho_hat)
        # δ2 = e + β·s ⊙ g, summed: add the sparsity term now that ρ̂ is known.  For tanh
        # the term is (β/2)·s(q̂) with q̂ = (ρ̂ + 1)/2 and g = 1 − a2² (sparsity_delta says
        # why), so ∇W1 = (1/m)(Σ e xᵀ + (β/2)·diag(s(q̂)) Σ g xᵀ) + λW1 and ∇b1 alike.
        totals[dW1 : dW1 + s * n] += (beta_s[:, None] * totals[gx : gx + s * n].reshape(s, n)).ravel()
        totals[db1 : db1 + s] += beta_s * totals[g : g + s]
        self._finish(started)
        return assemble(theta, totals[: 1 + self.n_parameters], rho_hat, self.n_rows, self.hyper, n)


class InCoreObjective(StreamedObjective):
    """J and ∇J over rows held in memory, with pass 1's activations kept for pass 2.

    Memory: the rows (m, n) (none extra when the source is already an in-memory array)
    plus the activations (s·m values).  Each lane owns a contiguous share of the rows.
    """

    scheme = "in-core"

    def __init__(self, source: BlockSource, hyper: Hyperparameters, **options) -> None:
        super().__init__(source, hyper, **options)
        self.data = load_rows(source, self.dtype, self.n_visible)
        self.shares = _lane_shares(self.data.shape[0], self.compute_rows, self.lanes.count)
        self.caches = [
            np.empty(self.n_hidden * (stop - start), dtype=self.dtype) for start, stop in self.shares
        ]

    def _run(self, visit) -> None:
        active = [lane for lane, (start, stop) in enumerate(self.shares) if stop > start]
        with self._blas:
            self.lanes.run(lambda lane: visit(lane, self.data[slice(*self.shares[lane])]), active)
        self.timing.rows_read += self.data.shape[0]
        self.timing.passes += 1

    def _cached_pass1(self, lane: int, x: np.ndarray) -> None:
        self._pass1_visit(lane, x, self.caches[lane])

    def mean_activation(self, theta: np.ndarray) -> np.ndarray:
        """ρ̂ (s,) over all rows of all ranks (fills the activation cache as a side effect)."""
        self._load_parameters(theta)
        return self._rho_hat()

    def _rho_hat(self) -> np.ndarray:
        for b in self.buffers:
            b.sum_a2[:] = 0.0
        self._run(self._cached_pass1)
        totals = self._reduce_lanes("sum_a2", self.n_hidden)
        self.comm.allreduce_sum(totals)
        return totals / self.n_rows

    def __call__(self, theta: np.ndarray) -> Evaluation:
        """J and ∇J at theta (p,) float64."""
        started = self._begin(theta)
        rho_hat = self._rho_hat()
        self.sparsity_row[...] = sparsity_delta(self.hyper, rho_hat)
        for b in self.buffers:
            b.acc[:] = 0.0
        plan = self._plan(single=False)
        self._run(lambda lane, x: self._gradient_visit(lane, x, plan, self.caches[lane]))
        totals = self._reduce_lanes("acc", 1 + self.n_parameters)
        self.comm.allreduce_sum(totals)
        self._finish(started)
        return assemble(theta, totals, rho_hat, self.n_rows, self.hyper, self.n_visible)


def _lane_shares(rows: int, block_rows: int, lanes: int) -> list[tuple[int, int]]:
    from streamae.compute.lanes import lane_ranges

    return lane_ranges(rows, block_rows, lanes)


def load_rows(source: BlockSource, dtype: np.dtype, n_visible: int) -> np.ndarray:
    """All rows of ``source`` as one (rows, n) C-contiguous array in ``dtype``.

    An in-memory source's own array is used as it is (no copy); a file is read once
    into one array allocated up front.
    """
    data = getattr(source, "data", None)
    if isinstance(source, ArrayPatches) and data is not None and data.dtype == dtype:
        return data
    rows = source.n_rows
    out: np.ndarray | None = None
    filled = 0
    for _, block in source.blocks():
        if out is None:
            out = np.empty((rows, block.shape[1]), dtype=dtype)
        out[filled : filled + block.shape[0]] = block
        filled += block.shape[0]
    if out is None and rows == 0:  # an idle MPI rank (more ranks than chunks)
        return np.empty((0, n_visible), dtype=dtype)
    if out is None or filled != rows:
        raise ValueError(f"the source delivered {filled} rows, expected {rows}")
    return out


@dataclass(frozen=True)
class SchemeChoice:
    """The scheme ``auto`` (or the caller) picked and why, in one sentence."""

    name: str
    reason: str


def default_memory_budget(environ: dict | None = None) -> int:
    """Bytes in-core may use per process: half the available memory, shared by local ranks."""
    environ = os.environ if environ is None else environ
    local = 1
    for name in _LOCAL_RANK_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            local = int(value)
            break
    return int(available_memory() * DEFAULT_BUDGET_FRACTION / local)


def in_core_bytes(source: BlockSource, n_visible: int, n_hidden: int, dtype: np.dtype) -> int:
    """Memory in-core needs for this process's rows: the rows (unless already in
    memory) plus the cached activations."""
    rows = source.n_rows
    itemsize = np.dtype(dtype).itemsize
    in_memory = isinstance(source, ArrayPatches) and source.dtype == np.dtype(dtype)
    return rows * n_hidden * itemsize + (0 if in_memory else rows * n_visible * itemsize)


def choose_scheme(
    source: BlockSource,
    n_visible: int,
    n_hidden: int,
    dtype: np.dtype,
    memory_budget: int | None,
    comm: Communicator,
) -> SchemeChoice:
    """``auto``'s choice: in-core when every rank's share fits the budget, else single-pass.

    All ranks take the same decision (one reduction), since the schemes reduce different
    buffers.
    """
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    need = in_core_bytes(source, n_visible, n_hidden, dtype)
    verdict = np.array([-1.0 if need <= budget else 0.0])  # min over ranks: -1 only if all fit
    comm.allreduce_min(verdict)
    mib = 1 << 20
    if verdict[0] < 0:
        return SchemeChoice(
            "in-core",
            f"the data and its activations ({need / mib:,.0f} MiB) fit the memory budget "
            f"({budget / mib:,.0f} MiB): read once, then no I/O",
        )
    return SchemeChoice(
        "single-pass",
        f"the data and its activations ({need / mib:,.0f} MiB on this rank, or on another) "
        f"exceed the memory budget ({budget / mib:,.0f} MiB): one read per evaluation",
    )


_CLASSES = {"two-pass": TwoPassObjective, "single-pass": SinglePassObjective, "in-core": InCoreObjective}


def make_objective(
    source: BlockSource,
    hyper: Hyperparameters,
    *,
    n_visible: int,
    dtype: np.dtype | type = np.float32,
    comm: Communicator | None = None,
    scheme: str = "auto",
    memory_budget: int | None = None,
    compute_rows: int | None = None,
    threads: int | None = None,
    products: str = "auto",
) -> StreamedObjective:
    """The objective over ``source`` by ``scheme``; ``auto`` picks in-core or single-pass.

    Returns an object called as ``objective(theta) -> Evaluation`` with ``mean_activation``,
    ``n_rows``, ``n_visible``, ``n_hidden``, ``hyper``, ``evaluations``, ``timing``, and
    ``scheme`` / ``reason`` saying which scheme runs and why.  ``memory_budget`` (bytes)
    bounds what in-core may hold (default: :func:`default_memory_budget`).  ``products``
    picks BLAS or the row-vectorised block for small layers (see
    :mod:`streamae.compute.small`; "auto" follows the measurements there).
    """
    scheme = TRAIN["scheme"].check(scheme)
    memory_budget = TRAIN["memory_budget"].check(memory_budget)
    comm = comm if comm is not None else SingleProcess()
    if scheme == "auto":
        choice = choose_scheme(source, n_visible, hyper.hidden, np.dtype(dtype), memory_budget, comm)
    else:
        choice = SchemeChoice(scheme, "asked for")
    objective = _CLASSES[choice.name](
        source,
        hyper,
        n_visible=n_visible,
        dtype=dtype,
        comm=comm,
        compute_rows=compute_rows,
        threads=threads,
        products=products,
    )
    objective.scheme = choice.name
    objective.reason = choice.reason
    return objective


def parse_memory_budget(text: str) -> int:
    """Bytes from a size such as ``8G``, ``512M``, ``1.5GiB`` or a plain byte count."""
    return TRAIN["memory_budget"].check(text)


__all__ = [
    "SCHEMES",
    "InCoreObjective",
    "SchemeChoice",
    "SinglePassObjective",
    "TwoPassObjective",
    "choose_scheme",
    "default_memory_budget",
    "load_rows",
    "make_objective",
    "parse_memory_budget",
    "unpack",
]
