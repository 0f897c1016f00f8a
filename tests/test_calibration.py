"""streamae.compute.calibration: BLAS or tiles decided on the host, by a margin, and kept.

The decision is checked with planted timings (the margin is never undercut), the cache by
counting measurements (written, reused, measured again when the host identity changes,
never an error when unwritable or damaged), the per-node rule with a stand-in
communicator, and one real measurement at a tiny layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamae.compute import calibration

SHAPE = ("single-pass", 16, 5, np.float32, 256)


def timings(**medians: float) -> dict:
    """Nine samples per arm, all equal to the given median (no noise); BLAS 1.0 by default."""
    values = {arm: 1.0 for arm in calibration.ARMS} | medians
    return {arm: [value] * 9 for arm, value in values.items()}


class Stopwatch:
    """A stand-in for calibration.measure: planted timings, and a count of the calls."""

    def __init__(self, samples: dict) -> None:
        self.samples = samples
        self.calls = 0

    def __call__(self, *args) -> dict:
        self.calls += 1
        return self.samples


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder and a process that remembers nothing."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("STREAMAE_CACHE_DIR", str(folder))
    calibration.forget()
    yield folder
    calibration.forget()


def test_the_tiles_need_more_than_the_margin():
    assert calibration.decide(timings(tiled=0.98))["chosen"] == "blas"  # 2% < 3%
    assert calibration.decide(timings(tiled=0.94))["chosen"] == "tiled"
    # The fastest of the arms that beat the margin.
    assert calibration.decide(timings(tiled=0.9, **{"tiled sums": 0.8}))["chosen"] == "tiled sums"
    # Noisy samples: 12% faster is not enough when one sample varies by ~30%.
    noisy = timings(tiled=0.88)
    noisy["blas"] = [0.7, 0.8, 0.9, 1.0, 1.0, 1.0, 1.1, 1.2, 1.3]
    decision = calibration.decide(noisy)
    assert decision["noise"] > 0.12 and decision["chosen"] == "blas"
    assert decision["margin"] == decision["noise"]


def test_the_relative_spread_is_the_scaled_median_absolute_deviation():
    assert calibration.relative_spread([1.0, 1.0, 1.0, 2.0, 2.0]) == 0.0  # MAD 0: outliers ignored
    assert calibration.relative_spread([1.0, 2.0, 3.0]) == pytest.approx(1.4826 * 1.0 / 2.0)


samples_strategy = st.lists(st.floats(0.5, 2.0), min_size=5, max_size=9)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({arm: samples_strategy for arm in calibration.ARMS}))
def test_no_arm_is_chosen_by_less_than_the_margin(samples):
    decision = calibration.decide(samples)
    medians = {arm: float(np.median(v)) for arm, v in samples.items()}
    noise = max(
        1.4826 * float(np.median(np.abs(np.array(v) - medians[arm]))) / medians[arm]
        for arm, v in samples.items()
    )
    margin = max(noise, calibration.MIN_MARGIN)
    assert decision["margin"] == pytest.approx(margin)
    if decision["chosen"] != "blas":
        assert medians[decision["chosen"]] < medians["blas"] * (1.0 - margin)
    else:
        assert all(medians[a] >= medians["blas"] * (1.0 - margin) for a in medians if a != "blas")


def test_a_calibration_is_written_then_reused_without_measuring(cache, monkeypatch):
    stopwatch = Stopwatch(timings(**{"tiled block": 0.8}))
    monkeypatch.setattr(calibration, "measure", stopwatch)
    first = calibration.choose(*SHAPE)
    assert (first.tiled, first.tiled_sums) == (True, False) and stopwatch.calls == 1
    assert "measured" in first.reason and "20.0% faster" in first.reason
    files = list(cache.glob("calibration-*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    entry = stored["entries"][calibration.entry_key(*SHAPE)]
    assert entry["chosen"] == "tiled block" and entry["seconds"]["tiled block"] == 0.8
    assert stored["host"] == calibration.current_host()
    calibration.choose(*SHAPE)  # the same process: remembered
    calibration.forget()  # as a new process would: read from the file
    again = calibration.choose(*SHAPE)
    assert stopwatch.calls == 1 and again[:2] == first[:2] and "cache" in again.reason
    calibration.choose("in-core", 16, 5, np.float32, 256)  # another objective: measured
    assert stopwatch.calls == 2


@pytest.mark.parametrize(
    "change",
    [
        {"model": "another CPU"},
        {"numba_features": "+sse2"},
        {"versions": {"numba": "0.0.1"}},
        {"blas": [{"api": "mkl", "version": "2025", "architecture": "", "file": "libmkl.so"}]},
    ],
    ids=["cpu model", "numba target", "library version", "BLAS"],
)
def test_a_changed_host_or_library_measures_again(cache, monkeypatch, change):
    stopwatch = Stopwatch(timings())
    monkeypatch.setattr(calibration, "measure", stopwatch)
    calibration.choose(*SHAPE)
    host = dict(calibration.current_host()) | change
    calibration.forget()
    monkeypatch.setattr(calibration, "current_host", lambda: host)
    calibration.choose(*SHAPE)
    assert stopwatch.calls == 2
    assert len(list(cache.glob("calibration-*.json"))) == 2  # the old host's file is kept


def test_an_unwritable_or_damaged_cache_is_no_error(tmp_path, monkeypatch):
    stopwatch = Stopwatch(timings(tiled=0.5))
    monkeypatch.setattr(calibration, "measure", stopwatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STREAMAE_CACHE_DIR", str(blocker / "cache"))
    calibration.forget()
    assert calibration.choose(*SHAPE)[:2] == (True, True)
    assert calibration.calibrate(*SHAPE[:4], SHAPE[4])["stored"] is False
    folder = tmp_path / "cache"
    monkeypatch.setenv("STREAMAE_CACHE_DIR", str(folder))
    calibration.forget()
    folder.mkdir()
    calibration.cache_path(calibration.current_host(), folder).write_text("{ damaged")
    assert calibration.choose(*SHAPE)[:2] == (True, True)
    assert stopwatch.calls == 2
    calibration.forget()


def test_the_cache_folder_follows_the_environment(tmp_path):
    home = Path.home()
    assert calibration.cache_dir({}) == home / ".cache" / "streamae"
    assert calibration.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/streamae")
    numba = {"XDG_CACHE_HOME": "/x", "NUMBA_CACHE_DIR": "/n"}
    assert calibration.cache_dir(numba) == Path("/n/streamae")
    assert calibration.cache_dir(numba | {"STREAMAE_CACHE_DIR": "/s"}) == Path("/s")


def test_no_measurement_without_the_jit_or_for_a_large_layer(cache, monkeypatch):
    stopwatch = Stopwatch(timings(tiled=0.5))
    monkeypatch.setattr(calibration, "measure", stopwatch)
    large = calibration.choose("two-pass", 4096, 2048, np.float32, 512)
    assert large[:2] == (False, False) and "too large" in large.reason
    from numba.core import config

    monkeypatch.setattr(config, "DISABLE_JIT", True)
    assert calibration.choose(*SHAPE)[:2] == (False, False)
    assert stopwatch.calls == 0


class NodeRank:
    """A stand-in communicator: this rank's number on its node and what allgather returns."""

    size = 2

    def __init__(self, local_rank: int, others: list) -> None:
        self._local_rank = local_rank
        self.others = others
        self.gathered = None

    def local_rank(self) -> int:
        return self._local_rank

    def allgather(self, value):
        self.gathered = value
        return [value, *self.others] if self._local_rank == 0 else [*self.others, value]


def test_under_mpi_one_rank_per_node_measures(cache, monkeypatch):
    import socket

    stopwatch = Stopwatch(timings(**{"tiled sums": 0.5}))
    monkeypatch.setattr(calibration, "measure", stopwatch)
    here = socket.gethostname()
    first = NodeRank(0, [(here, None)])
    assert calibration.choose(*SHAPE, comm=first)[:2] == (False, True)
    assert stopwatch.calls == 1 and first.gathered[1]["chosen"] == "tiled sums"
    calibration.forget()
    planted = dict(first.gathered[1], chosen="tiled block")
    second = NodeRank(1, [(here, planted), ("another-node", dict(planted, chosen="tiled"))])
    assert calibration.choose(*SHAPE, comm=second)[:2] == (True, False)  # its node's rank 0's
    assert stopwatch.calls == 1 and second.gathered == (here, None)


@pytest.mark.calibration
def test_a_real_calibration_times_every_arm(cache):
    entry = calibration.calibrate("single-pass", 16, 5, np.dtype(np.float32), 256)
    assert set(entry["seconds"]) == set(calibration.ARMS)
    assert all(seconds > 0 for seconds in entry["seconds"].values())
    assert entry["rounds"] >= calibration.MIN_ROUNDS and entry["source"] == "measured"
    assert entry["chosen"] in calibration.ARMS and entry["stored"] is True
    assert entry["margin"] >= calibration.MIN_MARGIN


def test_info_host_prints_the_host_and_what_was_chosen(cache, monkeypatch):
    from helpers import invoke

    monkeypatch.setattr(calibration, "measure", Stopwatch(timings(tiled=0.5)))
    calibration.choose(*SHAPE)
    result = invoke("info", "--host")
    assert result.exit_code == 0
    text = result.stdout
    assert "-bit vectors" in text and "BLAS: " in text and "numba " in text
    assert f"{calibration.entry_key(*SHAPE)}: tiled (medians: blas 1e+03 ms" in text
    assert str(calibration.cache_path(calibration.current_host())) in text
    as_json = json.loads(invoke("info", "--host", "--json").stdout)
    assert as_json["entries"][calibration.entry_key(*SHAPE)]["chosen"] == "tiled"
    assert as_json["vector_bits"] in (128, 256, 512)
