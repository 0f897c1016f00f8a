"""Every numeric option at its bound (accepted) and just past it (refused with exit code 2).

A value at a bound must run to the end; a value past it must stop before any work with one
line naming the option, and leave the pre-existing output untouched.  NaN and infinity are
"past the bound" of every float option: no option means anything at either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, write_patch_file
from PIL import Image

from .faultkit import assert_clean_case

ACCEPTED, REFUSED = 0, 2


def _cases() -> list[tuple[str, str, str, int]]:
    """(command, option, value, expected exit code) for every numeric option."""
    cases = []

    def add(command: str, option: str, accepted: list[str], refused: list[str]) -> None:
        cases.extend((command, option, value, ACCEPTED) for value in accepted)
        cases.extend((command, option, value, REFUSED) for value in refused)

    add("train", "--hidden", ["1"], ["0", "-3"])
    add("train", "--rho", ["1e-6", "0.999"], ["0", "1", "-0.1", "nan", "inf"])
    add("train", "--beta", ["0"], ["-1e-9", "nan", "inf"])
    add("train", "--lambda", ["0"], ["-1e-9", "nan", "inf"])
    add("train", "--max-iter", ["0"], ["-1"])
    add("train", "--chunk-rows", ["1", "1000000000"], ["0", "-1"])
    add("train", "--threads", ["1", "4096"], ["0", "-2"])
    add("train", "--seed", ["0", str(2**64)], ["-1"])
    add("train", "--grad-tol", ["0"], ["-1", "nan"])
    add("train", "--progress-tol", ["0"], ["-1", "nan"])
    # The relative-progress stop (issue 24): a fraction of J in [0, 1), a window of iterations.
    add("train", "--tolerance", ["0", "0.999"], ["-1e-9", "1", "2", "nan", "inf"])
    add("train", "--tolerance-window", ["1", "10000"], ["0", "-1", "10001"])
    add("train", "--checkpoint-every", ["0", "1"], ["-1"])
    add("train", "--checkpoint-minutes", ["0.001"], ["0", "-1", "nan", "inf"])
    add("train", "--validation-fraction", ["0.001", "0.999"], ["0", "1", "-0.1", "nan", "inf"])
    add("train", "--early-stop-min-improvement", ["0", "0.999"], ["1", "-1e-9", "nan", "inf"])
    add("extract", "--patch-size", ["1", "16", "16x1"], ["0", "17", "-1", "8x0", "eight"])
    add("extract", "--num-patches", ["1"], ["0", "-1"])
    add("extract", "--stride", ["1", "16"], ["0", "-1"])
    add("extract", "--zca-epsilon", ["1e-12"], ["0", "-1", "nan", "inf"])
    add("extract", "--seed", ["0", str(2**63 - 1)], ["-1", str(2**63)])
    add("extract", "--chunk-rows", ["1", "1000000000"], ["0", "-1"])
    add("extract", "--raw-shape", ["1", "16x16", "512x512"], ["0", "-1", "8x0", "axb", "8x8x8"])
    add("extract", "--raw-dtype", ["float32-be", "uint8"], ["float32", "f4", ">f4", ""])
    add("encode", "--block-rows", ["1", "1000000000"], ["0", "-1"])
    add("visualize", "--cols", ["1", "1000"], ["0", "-1"])
    add("visualize", "--scale", ["1", "64"], ["0", "65"])
    add("visualize", "--patch-shape", ["8x8", "4x16", "64x1x1"], ["0x8", "8x8x3", "8", "axb"])
    add("gradcheck", "--rows", ["1"], ["0", "-1"])
    add("gradcheck", "--hidden", ["1"], ["0"])
    add("gradcheck", "--visible", ["1"], ["0"])
    add("gradcheck", "--block-rows", ["1", "1000"], ["0", "-1"])
    add("gradcheck", "--epsilon", ["1e-5"], ["0", "-1e-4", "nan", "inf"])
    return cases


def _param(case: tuple[str, str, str, int]):
    command, option, value, code = case
    return pytest.param(*case, id=f"{command} {option} {value}")


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    """A 16x16 gray image: grids over it are small whatever the stride."""
    path = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
    return path


def _arguments(command: str, option: str, value: str, paths: dict[str, Path]) -> list[object]:
    """The command line of one case: the option on a small, fast, otherwise valid run."""
    out = paths["out"]
    if command == "train":
        base = ["train", paths["patches"], "-o", out, "--force", "--hidden", "3", "-q"]
        if option == "--early-stop-min-improvement":
            base += ["--validation-fraction", "0.3", "--early-stop", "2"]
        return base + ([] if option == "--max-iter" else ["--max-iter", "1"]) + [option, value]
    if command == "extract":
        base = ["extract", paths["image"], "-o", out, "--force", "-q", option, value]
        if option not in ("--num-patches", "--stride"):
            base += ["--num-patches", "20"]
        if option == "--zca-epsilon":
            base += ["--normalize", "zca"]
        if option == "--stride":
            base += ["--patch-size", "4"]
        return base
    if command == "encode":
        return ["encode", paths["model"], paths["patches"], "-o", out, "--force", "-q", option, value]
    if command == "visualize":
        return ["visualize", paths["model"], "-o", out.with_suffix(".png"), "--force", option, value]
    return ["gradcheck", "--rows", "6", "--hidden", "2", "--visible", "4", option, value]


@pytest.mark.parametrize(("command", "option", "value", "code"), [_param(case) for case in _cases()])
def test_numeric_option_bounds(command, option, value, code, tmp_path, good_patches, good_model, small_image):
    out = tmp_path / "out.h5"
    paths = {"out": out, "patches": good_patches, "model": good_model, "image": small_image}
    target = out.with_suffix(".png") if command == "visualize" else out
    previous = b"previous output"
    target.write_bytes(previous)
    result = invoke(*_arguments(command, option, value, paths))
    if code == ACCEPTED:
        assert result.exit_code == 0, result.output
        assert "Error" not in result.stderr
        if command != "gradcheck":
            assert target.read_bytes() != previous  # the run wrote its output
        return
    assert_clean_case(result, command, REFUSED, names=[option], fragments=[])
    assert target.read_bytes() == previous


def test_train_refuses_a_log_path_that_is_the_data(tmp_path, good_patches):
    before = good_patches.read_bytes()
    result = invoke("train", good_patches, "-o", tmp_path / "m.h5", "--log", good_patches, "--max-iter", "1")
    assert_clean_case(result, "train", 2, names=[good_patches])
    assert good_patches.read_bytes() == before


def test_write_patches_helper_is_valid(tmp_path):
    """The helper the option cases rely on writes a file train accepts (a guard on the guard)."""
    data = np.random.default_rng(0).uniform(0.2, 0.8, (10, 4)).astype(np.float32)
    path = write_patch_file(tmp_path / "p.h5", data, patch_shape=(2, 2, 1))
    result = invoke("train", path, "-o", tmp_path / "m.h5", "--max-iter", "1", "--hidden", "2", "-q")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["info", "--host", "{file}"], "not both"),
        (["info"], "--host"),
        (["info", "--json"], "--host"),
    ],
    ids=["a file and --host", "neither", "--json alone"],
)
def test_info_host_takes_no_file_and_info_needs_one_or_the_other(args, fragment, good_patches):
    result = invoke(*[str(good_patches) if a == "{file}" else a for a in args])
    message = assert_clean_case(result, "info", 2, fragments=[fragment])
    if "{file}" in args:
        assert good_patches.name in message


@pytest.mark.parametrize("value", ["float64", "half", "", "FLOAT16 ", "float16;rm"])
def test_extract_refuses_a_storage_type_it_does_not_write(value, tmp_path, small_image):
    out = tmp_path / "out.h5"
    out.write_bytes(b"previous output")
    result = invoke("extract", small_image, "-o", out, "--force", "-q", "--storage", value)
    assert_clean_case(result, "extract", REFUSED, names=["--storage"], fragments=[])
    assert out.read_bytes() == b"previous output"


def test_float16_patches_train_encode_and_describe(tmp_path, small_image):
    """--storage float16 writes half the bytes; every reader takes it (issue 24)."""
    patches, model = tmp_path / "half.h5", tmp_path / "m.h5"
    done = invoke("extract", small_image, "-o", patches, "-q", "--patch-size", "4", "--storage", "float16")
    assert done.exit_code == 0, done.output
    import h5py

    with h5py.File(patches) as handle:
        assert handle["patches"].dtype == np.float16
    trained = invoke("train", patches, "-o", model, "--hidden", "3", "--max-iter", "2", "-q")
    assert trained.exit_code == 0, trained.output
    encoded = invoke("encode", model, patches, "-o", tmp_path / "f.h5")
    assert encoded.exit_code == 0, encoded.output
    described = invoke("info", patches)
    assert described.exit_code == 0 and "float16" in described.output
