"""Generated HDF5 inputs (Hypothesis) and datasets declared but never written.

Hypothesis draws the rank, shape, dtype, chunking and a few poisoned values of ``/patches``;
``train`` must either succeed, exactly when the data is something it can train on, or fail
cleanly.  The examples are derandomized, so CI sees the same cases every run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import failure_problems, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .faultkit import FIGURES, OutputGuard, assert_clean_case

DTYPES = ["float32", "float64", "float16", "int8", "uint16", "int64", "complex64", "bool", "S4"]


@st.composite
def patch_datasets(draw) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """An array for /patches and a chunk shape for it (None: contiguous)."""
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=rank, max_size=rank)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(0.0, 1.0, size=shape)
    if values.size and dtype.kind == "f" and draw(st.booleans()):
        poison = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1.5, -0.5]))
        values.flat[draw(st.integers(0, values.size - 1))] = poison
    array = values.astype(dtype) if dtype.kind != "S" else values.astype("S4")
    chunks = None
    if rank and all(shape) and draw(st.booleans()):
        chunks = tuple(draw(st.integers(1, dim)) for dim in shape)
    return array, chunks


def trainable(array: np.ndarray) -> bool:
    """What train must accept: 2-D float16/32/64, not empty, finite values in [0, 1]."""
    return (
        array.ndim == 2
        and array.dtype in (np.float16, np.float32, np.float64)
        and array.size > 0
        and bool(np.all(np.isfinite(array)))
        and bool(array.min() >= 0.0 and array.max() <= 1.0)
    )


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(patch_datasets())
def test_train_on_any_generated_dataset_succeeds_or_fails_cleanly(case):
    array, chunks = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.h5"
        with h5py.File(path, "w") as handle:
            handle.create_dataset("patches", data=array, chunks=chunks)
            handle.attrs["format"] = "streamae.patches/1"
        guard = OutputGuard.create(Path(folder) / "model.h5")
        result = invoke("train", path, "-o", guard.path, "--force", "--max-iter", "1", "--hidden", "2", "-q")
        if trainable(array):
            assert result.exit_code == 0, result.output
            return
        problems = failure_problems(result.stdout, result.stderr, result.exit_code, (1, 2), [path.name])
        FIGURES.record_case("train", not problems)
        assert problems == [], f"{problems}\n{result.stderr}"
        guard.assert_intact()


# --------------------------------------------------------------------------- never written

DECLARED_ROWS = 200_000  # 51 MB declared, nothing stored: quick to stream, plainly not data


@pytest.fixture
def never_written(tmp_path: Path) -> Path:
    path = tmp_path / "declared.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", shape=(DECLARED_ROWS, 64), dtype=np.float32, chunks=(4096, 64))
        handle.attrs["format"] = "streamae.patches/1"
    return path


def test_the_declared_dataset_stores_nothing(never_written):
    """The case is what it claims: a large shape and no stored chunk."""
    assert never_written.stat().st_size < 100_000
    with h5py.File(never_written) as handle:
        assert handle["patches"].id.get_storage_size() == 0


def test_train_refuses_a_dataset_never_written(never_written, guard):
    result = invoke("train", never_written, "-o", guard.path, "--force", "--max-iter", "1", "--hidden", "2")
    assert_clean_case(result, "train", (1, 2), names=[never_written])
    guard.assert_intact()


def test_encode_refuses_a_dataset_never_written(never_written, good_model, guard):
    result = invoke("encode", good_model, never_written, "-o", guard.path, "--force")
    assert_clean_case(result, "encode", (1, 2), names=[never_written])
    guard.assert_intact()
