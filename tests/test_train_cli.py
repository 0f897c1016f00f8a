"""`streamae train` and `streamae gradcheck` as a user types them, bad input included."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from streamae.cli.main import cli
from streamae.io.modelfile import load_model


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result


def assert_clean_failure(result, code: int, *fragments: str) -> None:
    """Exit code, one plain message naming what is wrong, and no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().endswith(errors[0]), "the error is the last thing said"
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def good_file(patch_file, unit_patches):
    return patch_file(unit_patches, patch_shape=(8, 8, 1))


def test_train_writes_the_model_file_as_designed(good_file, tmp_path):
    out = tmp_path / "model.h5"
    log = tmp_path / "log.jsonl"
    result = run(
        "train", str(good_file), "-o", str(out), "--max-iter", "5", "--hidden", "9", "--log", str(log)
    )
    assert result.exit_code == 0, result.output
    with h5py.File(out) as handle:
        assert handle.attrs["format"] == "streamae.model/1"
        assert handle["W1"].shape == (9, 64) and handle["W2"].shape == (64, 9)
        assert handle["b1"].shape == (9,) and handle["b2"].shape == (64,)
        assert all(handle[name].dtype == np.float64 for name in ("W1", "W2", "b1", "b2"))
        assert list(handle.attrs["patch_shape"]) == [8, 8, 1]
        assert handle.attrs["hidden"] == 9 and handle.attrs["lambda"] == 1e-4
        assert handle.attrs["iterations"] == 5
        assert json.loads(handle.attrs["data"])["shape"] == [1000, 64]
        for name in (
            "cost",
            "reconstruction",
            "weight_decay",
            "sparsity",
            "grad_norm",
            "seconds",
            "evaluations",
        ):
            assert handle["history"][name].shape == (5,)
        assert handle["rho_hat"].shape == (9,)
        assert "optimizer" not in handle  # a finished model drops the L-BFGS state
    header, *records = [json.loads(line) for line in log.read_text().splitlines()]
    assert header["event"] == "start"
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5]
    model = load_model(out)
    # The history's cost is the sum of its terms, and decreases.
    history = model.history
    np.testing.assert_allclose(
        history["cost"], history["reconstruction"] + history["weight_decay"] + history["sparsity"]
    )
    assert np.all(np.diff(history["cost"]) < 0)
    # Plain lines (not a terminal): one per iteration, J with its terms, |g| and rho_hat.
    assert result.output.count("iter ") == 5 and "rho_hat" in result.output


def test_quiet_prints_only_the_summary(good_file, tmp_path):
    result = run("train", str(good_file), "-o", str(tmp_path / "m.h5"), "--max-iter", "2", "--quiet")
    assert result.exit_code == 0
    assert "iter " not in result.output and "finished after 2 iterations" in result.output


def test_missing_file(tmp_path):
    result = run("train", str(tmp_path / "nothing.h5"), "-o", str(tmp_path / "m.h5"))
    assert_clean_failure(result, 2, "nothing.h5", "no such file")
    assert not (tmp_path / "m.h5").exists()


def test_no_patches_dataset_lists_what_is_there(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["images"] = np.zeros((3, 4))
        handle["labels/y"] = np.zeros(3)
    result = run("train", str(path), "-o", str(tmp_path / "m.h5"))
    assert_clean_failure(result, 2, "other.h5", "no /patches", "/images", "/labels/y")


def test_dataset_that_is_not_2d(patch_file, tmp_path):
    path = patch_file(np.zeros((10, 8, 8), dtype=np.float32), chunk_rows=None)
    assert_clean_failure(
        run("train", str(path), "-o", str(tmp_path / "m.h5")), 2, "(10, 8, 8)", "not (rows, features)"
    )


def test_integer_dtype(patch_file, tmp_path):
    path = patch_file(np.zeros((10, 64), dtype=np.uint8))
    assert_clean_failure(
        run("train", str(path), "-o", str(tmp_path / "m.h5")), 2, "uint8", "not float32 or float64"
    )


@pytest.mark.parametrize("bad_row", [0, 777, 999])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_first_bad_row(patch_file, unit_patches, tmp_path, bad_row, bad_value):
    data = unit_patches.copy()
    data[bad_row, 5] = bad_value
    path = patch_file(data, chunk_rows=100)
    out = tmp_path / "m.h5"
    result = run("train", str(path), "-o", str(out))
    assert_clean_failure(result, 1, f"row {bad_row} holds NaN or Inf")
    assert not out.exists()


def test_values_outside_unit_interval_with_sigmoid(patch_file, rng, tmp_path):
    path = patch_file(rng.normal(size=(300, 16)).astype(np.float32))
    result = run("train", str(path), "-o", str(tmp_path / "m.h5"))
    assert_clean_failure(result, 1, "outside the sigmoid decoder's range", "--normalize", "--decoder linear")
    assert (
        run(
            "train", str(path), "-o", str(tmp_path / "m.h5"), "--decoder", "linear", "--max-iter", "2"
        ).exit_code
        == 0
    )


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--hidden", "0", "--hidden must be a whole number of at least 1"),
        ("--rho", "0", "--rho must lie strictly between 0 and 1"),
        ("--rho", "1", "--rho must lie strictly between 0 and 1"),
        ("--rho", "-0.5", "--rho must lie strictly between 0 and 1"),
        ("--beta", "-1", "--beta must be a finite number >= 0"),
        ("--lambda", "-1e-4", "--lambda must be a finite number >= 0"),
        ("--lambda", "nan", "--lambda must be a finite number >= 0"),
        ("--max-iter", "-1", "--max-iter must be at least 0"),
        ("--chunk-rows", "0", "--chunk-rows must be at least 1"),
        ("--threads", "0", "--threads must be at least 1"),
    ],
)
def test_bad_option_values(good_file, tmp_path, option, value, fragment):
    out = tmp_path / "m.h5"
    result = run("train", str(good_file), "-o", str(out), option, value)
    assert_clean_failure(result, 2, fragment)
    assert not out.exists()


def test_existing_output_needs_force(good_file, tmp_path):
    out = tmp_path / "m.h5"
    out.write_bytes(b"precious")
    result = run("train", str(good_file), "-o", str(out), "--max-iter", "1")
    assert_clean_failure(result, 2, "exists", "--force")
    assert out.read_bytes() == b"precious"
    assert run("train", str(good_file), "-o", str(out), "--max-iter", "1", "--force").exit_code == 0
    assert load_model(out).iterations == 1


def test_output_equal_to_input_is_refused(good_file):
    before = good_file.read_bytes()
    result = run("train", str(good_file), "-o", str(good_file), "--force")
    assert_clean_failure(result, 2, "would overwrite the input")
    assert good_file.read_bytes() == before


def test_debug_shows_the_traceback(tmp_path):
    result = run("train", str(tmp_path / "nothing.h5"), "--debug")
    assert result.exit_code != 0
    assert isinstance(result.exception, FileNotFoundError)


def test_no_temporary_files_are_left_after_a_failure(patch_file, unit_patches, tmp_path):
    data = unit_patches.copy()
    data[-1, -1] = np.nan
    path = patch_file(data)
    run("train", str(path), "-o", str(tmp_path / "m.h5"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patches.h5"]


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("block_rows", ["1", "7", "9", "100"])
def test_gradcheck_passes_for_both_decoders_and_block_sizes(decoder, block_rows):
    # 20 rows: blocks of 1, 7 and 9 (which do not divide 20) and 100 (larger than m).
    result = run("gradcheck", "--decoder", decoder, "--block-rows", block_rows, "--rows", "20")
    assert result.exit_code == 0, result.output
    difference = float(result.output.split("relative difference:")[1].split()[0])
    assert difference < 1e-9


def test_gradcheck_on_a_data_file(good_file):
    result = run("gradcheck", "--data", str(good_file), "--rows", "12", "--hidden", "4", "--block-rows", "5")
    assert result.exit_code == 0, result.output


def test_gradcheck_fails_loudly_with_a_huge_epsilon():
    # A central difference with epsilon = 1 is far off: the check must say so and exit 1.
    result = run("gradcheck", "--epsilon", "1.0")
    assert result.exit_code == 1
    assert "gradient check failed" in result.output


def test_installed_console_script_runs():
    executable = shutil.which("streamae") or str(
        __import__("pathlib").Path(sys.executable).with_name("streamae")
    )
    completed = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    assert "train" in completed.stdout and "Exit codes" in completed.stdout
    # The front end installs as streamae.cli, never as a bare top-level `cli` module.
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('cli') is None)"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert probe.stdout.strip() == "True"
