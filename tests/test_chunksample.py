"""The chunk-sample source: whole chunks spread over the file, read exactly as stored."""

from __future__ import annotations

import numpy as np
import pytest

from streamae.compute.parameters import Hyperparameters, initialize
from streamae.compute.schemes import TwoPassObjective
from streamae.io.chunksample import ChunkSample, chunks_for_rows, rank_part, sample_rows, spread_chunks
from streamae.io.patchfile import PatchFile


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 7, 10, 245, 1000])
def test_spread_chunks_covers_the_file_evenly(n_chunks):
    for wanted in range(1, min(n_chunks, 60) + 1):
        chosen = spread_chunks(n_chunks, wanted)
        assert len(chosen) == wanted and len(set(chosen.tolist())) == wanted
        assert np.all(np.diff(chosen) > 0) and 0 <= chosen[0] and chosen[-1] < n_chunks
        if wanted >= 2:
            assert chosen[0] == 0 and chosen[-1] == n_chunks - 1
            gaps = np.diff(chosen)
            assert gaps.max() - gaps.min() <= 1  # no region of the file left out
        assert np.array_equal(chosen, spread_chunks(n_chunks, wanted))  # deterministic


def test_chunk_counts_round_up_to_whole_chunks():
    assert chunks_for_rows(1, 100, 1050) == 1
    assert chunks_for_rows(101, 100, 1050) == 2
    assert chunks_for_rows(10**9, 100, 1050) == 11
    # The last chunk of 1050 rows holds 50.
    assert sample_rows([0, 10], 100, 1050) == 150


def test_ranks_split_the_sample_without_overlap():
    chunks = spread_chunks(245, 17)
    for size in (1, 2, 3, 5, 17, 20):
        parts = [rank_part(chunks, rank, size) for rank in range(size)]
        assert np.array_equal(np.concatenate(parts), chunks)


def test_the_sample_holds_the_stored_rows_of_its_chunks(patch_file, rng):
    values = rng.uniform(0.05, 0.95, size=(1050, 8)).astype(np.float32)
    path = patch_file(values, chunk_rows=100)
    chunks = spread_chunks(11, 4)  # chunks 0, 3, 7, 10: the first and the (partial) last
    with ChunkSample(path, chunks, chunk_rows=100, dtype=np.float64) as sample:
        assert sample.n_rows == sample_rows(chunks, 100, 1050) == 350
        got = [(first, block.copy()) for first, block in sample.blocks()]
    expected = np.concatenate([values[c * 100 : (c + 1) * 100] for c in chunks]).astype(np.float64)
    assert np.array_equal(np.concatenate([block for _, block in got]), expected)
    firsts = [first for first, _ in got]
    assert firsts[0] == 0 and firsts[-1] == 1000  # rows from the first and the last chunk


def test_a_sample_of_every_chunk_gives_the_full_objective(patch_file, rng):
    values = rng.uniform(0.05, 0.95, size=(900, 12))
    path = patch_file(values, chunk_rows=128)
    hyper = Hyperparameters(hidden=4, rho=0.1, beta=3.0, lam=1e-3)
    theta = initialize(12, 4, 3)
    with ChunkSample(path, spread_chunks(8, 8), chunk_rows=128, dtype=np.float64) as sample:
        on_sample = TwoPassObjective(sample, hyper, n_visible=12, dtype=np.float64)(theta)
    with PatchFile(path, dtype=np.float64) as whole:
        on_file = TwoPassObjective(whole, hyper, n_visible=12, dtype=np.float64)(theta)
    assert abs(on_sample.cost - on_file.cost) <= 1e-12 * abs(on_file.cost)
    scale = np.linalg.norm(on_file.gradient)
    assert np.linalg.norm(on_sample.gradient - on_file.gradient) <= 1e-12 * scale
