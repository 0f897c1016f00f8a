"""Writes that fail part-way (a full disk, a file-size limit) and reads that fail mid-pass.

A full disk is a 2 MiB tmpfs mounted by the test (root only; skipped with the reason
otherwise) and, unprivileged, RLIMIT_FSIZE in a subprocess (writes past the limit fail with
EFBIG; Python ignores SIGXFSZ).  Either way the command must end with exit code 1 and one
line saying the disk is full and where, the previous output must be intact and no
temporary may be left taking the space.

A read error in the middle of a pass is a copy of a patch file cut after its fourth chunk,
with the superblock's end-of-file address lowered to match (otherwise HDF5 refuses the
file when opening it): the first chunks read, the fifth fails.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import failure_problems, invoke, write_patch_file

from .faultkit import (
    FIGURES,
    OutputGuard,
    assert_clean_case,
    assert_no_temporaries,
    mounted_tmpfs,
    streamae_command,
    subprocess_environment,
)

TMPFS_BYTES = 2 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: files larger than that fail with ENOSPC part-way through."""
    with mounted_tmpfs(
        tmp_path / "small-disk",
        f"size={TMPFS_BYTES}",
        "mounting a tmpfs needs root; the RLIMIT_FSIZE tests cover a failing write",
    ) as folder:
        yield folder


@pytest.fixture
def big_patches(tmp_path: Path) -> Path:
    """20,000 patches (5 MB): their features or reconstructions do not fit on the small disk."""
    data = np.random.default_rng(8).uniform(0.1, 0.9, size=(20_000, 64)).astype(np.float32)
    return write_patch_file(tmp_path / "big.h5", data, chunk_rows=1000, patch_shape=(8, 8, 1))


def _free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _fill(folder: Path, leave: int) -> None:
    """Fill the disk at ``folder`` but ``leave`` bytes."""
    filler = folder / "filler"
    filler.write_bytes(bytes(max(0, _free_bytes(folder) - leave)))


def _check_disk_full(result, command: str, names: list[Path], guard: OutputGuard, free_before: int) -> None:
    assert_clean_case(result, command, 1, names=names, fragments=["disk is full", guard.path.parent.name])
    guard.assert_intact()
    assert _free_bytes(guard.path.parent) == free_before, "the failed write left its space taken"


def test_extract_onto_a_full_disk(small_disk, images_dir):
    guard = OutputGuard.create(small_disk / "patches.h5")
    free = _free_bytes(small_disk)
    result = invoke("extract", images_dir, "-o", guard.path, "--force", "--num-patches", "20000")
    _check_disk_full(result, "extract", [guard.path], guard, free)


def test_encode_onto_a_full_disk(small_disk, good_model, big_patches):
    guard = OutputGuard.create(small_disk / "features.h5")
    free = _free_bytes(small_disk)
    result = invoke("encode", good_model, big_patches, "-o", guard.path, "--force", "--reconstruct")
    _check_disk_full(result, "encode", [guard.path], guard, free)


def test_train_onto_a_full_disk(small_disk, good_patches):
    guard = OutputGuard.create(small_disk / "model.h5")
    _fill(small_disk, leave=8 << 10)  # room for nothing but a few pages
    free = _free_bytes(small_disk)
    result = invoke("train", good_patches, "-o", guard.path, "--force", "--max-iter", "2", "--hidden", "25")
    _check_disk_full(result, "train", [guard.path], guard, free)


@pytest.mark.parametrize("option", ["-o", "--curves", "--activations"])
def test_visualize_onto_a_full_disk(option, small_disk, good_model):
    guard = OutputGuard.create(small_disk / "picture.png")
    _fill(small_disk, leave=4 << 10)
    free = _free_bytes(small_disk)
    result = invoke("visualize", good_model, option, guard.path, "--force", "--scale", "64")
    _check_disk_full(result, "visualize", [guard.path], guard, free)


# --------------------------------------------------------------------------- RLIMIT_FSIZE


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("command", ["extract", "encode"])
def test_a_file_size_limit_is_reported_as_a_full_disk(command, tmp_path, images_dir, good_model, big_patches):
    """RLIMIT_FSIZE (no privileges needed): the write fails with EFBIG part-way."""
    guard = OutputGuard.create(tmp_path / "out.h5")
    if command == "extract":
        args = ["extract", images_dir, "-o", guard.path, "--force", "--num-patches", "20000"]
    else:
        args = ["encode", good_model, big_patches, "-o", guard.path, "--force", "--reconstruct"]
    result = subprocess.run(streamae_command(args), capture_output=True, text=True, timeout=120,
                            env=subprocess_environment(), preexec_fn=_limit_file_size(1 << 20))  # fmt: skip
    problems = failure_problems(result.stdout, result.stderr, result.returncode, (1,), [guard.path.name],
                                ["disk is full"])  # fmt: skip
    FIGURES.record_case(command, not problems)
    assert not problems, f"{problems}\n{result.stderr}"
    guard.assert_intact()
    assert sys.platform != "win32"


# --------------------------------------------------------------------------- read errors


CHUNK_ROWS = 250


def cut_after_chunks(source_data: np.ndarray, path: Path, keep_chunks: int) -> Path:
    """A patch file whose chunks after the first ``keep_chunks`` lie past its (lowered) end.

    The attributes are written before the data, so the chunks are the last thing in the
    file, in row order; the superblock (version 0, h5py's default) holds the end-of-file
    address at byte 40.
    """
    with h5py.File(path, "w", libver="earliest") as handle:
        handle.attrs["format"] = "streamae.patches/1"
        handle.attrs["patch_shape"] = np.array([8, 8, 1])
        dataset = handle.create_dataset("patches", shape=source_data.shape, dtype=np.float32,
                                        chunks=(CHUNK_ROWS, source_data.shape[1]))  # fmt: skip
        dataset[...] = source_data
    content = bytearray(path.read_bytes())
    assert content[8] == 0, "expected a version 0 superblock"
    chunk_bytes = CHUNK_ROWS * source_data.shape[1] * 4
    n_chunks = -(-source_data.shape[0] // CHUNK_ROWS)
    cut = len(content) - (n_chunks - keep_chunks) * chunk_bytes
    del content[cut:]
    content[40:48] = struct.pack("<Q", cut)
    path.write_bytes(bytes(content))
    return path


@pytest.fixture
def cut_file(tmp_path: Path) -> Path:
    data = np.random.default_rng(12).uniform(0.1, 0.9, size=(2000, 64)).astype(np.float32)
    return cut_after_chunks(data, tmp_path / "cut.h5", keep_chunks=4)


def test_the_cut_file_opens_and_fails_at_its_fifth_chunk(cut_file):
    """The simulation does what it claims (so the tests below test a mid-pass read error)."""
    with h5py.File(cut_file, "r") as handle:
        dataset = handle["patches"]
        dataset[: 4 * CHUNK_ROWS]
        with pytest.raises(OSError):
            dataset[4 * CHUNK_ROWS : 5 * CHUNK_ROWS]


def test_train_names_the_rows_and_file_of_a_read_error(cut_file, tmp_path):
    guard = OutputGuard.create(tmp_path / "model.h5")
    result = invoke("train", cut_file, "-o", guard.path, "--force", "--max-iter", "2", "--hidden", "3")
    assert_clean_case(result, "train", 1, names=[cut_file], fragments=["rows 1000-1249", "chunk 4"])
    guard.assert_intact()


def test_encode_names_the_rows_and_file_of_a_read_error(cut_file, good_model, tmp_path):
    guard = OutputGuard.create(tmp_path / "features.h5")
    result = invoke("encode", good_model, cut_file, "-o", guard.path, "--force")
    assert_clean_case(result, "encode", 1, names=[cut_file], fragments=["rows 1000-1249", "chunk 4"])
    guard.assert_intact()


def test_a_read_error_never_costs_the_previous_output(cut_file, good_model, tmp_path):
    """Whatever the message, a failed read mid-pass leaves outputs as they were, exit code 1."""
    for args in (["train", cut_file, "--max-iter", "2", "--hidden", "3"], ["encode", good_model, cut_file]):
        guard = OutputGuard.create(tmp_path / "out.h5")
        result = invoke(*args, "-o", guard.path, "--force")
        assert result.exit_code == 1 and "rows 1000-1249" in result.stderr and "cut.h5" in result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        guard.assert_intact()
        assert_no_temporaries(tmp_path)
