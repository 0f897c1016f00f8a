"""A model applied to rows in memory, block by block: a2 = f(W1 x + b1) and a3 = f(W2 a2 + b2).

The same kernels as ``streamae encode`` (:class:`streamae.encoding.Encoder`) compute each
block; only the output (m, s) or (m, n) grows with m, the working memory is a few blocks.
"""

from __future__ import annotations

import numpy as np

from streamae.errors import UsageError

# Rows per block: enough for the matrix products to run at full speed, small enough that
# the block buffers stay a few MiB for any input size.
DEFAULT_BLOCK_ROWS = 4096


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
        block[...] = X[start:stop]
        if not np.isfinite(block.sum(dtype=np.float64)):
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise UsageError(f"row {bad} of X holds NaN or Inf; remove or repair it.", parameter="X")
        yield start, block


def encode_rows(model, X: np.ndarray, *, block_rows: int | None = None, dtype: object = None) -> np.ndarray:
    """a2 (m, s) for X (m, n) through ``model``; see :meth:`streamae.io.modelfile.Model.encode`."""
    from streamae.encoding import Encoder

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
    from streamae.encoding import Encoder

    X, rows, compute = _prepare(model, X, block_rows, dtype)
    out = np.empty((X.shape[0], model.n_visible), dtype=compute)
    encoder = Encoder(model, rows, compute)
    buffer = np.empty((rows, model.n_visible), dtype=compute)
    for start, block in _blocks(X, rows, compute, buffer):
        a2 = encoder.hidden_layer(block)
        out[start : start + block.shape[0]] = encoder.output_layer(a2, block)
    return out
