"""Files that change under a run, damaged checkpoints, outputs that appear (issue 11, classes 4-6).

Class 4: the patch file is truncated, overwritten, rewritten in place, replaced or removed
while ``train`` runs (a subprocess, polled until its first checkpoint exists): the run must
stop with exit 1 and one sentence, keeping the last good checkpoint.  A checkpoint resumed
on a file whose contents changed since is refused; one written before content fingerprints
existed, or resumed on an identical copy, resumes as before.

Class 5: every field of a checkpoint's optimizer state damaged in turn: refused with the
file and what is wrong, the checkpoint untouched.

Class 6: an output that appears (or is replaced) while a run works is never clobbered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import failure_problems, invoke, write_patch_file

import streamae
from streamae.errors import OutputExistsError
from streamae.io.atomic import atomic_output
from streamae.io.modelfile import load_model
from streamae.io.patchfile import content_fingerprint
from streamae.training.loop import TrainingMonitor

from .faultkit import (
    FIGURES,
    OutputGuard,
    assert_clean_case,
    assert_no_temporaries,
    streamae_command,
    subprocess_environment,
)

# ------------------------------------------------------------------ class 4: under a run

CHANGE_ROWS = 200_000  # 51 MB of float32: each two-pass evaluation takes a noticeable time
RUN_TIMEOUT = 180


@pytest.fixture(scope="module")
def long_patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contiguous (unchunked) patch file whose data offset is known, for rewriting in place."""
    path = tmp_path_factory.mktemp("changes") / "long.h5"
    data = np.random.default_rng(11).uniform(0.1, 0.9, size=(CHANGE_ROWS, 64)).astype(np.float32)
    return write_patch_file(path, data, chunk_rows=None, patch_shape=(8, 8, 1))


def _data_offset(path: Path) -> int:
    with h5py.File(path, "r") as handle:
        return int(handle["patches"].id.get_offset())


def _truncate_empty(path: Path) -> None:
    os.truncate(path, 0)


def _truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _random_bytes(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.write(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())


def _rewrite_values(path: Path) -> None:
    """New values in place (same size, same layout): only the modification time tells."""
    offset = _data_offset(path)
    values = np.random.default_rng(2).uniform(0.1, 0.9, size=4096 * 64).astype(np.float32)
    with open(path, "r+b") as handle:
        handle.seek(offset + 8192)
        handle.write(values.tobytes())


def _replace(path: Path) -> None:
    other = path.with_name("other.h5")
    data = np.random.default_rng(3).uniform(0.1, 0.9, size=(CHANGE_ROWS, 64)).astype(np.float32)
    write_patch_file(other, data, chunk_rows=None, patch_shape=(8, 8, 1))
    os.replace(other, path)


def _remove(path: Path) -> None:
    path.unlink()


CHANGES = {
    "truncated-to-zero": _truncate_empty,
    "truncated-to-half": _truncate_half,
    "overwritten-with-random-bytes": _random_bytes,
    "values-rewritten-in-place": _rewrite_values,
    "replaced-by-another-file": _replace,
    "removed": _remove,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_data_that_changes_under_a_run_stops_it(change, long_patches, tmp_path):
    data = tmp_path / "patches.h5"
    shutil.copyfile(long_patches, data)
    model = tmp_path / "model.h5"
    args = ["train", data, "-o", model, "--hidden", "8", "--scheme", "two-pass", "--max-iter", "100000",
            "--grad-tol", "0", "--progress-tol", "0", "--checkpoint-every", "1", "-q"]  # fmt: skip
    process = subprocess.Popen(streamae_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=subprocess_environment())  # fmt: skip
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not model.exists():
            assert process.poll() is None, f"train ended early: {process.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        CHANGES[change](data)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    problems = failure_problems(stdout, stderr, process.returncode, (1,), [data.name])
    FIGURES.record_case("train", not problems)
    assert not problems, f"{problems}\nstderr: {stderr}"
    assert "changed" in stderr or "truncated" in stderr, stderr
    kept = load_model(model)  # the last good checkpoint, whole
    assert kept.iterations >= 1 and kept.info["finished"] == ""
    assert_no_temporaries(tmp_path)


def _trained(tmp_path: Path, data: Path, iterations: int = 3) -> Path:
    model = tmp_path / "model.h5"
    result = invoke(
        "train", data, "-o", model, "--hidden", "4", "--max-iter", iterations, "--keep-state", "-q"
    )
    assert result.exit_code == 0, result.output
    return model


@pytest.fixture
def chunky_patches(tmp_path: Path) -> Path:
    """640 rows in 40 chunks of 16: more chunks than the content fingerprint samples."""
    data = np.random.default_rng(5).uniform(0.1, 0.9, size=(640, 64)).astype(np.float32)
    return write_patch_file(tmp_path / "patches.h5", data, chunk_rows=16, patch_shape=(8, 8, 1))


def _rewrite(path: Path, edit) -> None:
    with h5py.File(path, "r+") as handle:
        values = handle["patches"][...]
        handle["patches"][...] = edit(values)


def _unsampled_chunk(path: Path) -> int:
    """A chunk whose values the content fingerprint does not read (found by trying)."""
    with h5py.File(path, "r") as handle:
        reference = content_fingerprint(handle["patches"])
    for chunk in range(40):
        probe = path.with_name("probe.h5")
        shutil.copyfile(path, probe)
        with h5py.File(probe, "r+") as handle:
            handle["patches"][chunk * 16, 0] = 0.5
            changed = content_fingerprint(handle["patches"]) != reference
        probe.unlink()
        if not changed:
            return chunk
    raise AssertionError("every chunk is sampled")


def _scaled(values: np.ndarray) -> np.ndarray:
    return values * 0.5


def _reversed_rows(values: np.ndarray) -> np.ndarray:
    return values[::-1]


def _first_chunk_new(values: np.ndarray) -> np.ndarray:
    values[:16] = np.random.default_rng(9).uniform(0.1, 0.9, size=(16, 64))
    return values


@pytest.mark.parametrize("edit", [_scaled, _reversed_rows, _first_chunk_new], ids=lambda e: e.__name__)
def test_resume_on_changed_contents_is_refused(edit, chunky_patches, tmp_path):
    model = _trained(tmp_path, chunky_patches)
    before = model.read_bytes()
    _rewrite(chunky_patches, edit)
    result = invoke(
        "train", chunky_patches, "-o", model, "--hidden", "4", "--max-iter", "5", "--resume", "-q"
    )
    assert_clean_case(result, "train", (1, 2), names=[model], fragments=["cannot resume"])
    assert model.read_bytes() == before


def test_resume_on_a_value_outside_the_sampled_chunks_is_refused(chunky_patches, tmp_path):
    """The sampled hash misses it; the value range of the scan catches a new extreme."""
    model = _trained(tmp_path, chunky_patches)
    chunk = _unsampled_chunk(chunky_patches)
    with h5py.File(chunky_patches, "r+") as handle:
        handle["patches"][chunk * 16 + 3, 5] = 0.97  # above the data's maximum of 0.9
    result = invoke(
        "train", chunky_patches, "-o", model, "--hidden", "4", "--max-iter", "5", "--resume", "-q"
    )
    assert_clean_case(result, "train", 1, names=[model], fragments=["0.97"])


@pytest.mark.parametrize("how", ["identical-copy", "checkpoint-without-fingerprint"])
def test_resume_still_works_when_nothing_changed(how, chunky_patches, tmp_path):
    model = _trained(tmp_path, chunky_patches)
    if how == "identical-copy":
        copy = chunky_patches.with_name("copy.h5")
        shutil.copyfile(chunky_patches, copy)
        os.replace(copy, chunky_patches)  # a new inode, the same values
    else:
        with h5py.File(model, "r+") as handle:  # as written before fingerprints held content
            stored = json.loads(handle.attrs["data"])
            handle.attrs["data"] = json.dumps(
                {k: v for k, v in stored.items() if k in ("path", "shape", "dtype")}
            )
    result = invoke(
        "train", chunky_patches, "-o", model, "--hidden", "4", "--max-iter", "5", "--resume", "-q"
    )
    assert result.exit_code == 0, result.output
    assert load_model(model).iterations == 5


# ------------------------------------------------------------------ class 5: damaged state


def _replace_dataset(key: str, make):
    def edit(group: h5py.Group, p: int) -> None:
        value = make(group, p)
        if key in group:
            del group[key]
        group[key] = value

    return edit


def _set_attribute(key: str, value):
    def edit(group: h5py.Group, p: int) -> None:
        group.attrs[key] = value

    return edit


def _shift_f(group: h5py.Group, p: int) -> None:
    group.attrs["f"] = float(group.attrs["f"]) + 0.5


DAMAGES = {
    "g-wrong-length": (_replace_dataset("g", lambda g, p: np.zeros(p - 1)), "g has shape"),
    "x-wrong-length": (_replace_dataset("x", lambda g, p: np.zeros(p + 3)), "x has shape"),
    "x-nan": (_replace_dataset("x", lambda g, p: np.full(p, np.nan)), "NaN"),
    "g-nan": (_replace_dataset("g", lambda g, p: np.full(p, np.nan)), "NaN"),
    "g-scaled": (_replace_dataset("g", lambda g, p: 3.0 * g["g"][...] + 1.0), "gradient differs"),
    "all-zero-pairs": (_replace_dataset("s_pairs", lambda g, p: np.zeros(g["s_pairs"].shape)), "curvature"),
    "pairs-wrong-width": (_replace_dataset("y_pairs", lambda g, p: np.ones((1, p + 1))), "y_pairs has shape"),
    "pairs-nan": (_replace_dataset("y_pairs", lambda g, p: np.full(g["y_pairs"].shape, np.nan)), "NaN"),
    "f-minus-inf": (_set_attribute("f", -np.inf), "not finite"),
    "f-nan": (_set_attribute("f", np.nan), "not finite"),
    "f-inconsistent": (_shift_f, "evaluated at its point"),
    "memory-huge": (_set_attribute("memory", 10**12), "memory"),
    "memory-zero": (_set_attribute("memory", 0), "memory"),
    "memory-below-pairs": (_set_attribute("memory", 1), "more than memory"),
    "iteration-negative": (_set_attribute("iteration", -4), "negative"),
    "evaluations-fraction": (_set_attribute("evaluations", 2.5), "whole number"),
    "f-text": (_set_attribute("f", "cheap"), "not a number"),
    # The ring is not full (fewer pairs than memory): its oldest pair must be in slot 0.
    "oldest-in-a-partial-ring": (_set_attribute("oldest", 1), "oldest = 1"),
    "oldest-negative": (_set_attribute("oldest", -1), "oldest = -1"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_optimizer_state_is_refused(damage, chunky_patches, tmp_path):
    model = _trained(tmp_path, chunky_patches)
    edit, fragment = DAMAGES[damage]
    with h5py.File(model, "r+") as handle:
        group = handle["optimizer"]
        assert group["s_pairs"].shape[0] >= 2  # the pairs the damages need
        edit(group, group["x"].shape[0])
    before = model.read_bytes()
    result = invoke(
        "train", chunky_patches, "-o", model, "--hidden", "4", "--max-iter", "6", "--resume", "-q"
    )
    assert_clean_case(result, "train", 2, names=[model], fragments=[fragment])
    assert model.read_bytes() == before


# ------------------------------------------------------------------ class 6: outputs appearing


class _Intruder(TrainingMonitor):
    """Does ``act`` once, after iteration ``at``: another program touching the output."""

    def __init__(self, at: int, act) -> None:
        self.at, self.act, self.done = at, act, False

    def on_iteration(self, record: dict) -> None:
        if record["iteration"] == self.at and not self.done:
            self.done = True
            self.act()


def _foreign(path: Path):
    return lambda: OutputGuard.create(path, b"someone else's file\n")


def _foreign_link(path: Path, target: Path):
    def act() -> None:
        target.write_bytes(b"the link's target\n")
        path.symlink_to(target)

    return act


@pytest.mark.parametrize(
    ("name", "force", "every", "at"),
    [
        ("appears-before-the-final-write", False, 0, 2),
        ("appears-before-the-first-checkpoint", False, 2, 1),
        ("replaces-a-checkpoint", False, 1, 2),
        ("replaces-the-file-force-was-given-for", True, 0, 2),
        ("a-symlink-appears", False, 0, 2),
    ],
)
def test_an_output_that_appears_during_a_run_is_not_clobbered(name, force, every, at, good_patches, tmp_path):
    model = tmp_path / "model.h5"
    if force:
        OutputGuard.create(model, b"the file --force was given for\n")
    act = _foreign_link(model, tmp_path / "elsewhere") if name == "a-symlink-appears" else None
    if act is None:

        def act() -> None:
            if model.exists():
                model.unlink()
            _foreign(model)()

    with pytest.raises(OutputExistsError, match="while this run was working"):
        streamae.train(good_patches, model, hidden=3, max_iter=4, checkpoint_every=every, force=force,
                       monitor=_Intruder(at, act), stop_signals=False)  # fmt: skip
    if name == "a-symlink-appears":
        assert model.is_symlink() and (tmp_path / "elsewhere").read_bytes() == b"the link's target\n"
    else:
        assert model.read_bytes() == b"someone else's file\n"
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("appears", ["file", "folder", "fifo"])
def test_every_atomic_output_rechecks_before_the_rename(appears, force, tmp_path):
    """What extract, encode and visualize write goes through the same door."""
    target = tmp_path / "out.h5"
    with pytest.raises(OutputExistsError):
        with atomic_output(target, force=force) as temporary:
            temporary.write_bytes(b"new contents\n")
            {"file": lambda: target.write_bytes(b"theirs\n"), "folder": target.mkdir,
             "fifo": lambda: os.mkfifo(target)}[appears]()  # fmt: skip
    assert not target.is_file() or target.read_bytes() == b"theirs\n"
    assert_no_temporaries(tmp_path)
