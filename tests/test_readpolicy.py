"""The one read policy: its decisions, that files opened by it stream the same rows, and
that ``train`` reports the time spent waiting for data in its log, model file and ``info``."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import streamae
from streamae.describe import describe
from streamae.io.patchfile import PatchFile, inspect_patch_file
from streamae.io.readpolicy import (
    STREAMING_READ_BYTES,
    open_patches,
    read_policy,
    storage_of,
    streaming_block_rows,
)
from streamae.training.loop import TrainingMonitor


def test_block_rows_are_whole_chunks_of_about_the_target(rng, patch_file):
    path = patch_file(rng.uniform(size=(100_000, 16)).astype(np.float32), chunk_rows=1000)
    layout = inspect_patch_file(path)
    policy = read_policy(layout, memory=1 << 40)
    assert policy.block_rows == streaming_block_rows(layout)
    assert policy.block_rows % 1000 == 0
    assert STREAMING_READ_BYTES // 2 < policy.block_rows * 16 * 4 <= STREAMING_READ_BYTES
    assert read_policy(layout, block_rows=77, memory=1 << 40).block_rows == 77


def test_prefetch_follows_whether_the_data_can_stay_in_memory(rng, patch_file):
    path = patch_file(rng.uniform(size=(1000, 8)).astype(np.float32), chunk_rows=100)
    layout = inspect_patch_file(path)
    nbytes = 1000 * 8 * 4
    assert not read_policy(layout, memory=10 * nbytes).prefetch
    assert read_policy(layout, memory=nbytes).prefetch
    # A rank reading a small share of a large file counts its share only.
    assert not read_policy(layout, memory=nbytes, share_rows=100).prefetch
    assert read_policy(layout, memory=10 * nbytes, prefetch=True).prefetch
    assert "as asked" in read_policy(layout, prefetch=False).reason


def test_chunk_cache_only_for_filtered_data(rng, tmp_path):
    X = rng.uniform(size=(600, 10)).astype(np.float32)
    plain, packed = tmp_path / "plain.h5", tmp_path / "packed.h5"
    for path, options in ((plain, {}), (packed, {"compression": "gzip"})):
        with h5py.File(path, "w") as handle:
            handle.create_dataset("patches", data=X, chunks=(64, 10), **options)
            handle.attrs["format"] = "streamae.patches/1"
    assert storage_of(plain) == (False, 64 * 10 * 4)
    assert storage_of(packed) == (True, 64 * 10 * 4)
    with open_patches(plain) as source:
        assert source.policy.chunk_cache_bytes == 0
    with open_patches(packed) as source:
        assert source.policy.chunk_cache_bytes == 2 * 64 * 10 * 4


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_file_opened_by_the_policy_streams_the_same_rows(rng, tmp_path, prefetch, compression):
    X = rng.uniform(size=(1234, 7))
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=X, chunks=(50, 7), compression=compression)
        handle.attrs["format"] = "streamae.patches/1"
    with open_patches(
        path, dtype=np.float64, block_rows=130, row_range=(17, 1101), prefetch=prefetch
    ) as source:
        assert source.prefetch is prefetch
        parts = [block.copy() for _, block in source.blocks()]
    with PatchFile(path, dtype=np.float64, row_range=(17, 1101)) as plain:
        expected = np.concatenate([block.copy() for _, block in plain.blocks()])
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    np.testing.assert_array_equal(expected, X[17:1101])


class MessageMonitor(TrainingMonitor):
    """Keeps the messages a training run prints at its end (the time split among them)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_message(self, text: str) -> None:
        self.messages.append(text)


def test_train_reports_waiting_and_computing(rng, patch_file, tmp_path):
    X = rng.uniform(0.1, 0.9, size=(3000, 16)).astype(np.float32)
    path = patch_file(X, chunk_rows=200)
    out, log = tmp_path / "m.h5", tmp_path / "log.jsonl"
    monitor = MessageMonitor()
    model = streamae.train(path, out, hidden=5, max_iter=3, log=log, scheme="single-pass", monitor=monitor)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records = [r for r in records if r.get("event") != "start"]  # the run header
    assert records and all(r["waiting_seconds"] >= 0 and r["computing_seconds"] > 0 for r in records)
    split = model.info["time_split"]
    # The iterations' evaluations; the one at the starting point is kept apart.
    assert split["evaluations"] == model.info["evaluations"] - 1
    assert split["computing_seconds"] == pytest.approx(sum(r["computing_seconds"] for r in records))
    assert split["start_seconds"] > 0
    assert any(text.startswith("per evaluation") for text in monitor.messages)
    assert any("rows per read" in text for text in monitor.messages)
    described = describe(out)
    assert described["evaluation_time"]["evaluations"] == split["evaluations"]
    assert described["evaluation_time"]["computing_seconds"] == pytest.approx(
        split["computing_seconds"] / split["evaluations"]
    )


def _train_small(rng, patch_file, out, monitor, **options):
    """Train 16 -> 4 on 2000 rows for exactly ``max_iter`` iterations (no early stop)."""
    X = rng.uniform(0.1, 0.9, size=(2000, 16)).astype(np.float32)
    return streamae.train(
        patch_file(X, chunk_rows=200), out, hidden=4, grad_tol=0, progress_tol=0, monitor=monitor, **options
    )


def test_train_counts_the_time_its_iterations_spend_besides_evaluating(
    rng, patch_file, tmp_path, monkeypatch
):
    # A search direction made 50 ms slower must show up in the time besides the
    # evaluations, and nowhere in the evaluations' own split.
    import time

    from streamae.compute import lbfgs

    slow = 0.05
    direction = lbfgs.search_direction

    def slowed(state):
        time.sleep(slow)
        return direction(state)

    monkeypatch.setattr(lbfgs, "search_direction", slowed)
    out = tmp_path / "m.h5"
    monitor = MessageMonitor()
    model = _train_small(rng, patch_file, out, monitor, max_iter=4)
    split = model.info["time_split"]
    assert model.iterations == 4
    assert split["besides_seconds"] >= 4 * slow
    assert split["computing_seconds"] + split["waiting_seconds"] < model.info["seconds"]
    expected = split["besides_seconds"] / (
        split["besides_seconds"] + split["computing_seconds"] + split["waiting_seconds"]
    )
    assert describe(out)["evaluation_time"]["besides_share"] == pytest.approx(expected)
    assert any("besides the evaluations" in text for text in monitor.messages)


def test_the_evaluation_at_the_start_stays_out_of_the_per_evaluation_split(
    rng, patch_file, tmp_path, monkeypatch
):
    # A first evaluation made 0.5 s slower (as compiling the kernels on a cold Numba cache
    # makes it) must be reported on its own, not averaged into the iterations' evaluations.
    import time

    from streamae.compute.schemes import SinglePassObjective

    slow = 0.5
    evaluate = SinglePassObjective.__call__

    def slowed_first(self, theta):
        if self.evaluations == 0:
            time.sleep(slow)
        return evaluate(self, theta)

    monkeypatch.setattr(SinglePassObjective, "__call__", slowed_first)
    out = tmp_path / "m.h5"
    monitor = MessageMonitor()
    model = _train_small(rng, patch_file, out, monitor, max_iter=3, scheme="single-pass")
    split = model.info["time_split"]
    assert split["start_seconds"] >= slow
    assert split["computing_seconds"] + split["waiting_seconds"] < slow
    summary = next(text for text in monitor.messages if text.startswith("per evaluation"))
    assert "starting point took" in summary
    described = describe(out)["evaluation_time"]
    assert described["start_seconds"] == pytest.approx(split["start_seconds"])
    assert described["computing_seconds"] < slow / split["evaluations"]


def test_models_without_the_time_split_still_describe(rng, patch_file, tmp_path):
    X = rng.uniform(0.1, 0.9, size=(500, 9)).astype(np.float32)
    out = tmp_path / "m.h5"
    streamae.train(patch_file(X, chunk_rows=100), out, hidden=3, max_iter=1)
    with h5py.File(out, "r+") as handle:  # as written before the time split existed
        info = json.loads(handle.attrs["info"])
        del info["time_split"]
        handle.attrs["info"] = json.dumps(info)
    assert describe(out)["evaluation_time"] is None
    assert streamae.load_model(out).n_hidden == 3
