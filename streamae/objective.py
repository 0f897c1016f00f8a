"""The sparse-autoencoder objective J and its gradient, streamed over row blocks.

The two-pass scheme is the notes' own: pass 1 streams every block and accumulates the
sum of the hidden activations (so ρ̂ is known), pass 2 streams them again, recomputes
the forward pass and accumulates J and ∇J with the now-known sparsity term.  Blocks from
the source are cut into compute blocks small enough to stay in cache; each compute
block's partial sums are added into float64 totals, so the result barely depends on the
block size and does not drift with m.  The totals of each pass are combined across MPI
ranks with one reduction on a flat float64 buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import kernels
from .distributed import Communicator, SingleProcess
from .errors import DataError
from .model import Hyperparameters, parameter_count, unpack

# Compute-block size: rows such that the block's inputs and intermediates take about
# this many bytes, so that they stay in the per-core cache between the GEMMs and the
# fused elementwise kernels.
COMPUTE_BLOCK_BYTES = 1 << 20
MIN_COMPUTE_ROWS = kernels.SEGMENT_ROWS


class BlockSource(Protocol):
    """A stream of row blocks: :class:`~streamae.store.PatchFile` or ``ArrayPatches``."""

    dtype: np.dtype

    @property
    def n_rows(self) -> int: ...

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]: ...


@dataclass(frozen=True)
class Evaluation:
    """J, ∇J and J's terms at one point.

    gradient: (p,) float64 laid out like theta.  rho_hat: (s,) mean hidden activations.
    """

    cost: float
    gradient: np.ndarray
    reconstruction: float
    weight_decay: float
    sparsity: float
    rho_hat: np.ndarray


def compute_rows_for(n_visible: int, n_hidden: int, itemsize: int) -> int:
    """Default rows per compute block for this layer size (a multiple of the segment)."""
    per_row = (2 * n_visible + 2 * n_hidden) * itemsize
    rows = max(MIN_COMPUTE_ROWS, COMPUTE_BLOCK_BYTES // per_row)
    return rows // kernels.SEGMENT_ROWS * kernels.SEGMENT_ROWS


def kl_divergence(rho: float, rho_hat: np.ndarray) -> np.ndarray:
    """KL(ρ ‖ ρ̂ⱼ) for each hidden unit; rho_hat (s,) -> (s,)."""
    return rho * np.log(rho / rho_hat) + (1.0 - rho) * np.log((1.0 - rho) / (1.0 - rho_hat))


def sparsity_delta(hyper: Hyperparameters, rho_hat: np.ndarray) -> np.ndarray:
    """β·sⱼ = β(−ρ/ρ̂ⱼ + (1−ρ)/(1−ρ̂ⱼ)), the sparsity term of δ₂; (s,) -> (s,)."""
    rho = hyper.rho
    return hyper.beta * (-rho / rho_hat + (1.0 - rho) / (1.0 - rho_hat))


class Workspace:
    """Buffers for one compute block, allocated once and reused by every evaluation.

    Shapes: hidden (rows, s), output (rows, n), back (rows, s); block gradients
    gW1 (s, n) and gW2 (n, s); float64 ``partial`` scratch for the kernels' column sums.
    """

    def __init__(self, rows: int, n_visible: int, n_hidden: int, dtype: np.dtype) -> None:
        n, s = n_visible, n_hidden
        self.rows = rows
        self.hidden = np.empty((rows, s), dtype=dtype)
        self.output = np.empty((rows, n), dtype=dtype)
        self.back = np.empty((rows, s), dtype=dtype)
        self.block_grad_W1 = np.empty((s, n), dtype=dtype)
        self.block_grad_W2 = np.empty((n, s), dtype=dtype)
        self.partial = np.empty((kernels.segment_count(rows), max(n, s) + 1), dtype=np.float64)
        self.discard = np.empty(max(n, s), dtype=np.float64)
        self.W1 = np.empty((s, n), dtype=dtype)
        self.W2 = np.empty((n, s), dtype=dtype)
        self.b1 = np.empty(s, dtype=dtype)
        self.b2 = np.empty(n, dtype=dtype)
        self.sparsity = np.empty(s, dtype=dtype)


class Objective:
    """J(θ) and ∇J(θ) of the sparse autoencoder over all rows of ``source``.

    ``source`` streams this process's rows (all of them, or an MPI rank's share);
    ``comm`` adds the partial sums across processes.  Call it with theta (p,) float64.
    ``dtype`` is the compute type of the kernels (float32 or float64).
    """

    def __init__(
        self,
        source: BlockSource,
        hyper: Hyperparameters,
        *,
        n_visible: int,
        dtype: np.dtype | type = np.float32,
        comm: Communicator | None = None,
        compute_rows: int | None = None,
    ) -> None:
        self.source = source
        self.hyper = hyper
        self.n_visible = n_visible
        self.n_hidden = hyper.hidden
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"compute dtype must be float32 or float64, got {self.dtype}")
        if source.dtype != self.dtype:
            raise ValueError(f"source delivers {source.dtype}, the objective computes in {self.dtype}")
        self.comm = comm if comm is not None else SingleProcess()
        rows = compute_rows or compute_rows_for(n_visible, self.n_hidden, self.dtype.itemsize)
        self.workspace = Workspace(int(rows), n_visible, self.n_hidden, self.dtype)
        self.n_parameters = parameter_count(n_visible, self.n_hidden)
        self.evaluations = 0
        self.n_rows = self._total_rows()

    def _total_rows(self) -> int:
        count = np.array([float(self.source.n_rows)])
        self.comm.allreduce_sum(count)
        return int(count[0])

    def _compute_blocks(self) -> Iterator[np.ndarray]:
        """Every row of the source, cut into compute blocks of at most ``workspace.rows``."""
        step = self.workspace.rows
        for _, block in self.source.blocks():
            for first in range(0, block.shape[0], step):
                yield block[first : first + step]

    def _load_parameters(self, theta: np.ndarray) -> None:
        params = unpack(np.asarray(theta, dtype=np.float64), self.n_visible, self.n_hidden)
        ws = self.workspace
        ws.W1[...] = params.W1
        ws.W2[...] = params.W2
        ws.b1[...] = params.b1
        ws.b2[...] = params.b2

    def _forward_hidden(self, x: np.ndarray, sum_a2: np.ndarray) -> np.ndarray:
        """a2 of one compute block x (rows, n) into the workspace; adds Σa2 into sum_a2."""
        ws = self.workspace
        a2 = ws.hidden[: x.shape[0]]
        np.matmul(x, ws.W1.T, out=a2)
        kernels.hidden_activation(a2, ws.b1, ws.partial, sum_a2)
        return a2

    def mean_activation(self, theta: np.ndarray) -> np.ndarray:
        """Pass 1: ρ̂ (s,), the mean hidden activation over all rows (all ranks)."""
        self._load_parameters(theta)
        totals = np.zeros(self.n_hidden, dtype=np.float64)
        for x in self._compute_blocks():
            self._forward_hidden(x, totals)
        self.comm.allreduce_sum(totals)
        return totals / self.n_rows

    def __call__(self, theta: np.ndarray) -> Evaluation:
        """J and ∇J at theta (p,) float64, by the two-pass scheme."""
        hyper = self.hyper
        n, s = self.n_visible, self.n_hidden
        rho_hat = self.mean_activation(theta)  # pass 1 (also loads the parameters)
        ws = self.workspace
        ws.sparsity[...] = sparsity_delta(hyper, rho_hat)

        # Pass 2.  totals = [Σ ½‖a3 − x‖², ΣΔW1, ΣΔW2, Σδ2, Σδ3]: after the first entry it
        # is laid out exactly like theta, so one reduction carries J and ∇J together.
        totals = np.zeros(1 + self.n_parameters, dtype=np.float64)
        grads = unpack(totals[1:], n, s)
        linear = hyper.decoder == "linear"
        for x in self._compute_blocks():
            rows = x.shape[0]
            a2 = self._forward_hidden(x, ws.discard[:s])
            delta3 = ws.output[:rows]
            np.matmul(a2, ws.W2.T, out=delta3)
            totals[0] += kernels.output_delta(delta3, ws.b2, x, linear, ws.partial, grads.b2)
            np.matmul(delta3.T, a2, out=ws.block_grad_W2)
            np.add(grads.W2, ws.block_grad_W2, out=grads.W2)
            delta2 = ws.back[:rows]
            np.matmul(delta3, ws.W2, out=delta2)
            kernels.hidden_delta(delta2, a2, ws.sparsity, ws.partial, grads.b1)
            np.matmul(delta2.T, x, out=ws.block_grad_W1)
            np.add(grads.W1, ws.block_grad_W1, out=grads.W1)
        self.comm.allreduce_sum(totals)
        self.evaluations += 1
        return assemble(theta, totals, rho_hat, self.n_rows, hyper, n)


def assemble(
    theta: np.ndarray,
    totals: np.ndarray,
    rho_hat: np.ndarray,
    m: int,
    hyper: Hyperparameters,
    n_visible: int,
) -> Evaluation:
    """J and ∇J from the summed pass-2 totals (1 + p,) and ρ̂ (s,) over m rows."""
    params = unpack(np.asarray(theta, dtype=np.float64), n_visible, hyper.hidden)
    reconstruction = totals[0] / m
    weight_decay = 0.5 * hyper.lam * (np.sum(params.W1**2) + np.sum(params.W2**2))
    sparsity = hyper.beta * float(np.sum(kl_divergence(hyper.rho, rho_hat)))
    gradient = totals[1:] / m
    # Weight decay acts on the weights only: the first 2·s·n entries of theta.
    n_weights = 2 * n_visible * hyper.hidden
    gradient[:n_weights] += hyper.lam * np.asarray(theta, dtype=np.float64)[:n_weights]
    return Evaluation(
        cost=float(reconstruction + weight_decay + sparsity),
        gradient=gradient,
        reconstruction=float(reconstruction),
        weight_decay=float(weight_decay),
        sparsity=sparsity,
        rho_hat=rho_hat,
    )


@dataclass(frozen=True)
class ValueSummary:
    """What a scan of the data found: the first non-finite row (or None), min and max."""

    first_bad_row: int | None
    minimum: float
    maximum: float


def scan_source(source: BlockSource, comm: Communicator | None = None) -> ValueSummary:
    """Stream every row once; report the first non-finite row and the finite range."""
    comm = comm if comm is not None else SingleProcess()
    first_bad = np.inf
    low, high = np.inf, -np.inf
    partial = np.empty((kernels.segment_count(getattr(source, "block_rows", 1)), 3))
    for first_row, block in source.blocks():
        if partial.shape[0] < kernels.segment_count(block.shape[0]):
            partial = np.empty((kernels.segment_count(block.shape[0]), 3))
        bad, block_low, block_high = kernels.scan_values(block, partial)
        if bad >= 0 and first_bad == np.inf:
            first_bad = first_row + bad
        low, high = min(low, block_low), max(high, block_high)
    extremes = np.array([first_bad, low, -high])
    comm.allreduce_min(extremes)
    first_bad, low, high = extremes[0], extremes[1], -extremes[2]
    return ValueSummary(None if first_bad == np.inf else int(first_bad), float(low), float(high))


def check_values(
    source: BlockSource, hyper: Hyperparameters, name: str, comm: Communicator | None = None
) -> ValueSummary:
    """Stream the data once and refuse values the objective cannot use.

    Raises :class:`DataError` naming the first non-finite row, or, for the sigmoid
    decoder, values outside [0, 1].  ``name`` is the file named in the message.
    """
    summary = scan_source(source, comm)
    if summary.first_bad_row is not None:
        raise DataError(
            f"{name}: /patches row {summary.first_bad_row} holds NaN or Inf; "
            "remove or repair that row (or extract the patches again)."
        )
    if hyper.decoder == "sigmoid" and (summary.minimum < 0.0 or summary.maximum > 1.0):
        raise DataError(
            f"{name}: /patches holds values in [{summary.minimum:.4g}, {summary.maximum:.4g}], "
            "outside the sigmoid decoder's range [0, 1]; normalise at extraction "
            "(streamae extract --normalize ufldl or unit) or train with --decoder linear."
        )
    return summary
