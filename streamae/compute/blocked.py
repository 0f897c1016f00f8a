"""A model applied to rows in memory, block by block: a2 = f(W1 x + b1) and a3 = f(W2 a2 + b2).

:class:`Encoder` holds a model's weights in the compute dtype and reused block buffers;
``streamae encode`` (:mod:`streamae.encoding`) streams a patch file through it, and
:func:`encode_rows` / :func:`reconstruct_rows` run arrays in memory through it.  Only the
output (m, s) or (m, n) grows with m; the working memory is a few blocks.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from streamae.compute import kernels
from streamae.compute.lanes import SingleThreadedBlas
from streamae.errors import UsageError

# Rows per block: enough for the matrix products to run at full speed, small enough that
# the block buffers stay a few MiB for any input size.
DEFAULT_BLOCK_ROWS = 4096


@njit(parallel=True, **kernels.JIT_OPTIONS)
def output_activation(z3, b2, x, linear, partial):
    """Decoder output in place; returns the block's Σ ½‖a3 − x‖² (float64).

    z3: (rows, n) ``a2 @ W2.T`` (without bias), overwritten with a3 = f(z3 + b2), or
    z3 + b2 when ``linear``.  b2: (n,).  x: (rows, n) the input block.
    partial: (>= segments, >= 1) float64 scratch.  Summed per fixed segment and then in
    segment order, so the result does not depend on the number of threads.
    """
    rows, n = z3.shape
    n_segments = kernels.segment_count(rows)
    one = z3.dtype.type(1.0)
    for seg in prange(n_segments):
        squared = 0.0
        for i in range(seg * kernels.SEGMENT_ROWS, min(rows, (seg + 1) * kernels.SEGMENT_ROWS)):
            for j in range(n):
                if linear:
                    a3 = z3[i, j] + b2[j]
                else:
                    a3 = one / (one + np.exp(-(z3[i, j] + b2[j])))
                z3[i, j] = a3
                difference = a3 - x[i, j]
                squared += difference * difference
        partial[seg, 0] = squared
    total = 0.0
    for seg in range(n_segments):
        total += partial[seg, 0]
    return 0.5 * total


class Encoder:
    """The model's weights in the compute dtype and buffers for blocks of up to ``rows`` rows.

    ``model`` is a :class:`~streamae.io.modelfile.Model` (only its arrays and
    hyperparameters are read).
    hidden (rows, s) and output (rows, n) are reused by every block; ``sum_a2`` (s,)
    float64 and ``squared_error`` accumulate over every block encoded.
    """

    def __init__(self, model, rows: int, dtype: np.dtype | type = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"compute dtype must be float32 or float64, got {self.dtype}")
        s, n = model.n_hidden, model.n_visible
        self.linear = model.hyper.decoder == "linear"
        self.activation = kernels.activation_code(model.hyper.activation)
        self.W1 = np.ascontiguousarray(model.W1, dtype=self.dtype)
        self.W2 = np.ascontiguousarray(model.W2, dtype=self.dtype)
        self.b1 = np.ascontiguousarray(model.b1, dtype=self.dtype)
        self.b2 = np.ascontiguousarray(model.b2, dtype=self.dtype)
        self.rows = int(rows)
        self.hidden = np.empty((self.rows, s), dtype=self.dtype)
        self.output = np.empty((self.rows, n), dtype=self.dtype)
        self.partial = np.empty((kernels.segment_count(self.rows), s + 1), dtype=np.float64)
        self.sum_a2 = np.zeros(s, dtype=np.float64)
        self.squared_error = 0.0
        self.n_encoded = 0
        # The products at one BLAS thread: with two, OpenBLAS's spare thread busy-waits
        # ~0.1 s after each product on a core that the parallel activation kernels next to
        # it need.  `streamae encode --reconstruct`, 10^6 x 64 -> 25, three runs each of the
        # whole command, alternating: 1.83-1.96 s with two threads, 1.63-1.69 s with
        # OPENBLAS_NUM_THREADS=1; 6*10^4 x 784 -> 196: 1.63-1.74 s against 1.57-1.91 s,
        # level within the host's noise.
        self._one_blas_thread = SingleThreadedBlas()

    def hidden_layer(self, x: np.ndarray) -> np.ndarray:
        """a2 (rows, s) of a block x (rows, n), as a view of the reused ``hidden`` buffer."""
        a2 = self.hidden[: x.shape[0]]
        with self._one_blas_thread:
            np.matmul(x, self.W1.T, out=a2)
        kernels.hidden_activation(a2, self.b1, self.activation, self.partial, self.sum_a2)
        self.n_encoded += x.shape[0]
        return a2

    def output_layer(self, a2: np.ndarray, x: np.ndarray) -> np.ndarray:
        """a3 (rows, n) from a2 (rows, s) of the block x (rows, n), a view of ``output``."""
        a3 = self.output[: x.shape[0]]
        with self._one_blas_thread:
            np.matmul(a2, self.W2.T, out=a3)
        self.squared_error += output_activation(a3, self.b2, x, self.linear, self.partial)
        return a3


def _prepare(model, X: np.ndarray, block_rows: int | None, dtype: object) -> tuple[np.ndarray, int, np.dtype]:
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != model.n_visible:
        raise UsageError(
            f"the model takes rows of {model.n_visible} values, got an array of shape {X.shape}; "
            f"give an (m, {model.n_visible}) array.",
            parameter="X",
        )
    if X.dtype.kind not in "fiub":
        raise UsageError(f"X holds {X.dtype} values, not numbers; give a numeric array.", parameter="X")
    if dtype is None:
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    compute = np.dtype(dtype)
    if compute not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UsageError(f"dtype must be float32 or float64, got {compute}.", parameter="dtype")
    rows = int(block_rows or DEFAULT_BLOCK_ROWS)
    if rows < 1:
        raise UsageError(f"block_rows must be at least 1, got {rows}.", parameter="block_rows")
    return X, max(1, min(rows, X.shape[0])), compute


def _blocks(X: np.ndarray, rows: int, compute: np.dtype, buffer: np.ndarray):
    """(start, block) pairs: X's rows in compute dtype, converted into one reused buffer."""
    for start in range(0, X.shape[0], rows):
        stop = min(start + rows, X.shape[0])
        block = buffer[: stop - start]
        with np.errstate(over="ignore", invalid="ignore"):  # Inf from a cast or a sum: said below
            block[...] = X[start:stop]
            total = block.sum(dtype=np.float64)
        if not np.isfinite(total):
            _refuse_non_finite(X[start:stop], block, start, compute)
        yield start, block


def _refuse_non_finite(original: np.ndarray, block: np.ndarray, start: int, compute: np.dtype) -> None:
    """Refuse a block with NaN or Inf (in X, or made by the conversion to ``compute``).

    A block whose sum overflowed although every value is finite (values near 1e307) is fine.
    """
    rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
    if rows.size == 0:
        return
    bad = int(rows[0])
    if np.isfinite(original[bad]).all():
        raise UsageError(
            f"row {start + bad} of X holds values beyond {compute}'s range; give dtype='float64' or "
            "scale the data as the model's training data was.",
            parameter="X",
        )
    raise UsageError(f"row {start + bad} of X holds NaN or Inf; remove or repair it.", parameter="X")


def encode_rows(model, X: np.ndarray, *, block_rows: int | None = None, dtype: object = None) -> np.ndarray:
    """a2 (m, s) for X (m, n) through ``model``; see :meth:`streamae.io.modelfile.Model.encode`."""
    X, rows, compute = _prepare(model, X, block_rows, dtype)
    out = np.empty((X.shape[0], model.n_hidden), dtype=compute)
    encoder = Encoder(model, rows, compute)
    buffer = np.empty((rows, model.n_visible), dtype=compute)
    for start, block in _blocks(X, rows, compute, buffer):
        out[start : start + block.shape[0]] = encoder.hidden_layer(block)
    return out


def reconstruct_rows(
    model, X: np.ndarray, *, block_rows: int | None = None, dtype: object = None
) -> np.ndarray:
    """a3 (m, n) for X (m, n) through ``model``; see :meth:`streamae.io.modelfile.Model.reconstruct`."""
    X, rows, compute = _prepare(model, X, block_rows, dtype)
    out = np.empty((X.shape[0], model.n_visible), dtype=compute)
    encoder = Encoder(model, rows, compute)
    buffer = np.empty((rows, model.n_visible), dtype=compute)
    for start, block in _blocks(X, rows, compute, buffer):
        a2 = encoder.hidden_layer(block)
        out[start : start + block.shape[0]] = encoder.output_layer(a2, block)
    return out
