"""Names from files on the terminal, a full disk under the log, Numba's thread settings
(issue 11, classes 10-12).

Class 10: a dataset name, an attribute or a file name carrying ``ESC]0;...BEL ESC[2J``
reaches the messages of train, encode, gradcheck, visualize and extract only through the
one sanitiser: no control character but the newline is ever printed.
Class 11: ``--log`` on a full disk ends with the disk-full sentence (exit 1) and keeps the
last checkpoint.  Class 12: bad ``NUMBA_NUM_THREADS`` values are refused with a sentence
naming the variable, in a fresh interpreter (Numba reads it when imported).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import invoke

from streamae.io.modelfile import load_model
from streamae.text import printable

from .faultkit import assert_clean_case, assert_clean_subprocess_failure, run_streamae
from .test_faults_disk import _fill, small_disk  # noqa: F401 - the tmpfs fixture

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202e"


def _no_control_characters(text: str) -> None:
    bad = sorted({repr(c) for c in text if c != "\n" and printable(c) != c})
    assert not bad, f"control characters reached the terminal: {bad}\n{text!r}"


def _hostile_patches(path: Path) -> Path:
    """No /patches; datasets and an attribute whose names carry escape sequences."""
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "streamae.patches/1"
        handle.create_dataset(f"data{HOSTILE}", data=np.zeros((4, 4), np.float32))
        handle.create_dataset(f"grp/{HOSTILE}", data=np.zeros(3))
    return path


def _hostile_model(path: Path) -> Path:
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = HOSTILE
        handle.create_dataset(f"W{HOSTILE}", data=np.zeros((3, 4)))
    return path


def _hostile_checkpoint(tmp_path: Path, good_patches: Path) -> Path:
    model = tmp_path / "checkpoint.h5"
    assert (
        invoke(
            "train", good_patches, "-o", model, "--max-iter", "2", "--hidden", "3", "--keep-state", "-q"
        ).exit_code
        == 0
    )
    with h5py.File(model, "r+") as handle:
        stored = json.loads(handle.attrs["data"])
        handle.attrs["data"] = json.dumps({**stored, "path": f"/data/{HOSTILE}.h5"})
    return model


def _hostile_image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / f"bad{HOSTILE}.png").write_bytes(b"not a png at all")
    return folder


CASES = {
    "train-listing": lambda t, p, m: ["train", _hostile_patches(t / "h.h5"), "-o", t / "o.h5"],
    "encode-data-listing": lambda t, p, m: ["encode", m, _hostile_patches(t / "h.h5"), "-o", t / "o.h5"],
    "encode-model": lambda t, p, m: ["encode", _hostile_model(t / "hm.h5"), p, "-o", t / "o.h5"],
    "gradcheck-listing": lambda t, p, m: ["gradcheck", "--data", _hostile_patches(t / "h.h5")],
    "visualize-model": lambda t, p, m: ["visualize", _hostile_model(t / "hm.h5"), "-o", t / "o.png"],
    "resume-stored-path": lambda t, p, m: ["train", p, "-o", _hostile_checkpoint(t, p), "--resume",
                                           "--hidden", "3"],
    "extract-file-name": lambda t, p, m: ["extract", _hostile_image_folder(t), "-o", t / "o.h5"],
    "info-listing": lambda t, p, m: ["info", _hostile_patches(t / "h.h5")],
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_escape_sequences_from_files_never_reach_the_terminal(case, tmp_path, good_patches, good_model):
    result = invoke(*CASES[case](tmp_path, good_patches, good_model))
    _no_control_characters(result.stderr)
    _no_control_characters(result.stdout)
    if case != "info-listing":
        assert_clean_case(result, {"resume": "train"}.get(case.split("-")[0], case.split("-")[0]), (1, 2))


@pytest.mark.parametrize("text", [HOSTILE, "plain name", "tab\there", "\udcff surrogate", "e\u0301 accent"])
def test_the_sanitiser_escapes_only_what_drives_a_terminal(text):
    shown = printable(text, None)
    assert all(printable(c) == c for c in shown)
    if text.isprintable():
        assert shown == text  # nothing printable is changed
    assert len(printable(text * 100, 50)) == 50


# ------------------------------------------------------------------ class 11: log, full disk


@pytest.mark.parametrize(("leave", "resume"), [(0, False), (1500, False), (0, True)])
def test_a_log_on_a_full_disk_says_so(leave, resume, small_disk, good_patches, tmp_path):  # noqa: F811
    model, log = tmp_path / "model.h5", small_disk / "log.jsonl"
    common = [
        "train",
        good_patches,
        "-o",
        model,
        "--log",
        log,
        "--hidden",
        "3",
        "--checkpoint-every",
        "1",
        "-q",
    ]
    before = None
    if resume:
        assert invoke(*common, "--max-iter", "2", "--keep-state").exit_code == 0
        before = model.read_bytes()
    _fill(small_disk, leave=leave)
    result = invoke(*common, "--max-iter", "40", *(["--resume"] if resume else []))
    assert_clean_case(result, "train", 1, names=[log], fragments=["disk is full"])
    # The model is the one resumed from, untouched (the log filled the disk before the
    # first checkpoint), or the last good checkpoint, whole.
    if model.exists() and model.read_bytes() != before:
        assert load_model(model).info["finished"] == ""


# ------------------------------------------------------------------ class 12: Numba threads

BAD_THREADS = ["0", "-1", "abc", "1.5", "99999999", "0x4", "\u0968", "2 threads"]


@pytest.mark.parametrize("command", ["gradcheck", "train"])
@pytest.mark.parametrize("value", BAD_THREADS)
def test_a_bad_numba_thread_setting_is_refused(value, command, good_patches, tmp_path):
    args = ["gradcheck"] if command == "gradcheck" else ["train", good_patches, "-o", tmp_path / "m.h5"]
    completed = run_streamae(args, timeout=120, NUMBA_NUM_THREADS=value)
    assert_clean_subprocess_failure(completed, command, 2, names=["NUMBA_NUM_THREADS"])
    assert not (tmp_path / "m.h5").exists()


@pytest.mark.parametrize("value", ["1", "", " 2 "])
def test_a_good_numba_thread_setting_works(value):
    completed = run_streamae(["gradcheck"], timeout=120, NUMBA_NUM_THREADS=value)
    assert completed.returncode == 0, completed.stderr
    assert "relative difference" in completed.stdout


def test_help_works_whatever_the_thread_setting():
    completed = run_streamae(["train", "--help"], timeout=120, NUMBA_NUM_THREADS="abc")
    assert completed.returncode == 0 and "Usage" in completed.stdout
