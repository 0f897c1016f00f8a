"""Training data opened in one call: shares, the held-out split, identity, notes."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from helpers import write_patch_file

from streamae.errors import UsageError
from streamae.io.trainingdata import HeldOutRequest, ReadRequest, open_training_data


def _rows(source) -> np.ndarray:
    """Every row a source delivers, in order, with its row number in the file (m,)."""
    numbers = [first + np.arange(block.shape[0]) for first, block in source.blocks()]
    return np.concatenate(numbers) if numbers else np.zeros(0, dtype=int)


@pytest.fixture
def data(tmp_path):
    values = np.random.default_rng(3).uniform(0.1, 0.9, size=(1000, 6)).astype(np.float32)
    return write_patch_file(tmp_path / "data.h5", values, chunk_rows=100)


def test_the_ranks_shares_are_whole_chunks_and_cover_every_row_once(data):
    seen = []
    for rank in range(3):
        with contextlib.ExitStack() as stack:
            opened = open_training_data(data, "/patches", ReadRequest(rank=rank, size=3), None, stack)
            rows = _rows(opened.source)
            assert rows.size == 0 or rows[0] % 100 == 0
            seen.append(rows)
            assert opened.layout.n_rows == 1000 and opened.held_out is None
            assert opened.layout.fingerprint["content"]  # the identity a checkpoint stores
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(1000))


def test_a_held_out_fraction_takes_exactly_its_rows_out_of_training(data):
    with contextlib.ExitStack() as stack:
        held = HeldOutRequest(fraction=0.23, seed=4)  # 230 rows: two whole chunks and part of one
        opened = open_training_data(data, "/patches", ReadRequest(), held, stack)
        training, held_out = _rows(opened.source), _rows(opened.held_out)
    ranges = opened.held_record["ranges"]
    assert held_out.size == 230 and list(held_out) == [r for a, b in ranges for r in range(a, b)]
    assert np.array_equal(np.sort(np.concatenate([training, held_out])), np.arange(1000))
    assert opened.held_record == {"fraction": 0.23, "rows": 230, "block_rows": 100, "ranges": ranges}
    assert "(23.00% of its 1,000 rows, 0.23 asked)" in opened.held_name


def test_a_held_out_file_of_another_width_is_refused_naming_validation(data, tmp_path):
    other = write_patch_file(tmp_path / "held.h5", np.full((50, 5), 0.5, dtype=np.float32))
    with contextlib.ExitStack() as stack, pytest.raises(UsageError) as caught:
        open_training_data(
            data, "/patches", ReadRequest(), HeldOutRequest(file=other, dataset="/patches"), stack
        )
    assert caught.value.parameter == "validation" and "rows of 5 values" in str(caught.value)
