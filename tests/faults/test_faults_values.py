"""Hostile values in valid files: NaN, ±Inf, out-of-range data, constant and single patches.

NaN or ±Inf anywhere (the first, a middle or the last chunk) must stop ``train``,
``encode`` and ``gradcheck`` with exit code 1 and one line naming the file and the row,
before any output is replaced.  Data outside [0, 1] cannot be fitted by a sigmoid decoder:
``train`` must say so (and take it with ``--decoder linear``).  Degenerate but valid data
(all-constant patches, a single patch) must train to a finite model.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import invoke, write_patch_file

from .faultkit import assert_clean_case, listing

ROWS, CHUNK = 300, 64
BAD_ROWS = {"first chunk": 0, "middle chunk": 150, "last chunk": ROWS - 1}
BAD_VALUES = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}


def _data() -> np.ndarray:
    return np.random.default_rng(5).uniform(0.1, 0.9, size=(ROWS, 64)).astype(np.float32)


@pytest.fixture(params=list(BAD_ROWS))
def where(request) -> str:
    return request.param


@pytest.fixture(params=list(BAD_VALUES))
def value(request) -> str:
    return request.param


@pytest.fixture
def poisoned(tmp_path, where, value):
    """A patch file with one non-finite value at the chosen row (column 5)."""
    data = _data()
    data[BAD_ROWS[where], 5] = BAD_VALUES[value]
    return write_patch_file(tmp_path / "poisoned.h5", data, chunk_rows=CHUNK, patch_shape=(8, 8, 1))


def test_train_stops_on_a_non_finite_value(poisoned, where, guard):
    result = invoke("train", poisoned, "-o", guard.path, "--force", "--max-iter", "2", "--hidden", "3")
    assert_clean_case(result, "train", 1, names=[poisoned], fragments=[str(BAD_ROWS[where])])
    guard.assert_intact()


def test_encode_stops_on_a_non_finite_value(poisoned, where, good_model, guard):
    result = invoke("encode", good_model, poisoned, "-o", guard.path, "--force", "--block-rows", "50")
    assert_clean_case(result, "encode", 1, names=[poisoned], fragments=[str(BAD_ROWS[where])])
    guard.assert_intact()


def test_gradcheck_stops_on_a_non_finite_value(poisoned, where, tmp_path):
    before = listing(tmp_path)
    result = invoke("gradcheck", "--data", poisoned, "--rows", str(ROWS), "--hidden", "1")
    assert_clean_case(result, "gradcheck", 1, names=[poisoned], fragments=[str(BAD_ROWS[where])])
    assert listing(tmp_path) == before


@pytest.mark.parametrize("outside", [1.5, -0.25, 255.0])
def test_sigmoid_decoder_refuses_data_outside_0_1(outside, tmp_path, guard):
    data = _data()
    data[170, 9] = outside
    path = write_patch_file(tmp_path / "raw.h5", data, chunk_rows=CHUNK)
    result = invoke("train", path, "-o", guard.path, "--force", "--max-iter", "2", "--hidden", "3")
    assert_clean_case(result, "train", 1, names=[path], fragments=["--decoder linear"])
    guard.assert_intact()
    linear = invoke("train", path, "-o", tmp_path / "m.h5", "--max-iter", "2", "--hidden", "3",
                    "--decoder", "linear", "-q")  # fmt: skip
    assert linear.exit_code == 0, linear.output


def _finite_model(path) -> bool:
    with h5py.File(path, "r") as handle:
        return all(np.isfinite(handle[name][()]).all() for name in ("W1", "W2", "b1", "b2"))


@pytest.mark.parametrize("rows", [1, 2, ROWS])
def test_constant_patches_train_to_a_finite_model(rows, tmp_path):
    path = write_patch_file(tmp_path / "flat.h5", np.full((rows, 64), 0.5, np.float32), chunk_rows=CHUNK)
    out = tmp_path / "m.h5"
    result = invoke("train", path, "-o", out, "--max-iter", "5", "--hidden", "3", "-q")
    assert result.exit_code == 0, result.output
    assert _finite_model(out)
    encoded = invoke("encode", out, path, "-o", tmp_path / "f.h5", "--reconstruct", "-q")
    assert encoded.exit_code == 0, encoded.output


def test_a_single_patch_trains_and_encodes(tmp_path):
    path = write_patch_file(tmp_path / "one.h5", _data()[:1], chunk_rows=CHUNK, patch_shape=(8, 8, 1))
    out = tmp_path / "m.h5"
    result = invoke("train", path, "-o", out, "--max-iter", "5", "--hidden", "3", "-q")
    assert result.exit_code == 0, result.output
    assert _finite_model(out)
    features = tmp_path / "f.h5"
    assert invoke("encode", out, path, "-o", features, "-q").exit_code == 0
    with h5py.File(features) as handle:
        assert handle["features"].shape == (1, 3)
