"""The sparse-autoencoder objective J and its gradient, streamed over row blocks.

:class:`StreamedObjective` holds what every scheme shares: float32/float64 copies of the
parameters, one set of buffers per compute lane (allocated once, reused by every
evaluation), the split of each source block across the lanes, and the reduction of the
lanes' float64 totals and then of the ranks' (one Allreduce per pass on a flat buffer).

The schemes themselves (two-pass, single-pass, in-core) subclass it in
:mod:`streamae.compute.schemes`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamae.compute import kernels, passes
from streamae.compute.calibration import choose as choose_products
from streamae.compute.lanes import Lanes, SingleThreadedBlas, lane_ranges
from streamae.compute.parameters import Hyperparameters, parameter_count, unpack
from streamae.errors import DataError
from streamae.options import setting
from streamae.runtime.mpi import Communicator, SingleProcess
from streamae.text import printable

# Compute-block size: rows whose inputs and intermediates, (2n + 3s) values a row, take
# about this many bytes, so that they stay in one core's L2 cache between the products and
# the fused kernels, clamped to [512, 4096] rows and rounded down to a multiple of 256
# (the kernels' partial sums run over pieces of 512 examples).  Measured 2026-11-30 on a
# 2-core Emerald Rapids (2 MiB L2 a core), in-memory evaluations in rotation, 2 lanes:
# n=64, s=25: 384/512/640/1024 rows 0.184/0.183/0.223/0.244 s in-core (512 chosen);
# n=784, s=196: 256/512/1024/2048 rows 0.515/0.519/0.472/0.511 s in-core and
# 0.585/0.539/0.553/0.567 s single-pass; n=192, s=400: 512/1024/2048 rows 0.810/0.865/0.883 s
# in-core.  Below 512 rows the products that sum over the block's rows (the weight
# gradients) run short and slow; above ~4096 nothing is gained.
COMPUTE_BLOCK_BYTES = 1 << 19
MIN_COMPUTE_ROWS = 512
MAX_COMPUTE_ROWS = 4096
COMPUTE_ROW_MULTIPLE = 256


class BlockSource(Protocol):
    """A stream of row blocks: :class:`~streamae.io.patchfile.PatchFile` or ``ArrayPatches``."""

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


@dataclass
class Timing:
    """Where the last evaluation's time went (this process).

    seconds: wall time of the evaluation.  waiting: time spent waiting for the source
    to deliver a block (not hidden behind computing).  rows_read: rows delivered by the
    source (m per pass).  read_seconds / read_bytes: the source's own reading time and
    volume when it reports them (a prefetching file), else 0.
    """

    seconds: float = 0.0
    waiting: float = 0.0
    rows_read: int = 0
    read_seconds: float = 0.0
    read_bytes: int = 0
    passes: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the user: which of reading and computing bounds the run.

        The reading rate is the reads' own (bytes / seconds inside them, whether or not
        they overlapped the computing); the computing rate leaves out the time spent
        waiting for data.
        """
        computing = max(self.seconds - self.waiting, 1e-12)
        text = f"computing {self.rows_read / computing:,.0f} rows/s"
        if self.read_bytes:
            reading = self.read_bytes / max(self.read_seconds, 1e-12) / 1e9
            waited = self.waiting / max(self.seconds, 1e-12)
            bound = "reading" if waited > 0.2 else "computing"
            text = (
                f"reading {reading:.2f} GB/s alone, {text}; waited for data {waited:.0%} "
                f"of the evaluation: {bound} bounds it"
            )
        return text


# Bytes of rows a lane reads at a time when it streams its own share (see
# StreamedObjective._stream_by_lanes): a few compute blocks, so the rows are still in the
# core's cache when computed on and the per-call overhead (~10 us to enter a compiled pass)
# stays below 1% of the compute.
LANE_READ_BYTES = 1 << 20


def lane_read_rows(n_visible: int, itemsize: int, compute_rows: int) -> int:
    """Rows a lane reads at a time: whole compute blocks adding up to ~LANE_READ_BYTES."""
    blocks = max(1, LANE_READ_BYTES // (n_visible * itemsize * compute_rows))
    return blocks * compute_rows


def compute_rows_for(n_visible: int, n_hidden: int, itemsize: int) -> int:
    """Default rows per compute block for this layer size (see COMPUTE_BLOCK_BYTES)."""
    per_row = (2 * n_visible + 3 * n_hidden) * itemsize
    rows = min(MAX_COMPUTE_ROWS, max(MIN_COMPUTE_ROWS, COMPUTE_BLOCK_BYTES // per_row))
    return rows // COMPUTE_ROW_MULTIPLE * COMPUTE_ROW_MULTIPLE


def kl_divergence(rho: float, rho_hat: np.ndarray) -> np.ndarray:
    """KL(ρ ‖ ρ̂ⱼ) for each hidden unit; rho_hat (s,) -> (s,)."""
    return rho * np.log(rho / rho_hat) + (1.0 - rho) * np.log((1.0 - rho) / (1.0 - rho_hat))


# tanh hidden units (the notes: "inactive" means near −1).  The sparsity target applies to
# qᵢⱼ = (a2ᵢⱼ + 1)/2 ∈ (0, 1), so ρ keeps its meaning:
#     q̂ⱼ = (1/m) Σᵢ qᵢⱼ = (ρ̂ⱼ + 1)/2,      penalty  β Σⱼ KL(ρ ‖ q̂ⱼ).
# Its derivative in one activation: ∂KL(ρ‖q̂ⱼ)/∂q̂ⱼ = −ρ/q̂ⱼ + (1−ρ)/(1−q̂ⱼ) = sⱼ(q̂), and
# ∂q̂ⱼ/∂a2ᵢⱼ = 1/(2m), so the penalty adds (1/m)·(β/2)·sⱼ(q̂) to ∂J/∂a2ᵢⱼ, beside the
# reconstruction's (1/m)·(W2ᵀδ3ᵢ)ⱼ.  With f′(z2) = 1 − a2² for tanh:
#     δ2 = (W2ᵀδ3 + (β/2)·s(q̂)) ⊙ (1 − a2²),
# the sigmoid's formula with β·s(ρ̂) replaced by (β/2)·s(q̂).  Everything downstream (both
# passes, the single-pass assembly ∇W1 += diag(β s) Σ g xᵀ with g = f′(z2)) takes this term
# as it is, so the factor ½ is carried wherever β·s was.


def sparsity_target(hyper: Hyperparameters, rho_hat: np.ndarray) -> np.ndarray:
    """The means the KL term compares with ρ: ρ̂ (sigmoid) or q̂ = (ρ̂ + 1)/2 (tanh); (s,) -> (s,).

    rho_hat: the mean hidden activations (1/m) Σᵢ a2ᵢ, in (0, 1) or, for tanh, (−1, 1).
    """
    if hyper.activation == "tanh":
        return 0.5 * (rho_hat + 1.0)
    return rho_hat


def sparsity_cost(hyper: Hyperparameters, rho_hat: np.ndarray) -> float:
    """The sparsity term of J: β Σⱼ KL(ρ ‖ ρ̂ⱼ), or β Σⱼ KL(ρ ‖ q̂ⱼ) for tanh; rho_hat (s,).

    β = 0 is no sparsity term at all, even where a unit saturates (ρ̂ⱼ rounds to 0 or 1 and
    KL to ∞): the limit of β·KL as β → 0, not NaN.
    """
    if hyper.beta == 0:
        return 0.0
    return hyper.beta * float(np.sum(kl_divergence(hyper.rho, sparsity_target(hyper, rho_hat))))


def sparsity_delta(hyper: Hyperparameters, rho_hat: np.ndarray) -> np.ndarray:
    """The sparsity term added to W2ᵀδ3 in δ2; rho_hat (s,) -> (s,).

    sigmoid: β·sⱼ = β(−ρ/ρ̂ⱼ + (1−ρ)/(1−ρ̂ⱼ)).  tanh: (β/2)·sⱼ(q̂) with q̂ = (ρ̂ + 1)/2
    (derived above).
    """
    rho = hyper.rho
    target = sparsity_target(hyper, rho_hat)
    if hyper.beta == 0:  # no sparsity term (see sparsity_cost)
        return np.zeros_like(rho_hat)
    weight = 0.5 * hyper.beta if hyper.activation == "tanh" else hyper.beta
    return weight * (-rho / target + (1.0 - rho) / (1.0 - target))


class LaneBuffers:
    """One lane's scratch and totals, allocated once and reused by every evaluation.

    hidden (s·rows,), eg (2s·rows,), output (rows·n,) hold one compute block's a2ᵀ,
    [δ2ᵀ; f′(z2)ᵀ] and z3/δ3; block_dW1 (2s, n) and block_dW2 (n, s) a block's weight
    gradients; acc the lane's float64 totals (:func:`streamae.compute.passes.accumulator_layout`);
    sum_a2 (s,) pass 1's total; discard (s,) a sink for sums a pass does not need;
    column (n,) the output kernel's partial column sums.  The tiled path
    (:mod:`streamae.compute.small`) also uses transposed (n·rows,) for xᵀ, row_buffer
    (2·rows,) for the output kernel's zero bias and partial sums along the rows, and
    row_sink (rows,) float64 for the sums it does not need.  ``scratch`` bundles the block
    scratch as the gradient pass takes it (:class:`streamae.compute.passes.Scratch`).
    """

    def __init__(self, rows: int, n_visible: int, n_hidden: int, dtype: np.dtype) -> None:
        n, s = n_visible, n_hidden
        self.hidden = np.empty(s * rows, dtype=dtype)
        self.eg = np.empty(2 * s * rows, dtype=dtype)
        self.output = np.empty(rows * n, dtype=dtype)
        self.block_dW1 = np.empty((2 * s, n), dtype=dtype)
        self.block_dW2 = np.empty((n, s), dtype=dtype)
        self.acc = np.zeros(passes.accumulator_layout(n, s)[-1], dtype=np.float64)
        # The tiled path's (compute/small.py): the block transposed, and two rows of scratch.
        self.transposed = np.empty(n * rows, dtype=dtype)
        self.row_buffer = np.empty(2 * rows, dtype=dtype)
        self.row_sink = np.zeros(rows, dtype=np.float64)
        self.sum_a2 = np.zeros(s, dtype=np.float64)
        self.discard = np.zeros(s, dtype=np.float64)
        # The rows this lane reads for itself (StreamedObjective._stream_by_lanes), sized
        # on first use.
        self.rows = np.empty((0, n), dtype=dtype)
        self.column = np.zeros(n, dtype=dtype)
        # The same arrays as the gradient pass takes them, bundled once.
        self.scratch = passes.Scratch(
            self.hidden,
            self.eg,
            self.output,
            self.block_dW1,
            self.block_dW2,
            self.discard,
            self.column,
            self.transposed,
            self.row_buffer,
            self.row_sink,
        )


class StreamedObjective:
    """What every scheme shares; a subclass defines ``__call__`` (and ``scheme``).

    ``source`` streams this process's rows; ``comm`` adds the sums across processes.
    Call it with theta (p,) float64.  ``dtype`` is the kernels' compute type (float32 or
    float64).  ``threads`` is the number of compute lanes (default: Numba's thread count).
    ``products``: "auto" (BLAS or tiles as calibrated on this host, see
    :mod:`streamae.compute.calibration`), "blas" or "tiled".
    """

    scheme = "two-pass"
    reason = "asked for"

    def __init__(
        self,
        source: BlockSource,
        hyper: Hyperparameters,
        *,
        n_visible: int,
        dtype: np.dtype | type = np.float32,
        comm: Communicator | None = None,
        compute_rows: int | None = None,
        threads: int | None = None,
        products: str = "auto",
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
        if rows < 1:
            raise ValueError(f"compute_rows must be at least 1, got {rows}")
        self.compute_rows = int(rows)
        self.lanes = Lanes(threads)
        self.buffers = [
            LaneBuffers(self.compute_rows, n_visible, self.n_hidden, self.dtype)
            for _ in range(self.lanes.count)
        ]
        self._blas = SingleThreadedBlas()
        n, s = n_visible, self.n_hidden
        self.W1 = np.empty((s, n), dtype=self.dtype)
        self.W1T = np.empty((n, s), dtype=self.dtype)
        self.W2 = np.empty((n, s), dtype=self.dtype)
        self.W2T = np.empty((s, n), dtype=self.dtype)
        # BLAS or the row-vectorised block (compute/small.py), as measured on this host
        # for this objective (compute/calibration.py) unless the caller forces one.
        choice = choose_products(self.scheme, n, s, self.dtype, self.compute_rows, products, self.comm)
        self.tiled, self.tiled_sums, self.products_reason = choice.tiled, choice.tiled_sums, choice.reason
        self.b1 = np.empty(s, dtype=self.dtype)
        self.b2 = np.empty(n, dtype=self.dtype)
        self.weights = passes.Weights(self.W1, self.W1T, self.W2, self.W2T, self.b1, self.b2)
        self.sparsity_row = np.zeros(s, dtype=self.dtype)
        self.no_sparsity = np.zeros(s, dtype=self.dtype)
        self.no_cache = np.empty(0, dtype=self.dtype)
        self.linear = hyper.decoder == "linear"
        self.activation = kernels.activation_code(hyper.activation)
        self.n_parameters = parameter_count(n_visible, self.n_hidden)
        self.evaluations = 0
        self.timing = Timing()
        self.n_rows = self._total_rows()

    def _total_rows(self) -> int:
        count = np.array([float(self.source.n_rows)])
        self.comm.allreduce_sum(count)
        return int(count[0])

    def _load_parameters(self, theta: np.ndarray) -> None:
        params = unpack(np.asarray(theta, dtype=np.float64), self.n_visible, self.n_hidden)
        self.W1[...] = params.W1
        self.W1T[...] = params.W1.T
        self.W2[...] = params.W2
        self.W2T[...] = params.W2.T
        self.b1[...] = params.b1
        self.b2[...] = params.b2

    def _stream(self, visit) -> None:
        """Call ``visit(lane, x)`` on every row of the source, the lanes in parallel.

        A source whose rows several threads can read at once (``reads_in_parallel``, a
        patch file read as byte runs, page cache warm) is streamed by
        :meth:`_stream_by_lanes`.  Otherwise each source block is cut into whole compute
        blocks and dealt to the lanes in contiguous ranges; the lanes meet once per source
        block (its buffer is reused).
        """
        if getattr(self.source, "reads_in_parallel", False):
            self._stream_by_lanes(visit)
            return
        timing = self.timing
        blocks = iter(self.source.blocks())
        while True:
            started = time.perf_counter()
            item = next(blocks, None)
            timing.waiting += time.perf_counter() - started
            if item is None:
                break
            _, block = item
            timing.rows_read += block.shape[0]
            ranges = lane_ranges(block.shape[0], self.compute_rows, self.lanes.count)
            active = [lane for lane, (start, stop) in enumerate(ranges) if stop > start]

            def work(lane: int, block=block, ranges=ranges) -> None:
                start, stop = ranges[lane]
                visit(lane, block[start:stop])

            self.lanes.run(work, active)

    def _stream_by_lanes(self, visit) -> None:
        """Each lane streams its own contiguous share of the rows, reading as it goes.

        The shares are whole compute blocks (:func:`lane_ranges`), so which lane sums which
        rows is fixed by the rows, the compute-block size and the lane count, as in the
        block-by-block stream.  A lane reads ``LANE_READ_BYTES`` of rows at a time into its
        own buffer (the read releases the GIL and copies on the lane's core) and computes on
        them while they are in its cache; no lane waits for another until the pass ends.
        This beats one thread reading 8 MiB blocks through HDF5 for both lanes, in time and
        in time spent waiting (``benchmarks/bench_read.py``; figures in
        ``benchmarks/README.md``).
        """
        source = self.source
        shares = lane_ranges(source.n_rows, self.compute_rows, self.lanes.count)
        active = [lane for lane, (start, stop) in enumerate(shares) if stop > start]
        read_rows = lane_read_rows(self.n_visible, self.dtype.itemsize, self.compute_rows)
        reading = [0.0] * self.lanes.count

        def work(lane: int) -> None:
            buffers = self.buffers[lane]
            if buffers.rows.shape[0] < read_rows:
                buffers.rows = np.empty((read_rows, self.n_visible), dtype=self.dtype)
            start, stop = shares[lane]
            for first in range(start, stop, read_rows):
                last = min(first + read_rows, stop)
                rows = buffers.rows[: last - first]
                started = time.perf_counter()
                source.read_rows(first, last, rows)
                reading[lane] += time.perf_counter() - started
                visit(lane, rows)

        source.start_pass()
        self.lanes.run(work, active)
        source.end_pass()
        # The lanes read while the others computed: the time the pass spent reading is
        # the lanes' mean, not their sum.
        self.timing.waiting += sum(reading) / max(1, len(active))
        self.timing.rows_read += source.n_rows

    def _reduce_lanes(self, name: str, size: int) -> np.ndarray:
        """The lanes' totals ``buffers[i].<name>[:size]`` added in lane order, float64."""
        total = np.zeros(size, dtype=np.float64)
        for buffers in self.buffers:
            total += getattr(buffers, name)[:size]
        return total

    def _begin(self, theta: np.ndarray) -> float:
        self._load_parameters(theta)
        self.timing = Timing()
        reader = getattr(self.source, "io_stats", None)
        self._io_start = reader.snapshot() if reader is not None else None
        return time.perf_counter()

    def _finish(self, started: float) -> None:
        self.timing.seconds = time.perf_counter() - started
        reader = getattr(self.source, "io_stats", None)
        if reader is not None and self._io_start is not None:
            seconds, nbytes = reader.since(self._io_start)
            self.timing.read_seconds, self.timing.read_bytes = seconds, nbytes
        self.evaluations += 1

    def _pass1_visit(self, lane: int, x: np.ndarray, cache: np.ndarray | None = None) -> None:
        """Pass 1 over x (rows, n) into the lane's sum_a2; ``cache`` (s·rows,) keeps a2 (in-core)."""
        b = self.buffers[lane]
        cache = self.no_cache if cache is None else cache
        passes.forward_pass(
            x, self.W1T, self.b1, self.activation, self.compute_rows, b.hidden, b.sum_a2, cache
        )

    def _plan(self, single: bool) -> passes.Plan:
        """What a gradient pass does (:class:`streamae.compute.passes.Plan`): built once a pass."""
        sparsity = self.no_sparsity if single else self.sparsity_row
        return passes.Plan(
            self.activation, self.linear, single, self.tiled, self.tiled_sums, self.compute_rows, sparsity
        )

    def _gradient_visit(self, lane: int, x: np.ndarray, plan: passes.Plan, cache: np.ndarray) -> None:
        b = self.buffers[lane]
        passes.gradient_pass(x, self.weights, plan, cache, b.scratch, b.acc)

    def _stream_gradient(self, single: bool) -> None:
        """The gradient pass over the source: the lanes' acc zeroed, then summed anew."""
        for b in self.buffers:
            b.acc[:] = 0.0
        plan = self._plan(single)
        with self._blas:
            self._stream(lambda lane, x: self._gradient_visit(lane, x, plan, self.no_cache))
        self.timing.passes += 1

    def _sum_a2(self, visit) -> np.ndarray:
        """Run pass 1 with ``visit``; returns ρ̂ (s,) over all rows of all ranks."""
        for b in self.buffers:
            b.sum_a2[:] = 0.0
        with self._blas:
            self._stream(visit)
        self.timing.passes += 1
        totals = self._reduce_lanes("sum_a2", self.n_hidden)
        self.comm.allreduce_sum(totals)
        return totals / self.n_rows

    def mean_activation(self, theta: np.ndarray) -> np.ndarray:
        """ρ̂ (s,), the mean hidden activation over all rows (all ranks): one forward pass."""
        self._load_parameters(theta)
        return self._sum_a2(self._pass1_visit)

    def __call__(self, theta: np.ndarray) -> Evaluation:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the lanes' threads (the objective cannot be called afterwards)."""
        self.lanes.close()


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
    sparsity = sparsity_cost(hyper, rho_hat)
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
    layout = getattr(source, "layout", None)
    dataset = printable(getattr(layout, "dataset", "/patches"), 80)
    if summary.first_bad_row is not None:
        raise DataError(
            f"{name}: {dataset} row {summary.first_bad_row} holds NaN or Inf; "
            "remove or repair that row (or extract the patches again)."
        )
    if hyper.decoder == "sigmoid" and (summary.minimum < 0.0 or summary.maximum > 1.0):
        raise DataError(
            f"{name}: {dataset} holds values in [{summary.minimum:.4g}, {summary.maximum:.4g}], "
            "outside the sigmoid decoder's range [0, 1]; normalise at extraction "
            f"(extract with {setting('normalize', 'ufldl')} or 'unit') or train with "
            f"{setting('decoder', 'linear')}."
        )
    return summary
