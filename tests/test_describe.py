"""`streamae info` and streamae.describe: patch, model, features and plain HDF5 files."""

from __future__ import annotations

import json

import click
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import invoke

from streamae.encoding import encode
from streamae.io.modelfile import HISTORY_FIELDS


@pytest.fixture
def extracted(tmp_path, rng):
    """A patch file with the attributes `streamae extract` writes, gzip-compressed, with ZCA arrays."""
    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            "patches",
            data=rng.uniform(size=(300, 48)).astype(np.float32),
            chunks=(100, 48),
            compression="gzip",
        )
        handle.create_dataset("zca/mean", data=np.zeros(48))
        handle.create_dataset("zca/matrix", data=np.eye(48))
        handle.attrs["format"] = "streamae.patches/1"
        handle.attrs["patch_shape"] = np.array([4, 4, 3], dtype=np.int64)
        handle.attrs["normalization"] = json.dumps({"mode": "zca", "epsilon": 0.1})
        handle.attrs["seed"] = 7
        handle.attrs["sources"] = json.dumps(["a.png", "b.png"])
        handle.attrs["sampling"] = json.dumps({"mode": "random", "num_patches": 300})
        handle.attrs["color"] = "rgb"
        handle.attrs["images"] = 2
        handle.attrs["streamae_version"] = "0.1.0"
    return path


def test_patch_file_as_json(extracted):
    result = invoke("info", extracted, "--json")
    assert result.exit_code == 0
    described = json.loads(result.output)
    assert described["kind"] == "patches"
    assert described["shape"] == [300, 48] and described["dtype"] == "float32"
    assert described["chunks"] == [100, 48]
    assert described["compression"] == "gzip"
    assert described["patch_shape"] == [4, 4, 3]
    assert described["normalization"] == {"mode": "zca", "epsilon": 0.1}
    assert described["seed"] == 7
    assert described["sources"] == ["a.png", "b.png"]
    assert described["sampling"] == {"mode": "random", "num_patches": 300}
    assert [entry["name"] for entry in described["other_datasets"]] == ["/zca/matrix", "/zca/mean"]


def test_patch_file_as_text(extracted):
    result = invoke("info", extracted)
    assert result.exit_code == 0
    text = result.output
    assert text.startswith(f"{extracted}: streamae patch file")
    for fragment in (
        "300 rows of 48 values, float32",
        "chunks of 100x48, gzip",
        "4x4x3",
        "zca (epsilon=0.1)",
        "seed:             7",
        "2: a.png, b.png",
        "/zca/matrix 48x48 float64",
    ):
        assert fragment in text, fragment


def test_minimal_patch_file(patch_file, unit_patches):
    path = patch_file(unit_patches, chunk_rows=None)
    described = json.loads(invoke("info", path, "--json").output)
    assert described["kind"] == "patches" and described["chunks"] is None and described["seed"] is None
    text = invoke("info", path).output
    assert "contiguous (not chunked), no compression" in text and "not recorded" in text


@pytest.fixture
def trained(model_file, rng):
    """A model file with a 5-iteration history, rho_hat and hyperparameters."""
    history = {name: np.linspace(2.0, 1.0, 5) * (index + 1) for index, name in enumerate(HISTORY_FIELDS)}
    return model_file(
        rng.normal(size=(6, 16)),
        patch_shape=(4, 4, 1),
        rho=0.05,
        beta=2.0,
        history=history,
        rho_hat=np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.15]),
    )


def test_model_file_as_json(trained):
    result = invoke("info", trained, "--json")
    assert result.exit_code == 0
    described = json.loads(result.output)
    assert described["kind"] == "model"
    assert (described["inputs"], described["hidden"], described["iterations"]) == (16, 6, 5)
    assert described["hyperparameters"] == {
        "hidden": 6,
        "rho": 0.05,
        "beta": 2.0,
        "lambda": 1e-4,
        "decoder": "sigmoid",
        "activation": "sigmoid",
    }
    # The final entries of the history: cost 1.0, reconstruction 2.0, weight decay 3.0, sparsity 4.0.
    assert described["final"] == {
        "cost": 1.0,
        "reconstruction": 2.0,
        "weight_decay": 3.0,
        "sparsity": 4.0,
        "grad_norm": 5.0,
    }
    assert described["rho_hat"]["mean"] == pytest.approx(0.05)
    assert described["rho_hat"]["max"] == pytest.approx(0.15)
    assert described["data"] == {"path": "planted", "shape": [0, 16], "dtype": "float32"}
    assert described["patch_shape"] == [4, 4, 1]


def test_model_file_as_text(trained):
    text = invoke("info", trained).output
    assert text.startswith(f"{trained}: streamae model file")
    for fragment in (
        "16 inputs -> 6 hidden (sigmoid decoder)",
        "rho=0.05, beta=2, lambda=0.0001",
        "iterations:       5",
        "final J:          1 = reconstruction 2 + weight decay 3 + sparsity 4",
        "mean rho_hat:     0.05",
        "trained on:       planted",
    ):
        assert fragment in text, fragment


def test_tanh_model_file_as_text(model_file, rng):
    path = model_file(
        rng.normal(size=(6, 16)),
        rho=0.05,
        activation="tanh",
        rho_hat=np.array([-0.9, -0.8, 0.1, -0.7, -0.6, -0.5]),
    )
    text = invoke("info", path).output
    assert "16 inputs -> 6 tanh hidden (sigmoid decoder)" in text
    assert "mean rho_hat:     -0.5667 (min -0.9, max 0.1, target -0.9 = 2 rho - 1)" in text


def test_features_file(tmp_path, trained, patch_file, rng):
    data = patch_file(rng.uniform(size=(50, 16)).astype(np.float32), chunk_rows=20)
    output = tmp_path / "features.h5"
    encode(trained, data, output, reconstruct=True)
    described = json.loads(invoke("info", output, "--json").output)
    assert described["kind"] == "features"
    assert described["datasets"]["features"]["shape"] == [50, 6]
    assert described["datasets"]["reconstruction"]["chunks"] == [20, 16]
    assert described["model"]["path"] == str(trained.resolve())
    assert described["data"]["shape"] == [50, 16]
    assert "streamae features file" in invoke("info", output).output


def test_plain_hdf5_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("images/train", data=np.zeros((3, 4), dtype=np.uint8))
        handle.create_dataset("labels", data=np.zeros(3, dtype=np.int64))
    described = json.loads(invoke("info", path, "--json").output)
    assert described["kind"] == "hdf5"
    assert described["datasets"] == [
        {"name": "/images/train", "shape": [3, 4], "dtype": "uint8"},
        {"name": "/labels", "shape": [3], "dtype": "int64"},
    ]
    text = invoke("info", path).output
    assert "HDF5 file, not a streamae file" in text
    assert "/images/train  3x4 uint8" in text and "/labels  3 int64" in text


@pytest.mark.parametrize("content", [None, b"", b"not hdf5 at all"])
def test_missing_empty_or_foreign_file_is_a_usage_error(tmp_path, content):
    path = tmp_path / "file.h5"
    if content is not None:
        path.write_bytes(content)
    result = invoke("info", path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}")


def test_damaged_model_file_names_the_missing_dataset(trained):
    with h5py.File(trained, "a") as handle:
        del handle["W1"]
    result = invoke("info", trained, "--json")
    assert result.exit_code == 2
    assert "/W1" in result.output and result.output.count("\n") == 1


@pytest.mark.parametrize("command", ["visualize", "encode", "info"])
def test_commands_are_registered_and_document_every_option(command):
    from streamae.cli.main import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    options = [param for param in cli.commands[command].params if isinstance(param, click.Option)]
    assert options and all(option.help for option in options)
