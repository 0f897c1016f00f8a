"""Malformed HDF5 inputs given to every command that reads them: one clear line, nothing written.

Patch-file cases go to ``train``, ``encode`` (as its DATA), ``gradcheck --data`` and
``info``; model-file cases go to ``visualize``, ``encode`` (as its MODEL) and ``info``.
Each case is built here from a valid file, so what is wrong with it is exactly one thing.
Outputs are pre-existing files replaced only with ``--force``: a failure must leave their
bytes and mtime as they were and leave no temporary beside them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import invoke, write_patch_file

from .faultkit import assert_clean_case, edit_hdf5, listing, write_model

GOOD = np.random.default_rng(11).uniform(0.1, 0.9, size=(300, 64)).astype(np.float32)


def _truncated(fraction_or_bytes: float) -> Callable[[Path, Path], Path]:
    """Builder: the good patch file cut at a byte offset (an int) or a fraction of its size."""

    def build(tmp_path: Path, good: Path) -> Path:
        data = good.read_bytes()
        cut = int(fraction_or_bytes if fraction_or_bytes >= 1 else len(data) * fraction_or_bytes)
        path = tmp_path / f"cut-{cut}.h5"
        path.write_bytes(data[:cut])
        return path

    return build


def _patches(data: np.ndarray, **options) -> Callable[[Path, Path], Path]:
    """Builder: a patch file whose /patches holds ``data`` (written as given)."""

    def build(tmp_path: Path, good: Path) -> Path:
        return write_patch_file(tmp_path / "bad.h5", data, **options)

    return build


def _text(content: bytes) -> Callable[[Path, Path], Path]:
    def build(tmp_path: Path, good: Path) -> Path:
        path = tmp_path / "bad.h5"
        path.write_bytes(content)
        return path

    return build


def _group_named_patches(tmp_path: Path, good: Path) -> Path:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group("patches")["inner"] = GOOD
        handle.attrs["format"] = "streamae.patches/1"
    return path


def _compound(tmp_path: Path, good: Path) -> Path:
    kind = np.dtype([("a", np.float32), ("b", np.int32)])
    return write_patch_file(tmp_path / "bad.h5", np.zeros((20, 4), dtype=kind))


def _strings(tmp_path: Path, good: Path) -> Path:
    return write_patch_file(tmp_path / "bad.h5", np.full((20, 4), b"0.5", dtype="S8"))


def _vlen_strings(tmp_path: Path, good: Path) -> Path:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        values = np.full((20, 4), "0.5", dtype=object)
        handle.create_dataset("patches", data=values, dtype=h5py.string_dtype())
        handle.attrs["format"] = "streamae.patches/1"
    return path


def _no_patches(tmp_path: Path, good: Path) -> Path:
    return write_patch_file(tmp_path / "bad.h5", GOOD, dataset="data")


def _scalar(tmp_path: Path, good: Path) -> Path:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        handle["patches"] = np.float32(0.5)
        handle.attrs["format"] = "streamae.patches/1"
    return path


def _external_link(tmp_path: Path, good: Path) -> Path:
    """/patches is a link to a file that does not exist."""
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        handle["patches"] = h5py.ExternalLink(str(tmp_path / "gone.h5"), "/patches")
        handle.attrs["format"] = "streamae.patches/1"
    return path


def _bad_attributes(tmp_path: Path, good: Path) -> Path:
    """Attributes of the wrong type: a string patch shape, a numeric format, an array seed."""
    path = tmp_path / "bad.h5"
    shutil.copyfile(good, path)
    with h5py.File(path, "r+") as handle:
        handle.attrs["patch_shape"] = "eight by eight"
        handle.attrs["normalization"] = np.arange(5)
        handle.attrs["sources"] = 17
        handle.attrs["seed"] = "not a seed"
    return path


# name -> (builder, exit codes, whether `info` must refuse it too).  `info` describes any
# readable HDF5 file, so a file that is valid HDF5 but no patch file is not an error there.
PATCH_CASES: dict[str, tuple[Callable, tuple[int, ...], bool]] = {
    "empty file": (_text(b""), (2,), True),
    "not HDF5 (text)": (_text(b"rows,of,numbers\n0.1,0.2,0.3\n" * 20), (2,), True),
    "not HDF5 (.npy bytes)": (_text(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}" + bytes(200)), (2,), True),
    "truncated at 8 bytes": (_truncated(8), (1, 2), True),
    "truncated at 512 bytes": (_truncated(512), (1, 2), True),
    "truncated at 4 KiB": (_truncated(4096), (1, 2), True),
    "truncated at half": (_truncated(0.5), (1, 2), True),
    "truncated by one byte": (_truncated(0.99999), (1, 2), True),
    "rank 1": (_patches(GOOD.ravel()), (2,), True),
    "rank 3": (_patches(GOOD.reshape(300, 8, 8)), (2,), True),
    "scalar": (_scalar, (2,), True),
    "dtype int32": (_patches((GOOD * 100).astype(np.int32)), (2,), True),
    "dtype uint8": (_patches((GOOD * 255).astype(np.uint8)), (2,), True),
    "dtype complex64": (_patches(GOOD.astype(np.complex64)), (2,), True),
    "dtype bool": (_patches(GOOD > 0.5), (2,), True),
    "fixed strings": (_strings, (2,), True),
    "variable strings": (_vlen_strings, (2,), True),
    "compound": (_compound, (2,), True),
    "no /patches": (_no_patches, (2,), True),
    "/patches is a group": (_group_named_patches, (2,), True),
    "/patches links to a missing file": (_external_link, (1, 2), True),
    "zero rows": (_patches(np.zeros((0, 64), np.float32), chunk_rows=None), (2,), True),
    "zero columns": (_patches(np.zeros((300, 0), np.float32), chunk_rows=None), (2,), True),
}


def patch_cases(only_refused_by_info: bool = False) -> list:
    """The patch-file case names as pytest params."""
    return [case for case, (_, _, refused) in PATCH_CASES.items() if refused or not only_refused_by_info]


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return write_patch_file(tmp_path / "good.h5", GOOD, chunk_rows=64, patch_shape=(8, 8, 1))


def _build(case: str, tmp_path: Path, good: Path) -> Path:
    builder = PATCH_CASES[case][0]
    return builder(tmp_path, good)


@pytest.mark.parametrize("case", patch_cases())
def test_train_refuses_a_bad_patch_file(case, tmp_path, good_file, guard):
    bad = _build(case, tmp_path, good_file)
    result = invoke("train", bad, "-o", guard.path, "--force", "--max-iter", "2", "--hidden", "4")
    assert_clean_case(result, "train", PATCH_CASES[case][1], names=[bad])
    guard.assert_intact()


@pytest.mark.parametrize("case", patch_cases())
def test_encode_refuses_a_bad_patch_file(case, tmp_path, good_file, good_model, guard):
    bad = _build(case, tmp_path, good_file)
    result = invoke("encode", good_model, bad, "-o", guard.path, "--force")
    assert_clean_case(result, "encode", PATCH_CASES[case][1], names=[bad])
    guard.assert_intact()


@pytest.mark.parametrize("case", patch_cases())
def test_gradcheck_refuses_a_bad_patch_file(case, tmp_path, good_file):
    bad = _build(case, tmp_path, good_file)
    before = listing(tmp_path)
    result = invoke("gradcheck", "--data", bad, "--rows", "4", "--hidden", "2")
    assert_clean_case(result, "gradcheck", PATCH_CASES[case][1], names=[bad])
    assert listing(tmp_path) == before


@pytest.mark.parametrize("case", patch_cases(only_refused_by_info=True))
def test_info_refuses_a_broken_patch_file(case, tmp_path, good_file):
    bad = _build(case, tmp_path, good_file)
    result = invoke("info", bad)
    assert_clean_case(result, "info", PATCH_CASES[case][1], names=[bad])


def test_info_describes_an_hdf5_file_without_patches(tmp_path):
    """Not an error for `info`: it says what a foreign file holds and what streamae reads."""
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as handle:
        handle["data"] = GOOD
    result = invoke("info", path)
    assert result.exit_code == 0, result.output
    assert "/data" in result.stdout and "streamae reads patch files" in result.stdout


def test_wrongly_typed_attributes_are_ignored_not_fatal(tmp_path, good_file, guard):
    """Metadata of the wrong type must not stop a run on valid data (it is only metadata)."""
    path = _bad_attributes(tmp_path, good_file)
    info = invoke("info", path)
    assert info.exit_code == 0, info.output
    assert "internal error" not in info.output
    train = invoke("train", path, "-o", tmp_path / "m.h5", "--max-iter", "1", "--hidden", "3", "-q")
    assert train.exit_code == 0, train.output


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("chunks", [(64, 16), (7, 64), (1, 1), None])
def test_any_chunk_shape_trains_like_row_chunks(chunks, tmp_path, good_file):
    """Chunks that split rows (or none) are read correctly: the same model as row chunks."""
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as handle:
        handle.create_dataset("patches", data=GOOD, chunks=chunks)
        handle.attrs["format"] = "streamae.patches/1"
    args = ["--max-iter", "3", "--hidden", "4", "--dtype", "float64", "--chunk-rows", "64", "-q"]
    reference = invoke("train", good_file, "-o", tmp_path / "a.h5", *args)
    other = invoke("train", odd, "-o", tmp_path / "b.h5", *args)
    assert reference.exit_code == 0 and other.exit_code == 0, other.output
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a["W1"][()], b["W1"][()])
    encoded = invoke("encode", tmp_path / "b.h5", odd, "-o", tmp_path / "f.h5", "-q")
    assert encoded.exit_code == 0, encoded.output


# --------------------------------------------------------------------------- model files


def _drop(name: str):
    return lambda handle: handle.__delitem__(name)


def _replace(name: str, value):
    def edit(handle: h5py.File) -> None:
        del handle[name]
        handle[name] = value

    return edit


def _set_attribute(name: str, value):
    return lambda handle: handle.attrs.__setitem__(name, value)


MODEL_CASES: dict[str, tuple[Callable, tuple[int, ...]]] = {
    "missing /W1": (_drop("W1"), (2,)),
    "missing /b1": (_drop("b1"), (2,)),
    "missing /W2": (_drop("W2"), (2,)),
    "missing /b2": (_drop("b2"), (2,)),
    "/W2 of the wrong shape": (_replace("W2", np.zeros((64, 10))), (2,)),
    "/b1 of the wrong length": (_replace("b1", np.zeros(8)), (2,)),
    "/b2 of the wrong length": (_replace("b2", np.zeros(63)), (2,)),
    "/W1 one-dimensional": (_replace("W1", np.zeros(64 * 9)), (2,)),
    "/W1 three-dimensional": (_replace("W1", np.zeros((9, 8, 8))), (2,)),
    "/W1 empty": (_replace("W1", np.zeros((0, 64))), (2,)),
    "/W1 of strings": (_replace("W1", np.full((9, 64), b"x", dtype="S1")), (2,)),
    "/W1 compound": (_replace("W1", np.zeros((9, 64), dtype=[("a", "f8"), ("b", "f8")])), (2,)),
    "/W1 complex": (_replace("W1", np.zeros((9, 64), dtype=np.complex128)), (2,)),
    "/W1 holds NaN": (_replace("W1", np.full((9, 64), np.nan)), (2,)),
    "/W1 is a group": (lambda h: (h.__delitem__("W1"), h.create_group("W1")), (2,)),
    "format is a number": (_set_attribute("format", 7), (2,)),
    "format of another program": (_set_attribute("format", "other.model/3"), (2,)),
    "rho is text": (_set_attribute("rho", "small"), (2,)),
    "rho is an array": (_set_attribute("rho", np.array([0.1, 0.2])), (2,)),
    "rho out of range": (_set_attribute("rho", 7.0), (2,)),
    "decoder is a number": (_set_attribute("decoder", 5), (2,)),
    "hidden attribute disagrees": (_set_attribute("hidden", 1000), (0, 2)),
}


@pytest.fixture
def model_case(tmp_path: Path, good_model: Path):
    """Factory: the good model with one case's damage applied, as ``bad-model.h5``."""

    def make(case: str) -> Path:
        return edit_hdf5(tmp_path / "bad-model.h5", good_model, MODEL_CASES[case][0])

    return make


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_visualize_refuses_a_bad_model(case, model_case, tmp_path, guard):
    bad = model_case(case)
    result = invoke("visualize", bad, "-o", guard.path, "--force")
    if 0 in MODEL_CASES[case][1] and result.exit_code == 0:
        return  # a redundant attribute the weights contradict: the weights win
    assert_clean_case(result, "visualize", MODEL_CASES[case][1], names=[bad])
    guard.assert_intact()


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_encode_refuses_a_bad_model(case, model_case, good_patches, guard):
    bad = model_case(case)
    result = invoke("encode", bad, good_patches, "-o", guard.path, "--force")
    if 0 in MODEL_CASES[case][1] and result.exit_code == 0:
        return
    assert_clean_case(result, "encode", MODEL_CASES[case][1], names=[bad])
    guard.assert_intact()


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_info_refuses_or_describes_a_bad_model(case, model_case):
    bad = model_case(case)
    result = invoke("info", bad)
    if result.exit_code == 0 and case.startswith("format"):
        assert "not a streamae file" in result.stdout  # described as a foreign HDF5 file
        return
    if 0 in MODEL_CASES[case][1] and result.exit_code == 0:
        return
    assert_clean_case(result, "info", MODEL_CASES[case][1], names=[bad])


def test_model_n_differs_from_the_data_n(tmp_path, good_patches, guard):
    model = write_model(tmp_path / "m100.h5", n=100, s=4, patch_shape=(10, 10, 1))
    result = invoke("encode", model, good_patches, "-o", guard.path, "--force")
    assert_clean_case(result, "encode", 2, names=[model, good_patches], fragments=["100", "64"])
    guard.assert_intact()


def test_a_patch_file_given_as_the_model(good_patches, guard):
    result = invoke("encode", good_patches, good_patches, "-o", guard.path, "--force")
    assert_clean_case(result, "encode", 2, names=[good_patches], fragments=["patch file"])
    result = invoke("visualize", good_patches, "-o", guard.path, "--force")
    assert_clean_case(result, "visualize", 2, names=[good_patches], fragments=["patch file"])
    guard.assert_intact()


def test_a_model_given_as_the_data(good_model, guard):
    result = invoke("train", good_model, "-o", guard.path, "--force")
    assert_clean_case(result, "train", 2, names=[good_model], fragments=["model file"])
    guard.assert_intact()


def test_history_and_rho_hat_of_the_wrong_shape(tmp_path, good_model, guard):
    """Plots of a model whose side datasets are damaged: refused with a message, not a crash."""

    def damage(handle: h5py.File) -> None:
        del handle["history/cost"]
        handle["history/cost"] = np.zeros((3, 2))
        del handle["rho_hat"]
        handle["rho_hat"] = np.array([b"a", b"b"])

    bad = edit_hdf5(tmp_path / "bad-model.h5", good_model, damage)
    curves = invoke("visualize", bad, "--curves", guard.path, "--force")
    assert_clean_case(curves, "visualize", (1, 2), names=[bad])
    activations = invoke("visualize", bad, "--activations", guard.path, "--force")
    assert_clean_case(activations, "visualize", (1, 2), names=[bad])
    guard.assert_intact()
