"""Unusual HDF5 layouts of /patches (issue 11, class 8).

Soft links are followed or refused with a sentence (cycles, dangling links, external links
to nothing); a valid virtual dataset trains like the data it maps, one with a missing
source is refused; a dataset whose chunks were never all written trains with a warning
naming how many; raw external storage is read when present and refused clearly (never as
"truncated or damaged") when missing, short, or a FIFO.  Every case runs ``train`` and
``info``; those that could block run in a subprocess with a timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import invoke

from .faultkit import assert_clean_case, assert_clean_subprocess_failure, run_streamae

ROWS, WIDTH = 300, 64


def _values(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, size=(ROWS, WIDTH)).astype(np.float32)


def _patch_file(path: Path, build) -> Path:
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "streamae.patches/1"
        build(handle, path)
    return path


def _two_cycle(handle, path):
    handle["patches"] = h5py.SoftLink("/other")
    handle["other"] = h5py.SoftLink("/patches")


def _self_cycle(handle, path):
    handle["patches"] = h5py.SoftLink("/patches")


def _three_cycle_in_groups(handle, path):
    handle.create_group("g")
    handle["patches"] = h5py.SoftLink("/g/a")
    handle["g/a"] = h5py.SoftLink("/g/b")
    handle["g/b"] = h5py.SoftLink("/patches")


def _dangling(handle, path):
    handle["patches"] = h5py.SoftLink("/nowhere/data")


def _external_link_to_nothing(handle, path):
    handle["patches"] = h5py.ExternalLink("no-such-file.h5", "/patches")


def _external_link_cycle(handle, path):
    handle["patches"] = h5py.ExternalLink(path.name, "/patches")


def _virtual(missing: bool, dataset_missing: bool = False):
    def build(handle, path):
        source = path.with_name("source.h5")
        if not missing:
            with h5py.File(source, "w") as other:
                other.create_dataset("other" if dataset_missing else "d", data=_values())
        layout = h5py.VirtualLayout(shape=(ROWS, WIDTH), dtype="f4")
        layout[:] = h5py.VirtualSource(source.name, "d", shape=(ROWS, WIDTH))
        handle.create_virtual_dataset("patches", layout, fillvalue=0)

    return build


def _external(kind: str):
    def build(handle, path):
        raw = path.with_name("raw.bin")
        data = _values()
        if kind == "present":
            data.tofile(raw)
        elif kind == "short":
            data[:10].tofile(raw)
        elif kind == "fifo":
            os.mkfifo(raw)
        handle.create_dataset("patches", shape=data.shape, dtype="f4", external=[(raw.name, 0, data.nbytes)])

    return build


REFUSED = {
    "soft-link-two-cycle": (_two_cycle, "soft link"),
    "soft-link-self-cycle": (_self_cycle, "soft link"),
    "soft-link-cycle-through-groups": (_three_cycle_in_groups, "soft link"),
    "dangling-soft-link": (_dangling, "soft link"),
    "external-link-to-a-missing-file": (_external_link_to_nothing, "external link"),
    "external-link-to-itself": (_external_link_cycle, "external link"),
    "virtual-source-missing": (_virtual(missing=True), "source file"),
    "virtual-source-without-the-dataset": (_virtual(missing=False, dataset_missing=True), "virtual dataset"),
    "external-raw-file-missing": (_external("missing"), "external raw file"),
    "external-raw-file-short": (_external("short"), "fewer than declared"),
    "external-raw-file-is-a-fifo": (_external("fifo"), "not a regular file"),
}


# info describes /patches without reading its values: it is given the link cases; train all.
LAYOUT_CASES = [(case, "train") for case in REFUSED] + [
    (case, "info") for case in REFUSED if not case.startswith(("external-raw", "virtual"))
]


@pytest.mark.parametrize(("case", "command"), LAYOUT_CASES)
def test_an_unusable_layout_is_refused_with_a_sentence(case, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # external raw files are found from the current folder
    build, fragment = REFUSED[case]
    data = _patch_file(tmp_path / "patches.h5", build)
    args = (
        ["train", data, "-o", tmp_path / "m.h5", "--max-iter", "1", "-q"]
        if command == "train"
        else ["info", data]
    )
    completed = run_streamae(args, timeout=90)
    message = assert_clean_subprocess_failure(completed, command, (1, 2), names=[data], fragments=[fragment])
    assert "truncated or damaged" not in message
    assert not (tmp_path / "m.h5").exists()


def _trained_cost(args: list[object]) -> float:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return float(result.stderr.split("J = ")[1].split()[0])


@pytest.mark.parametrize("layout", ["virtual", "external-raw", "soft-link"])
def test_a_valid_unusual_layout_trains_like_plain_data(layout, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = _patch_file(tmp_path / "plain.h5", lambda h, p: h.create_dataset("patches", data=_values()))
    if layout == "virtual":
        build = _virtual(missing=False)
    elif layout == "external-raw":
        build = _external("present")
    else:

        def build(handle, path):
            handle.create_dataset("stored/values", data=_values())
            handle["patches"] = h5py.SoftLink("/stored/values")

    unusual = _patch_file(tmp_path / "unusual.h5", build)
    common = ["--hidden", "4", "--max-iter", "3", "--force"]
    expected = _trained_cost(["train", plain, "-o", tmp_path / "a.h5", *common])
    assert _trained_cost(["train", unusual, "-o", tmp_path / "b.h5", *common]) == expected


@pytest.mark.parametrize("written", [0, 1, 3])
def test_never_written_chunks_are_warned_about(written, tmp_path):
    def build(handle, path):
        dataset = handle.create_dataset(
            "patches", shape=(ROWS, WIDTH), dtype="f4", chunks=(64, WIDTH), fillvalue=0.5
        )
        for chunk in range(written):
            dataset[chunk * 64 : (chunk + 1) * 64] = _values()[:64]

    data = _patch_file(tmp_path / "patches.h5", build)
    result = invoke("train", data, "-o", tmp_path / "m.h5", "--hidden", "3", "--max-iter", "1")
    if written == 0:  # nothing stored at all: refused as before
        assert_clean_case(result, "train", 2, names=[data], fragments=["never written"])
        return
    assert result.exit_code == 0, result.output
    missing = -(-ROWS // 64) - written
    assert f"{missing} chunk(s) of /patches were never written" in result.stderr
