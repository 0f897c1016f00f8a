"""--dataset: any 2-D floating dataset of any HDF5 file trains, encodes, checks and describes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import streamae
from streamae.cli.main import cli
from streamae.errors import InputFileError, UsageError
from streamae.io.patchfile import PatchFile, inspect_patch_file


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def several(tmp_path, rng):
    """A file with several datasets, one nested in groups, none of them /patches."""
    path = tmp_path / "features.h5"
    embeddings = rng.uniform(0.05, 0.95, size=(300, 12))
    nested = rng.uniform(0.05, 0.95, size=(200, 10)).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("embeddings", data=embeddings, chunks=(64, 12))
        handle.create_dataset("runs/first/X", data=nested, chunks=(50, 10))
        handle.create_dataset("cube", data=np.zeros((4, 5, 6), dtype=np.float32))
        handle.create_dataset("labels", data=np.arange(300, dtype=np.int64).reshape(300, 1))
    return path, embeddings, nested


def test_layout_of_a_nested_dataset(several):
    path, _, nested = several
    layout = inspect_patch_file(path, "/runs/first/X")
    assert (layout.n_rows, layout.n_features, layout.dataset) == (200, 10, "/runs/first/X")
    assert layout.fingerprint["dataset"] == "/runs/first/X"
    with PatchFile(path, dataset="/runs/first/X", block_rows=64) as source:
        rows = np.concatenate([block.copy() for _, block in source.blocks()])
    np.testing.assert_array_equal(rows, nested)


def test_objective_on_a_dataset_equals_the_array(several):
    path, embeddings, _ = several
    on_file = streamae.objective(path, hidden=4, dtype="float64", dataset="embeddings")
    in_memory = streamae.objective(embeddings, hidden=4, dtype="float64")
    assert on_file.cost == pytest.approx(in_memory.cost, rel=1e-12)
    np.testing.assert_allclose(on_file.gradient, in_memory.gradient, rtol=1e-12, atol=1e-15)


def test_missing_dataset_names_it_and_lists_the_others(several):
    path, _, _ = several
    with pytest.raises(InputFileError) as caught:
        inspect_patch_file(path, "/nothing")
    text = str(caught.value)
    assert "no /nothing dataset" in text and "/embeddings" in text and "/runs/first/X" in text
    assert "dataset=" in text  # the library names the parameter; the CLI says --dataset


def test_three_dimensional_dataset_is_refused_with_its_shape(several):
    path, _, _ = several
    with pytest.raises(InputFileError, match=r"/cube has shape \(4, 5, 6\), not \(rows, features\)"):
        inspect_patch_file(path, "/cube")


def test_integer_dataset_is_refused_naming_it(several):
    path, _, _ = several
    with pytest.raises(InputFileError, match="/labels holds int64 values"):
        inspect_patch_file(path, "/labels")


def test_a_group_is_not_a_dataset(several):
    path, _, _ = several
    with pytest.raises(InputFileError, match="/runs/first is a group"):
        inspect_patch_file(path, "/runs/first")


def test_empty_dataset_name_names_the_parameter(several):
    path, _, _ = several
    with pytest.raises(UsageError) as caught:
        streamae.objective(path, dataset="/")
    assert caught.value.parameter == "dataset"


def test_train_cli_on_a_nested_dataset(several, tmp_path):
    path, _, _ = several
    out = tmp_path / "model.h5"
    result = run("train", str(path), "--dataset", "/runs/first/X", "-o", str(out), "--max-iter", "3", "-q")
    assert result.exit_code == 0, result.output
    with h5py.File(out) as handle:
        assert handle["W1"].shape == (25, 10)
        assert json.loads(handle.attrs["data"])["dataset"] == "/runs/first/X"


def test_train_cli_missing_dataset_is_one_sentence(several, tmp_path):
    path, _, _ = several
    line = one_error_line(run("train", str(path), "--dataset", "/X", "-o", str(tmp_path / "m.h5")), 2)
    assert "no /X dataset" in line and str(path) in line


def test_train_cli_three_dimensional_dataset(several, tmp_path):
    path, _, _ = several
    line = one_error_line(run("train", str(path), "--dataset", "cube", "-o", str(tmp_path / "m.h5")), 2)
    assert "/cube has shape (4, 5, 6)" in line


def test_out_of_range_values_name_the_dataset(tmp_path, rng):
    path = tmp_path / "wide.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("X", data=rng.normal(size=(50, 6)))
    line = one_error_line(run("train", str(path), "--dataset", "/X", "-o", str(tmp_path / "m.h5")), 1)
    assert "/X holds values in" in line and "--decoder linear" in line


def test_encode_info_and_gradcheck_take_the_dataset(several, tmp_path):
    path, embeddings, _ = several
    model = tmp_path / "model.h5"
    assert (
        run(
            "train", str(path), "--dataset", "embeddings", "-o", str(model), "--max-iter", "2", "-q"
        ).exit_code
        == 0
    )
    features = tmp_path / "features_out.h5"
    result = run("encode", str(model), str(path), "-o", str(features), "--dataset", "embeddings", "-q")
    assert result.exit_code == 0, result.output
    trained = streamae.load_model(model)
    with h5py.File(features) as handle:
        a2 = handle["features"][()]
    expected = 1.0 / (1.0 + np.exp(-(embeddings @ trained.W1.T + trained.b1)))
    np.testing.assert_allclose(a2, expected, rtol=1e-5, atol=1e-6)

    described = run("info", str(path), "--dataset", "/runs/first/X", "--json")
    assert described.exit_code == 0, described.output
    info = json.loads(described.stdout)
    assert info["kind"] == "patches" and info["dataset"] == "/runs/first/X" and info["shape"] == [200, 10]
    text = run("info", str(path), "--dataset", "/runs/first/X")
    assert "/runs/first/X" in text.stdout and "200 rows of 10 values" in text.stdout

    checked = run("gradcheck", "--data", str(path), "--dataset", "embeddings", "--rows", "9", "--hidden", "3")
    assert checked.exit_code == 0, checked.output
    assert float(checked.stdout.split(":")[1]) < 1e-9
