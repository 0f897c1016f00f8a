"""`streamae encode` and streamae.encode: streamed features against dense NumPy, memory, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from helpers import assert_clean_failure, invoke, write_large_patch_file
from naive import hidden_layer

from streamae.describe import FEATURES_FORMAT as INSPECT_FEATURES_FORMAT
from streamae.encoding import FEATURES_FORMAT, encode


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def dense_a2(X: np.ndarray, W1: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """The slow twin: a2 = sigmoid(X W1ᵀ + b1) for all rows at once, in float64."""
    return sigmoid(X.astype(np.float64) @ W1.T + b1)


@pytest.fixture
def planted(tmp_path, rng, model_file, patch_file):
    """A random 64 -> 25 model with nonzero biases, and 1000 rows chunked by 128."""
    s, n = 25, 64
    weights = {
        "W1": rng.normal(0.0, 0.3, size=(s, n)),
        "W2": rng.normal(0.0, 0.3, size=(n, s)),
        "b1": rng.normal(0.0, 0.5, size=s),
        "b2": rng.normal(0.0, 0.5, size=n),
    }
    model = model_file(
        weights["W1"], W2=weights["W2"], b1=weights["b1"], b2=weights["b2"], patch_shape=(8, 8, 1)
    )
    X = rng.uniform(0.0, 1.0, size=(1000, n)).astype(np.float32)
    data = patch_file(X, chunk_rows=128, patch_shape=(8, 8, 1))
    return model, data, X, weights


@pytest.mark.parametrize("block_rows", [None, 1, 7, 128, 333, 1000, 5000])
def test_features_equal_dense_numpy_for_any_block_size(tmp_path, planted, block_rows):
    model, data, X, weights = planted
    output = tmp_path / "features.h5"
    result = encode(model, data, output, block_rows=block_rows)
    expected = dense_a2(X, weights["W1"], weights["b1"])
    with h5py.File(output, "r") as handle:
        features = handle["features"]
        assert features.shape == (1000, 25) and features.dtype == np.float32
        assert features.chunks == (128, 25)  # chunked like the input
        np.testing.assert_allclose(features[()], expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(handle["mean_activation"][()], expected.mean(axis=0), rtol=0, atol=1e-6)
        assert "reconstruction" not in handle
    np.testing.assert_allclose(result.mean_activation, expected.mean(axis=0), rtol=0, atol=1e-6)
    assert result.reconstruction is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("block_rows", [None, 7, 300])
def test_tanh_model_encodes_like_the_dense_twin(
    tmp_path, rng, model_file, patch_file, dtype, decoder, block_rows
):
    s, n = 9, 16
    W1, W2 = rng.normal(size=(s, n)), rng.normal(size=(n, s))
    b1, b2 = rng.normal(size=s), rng.normal(size=n)
    model = model_file(W1, W2=W2, b1=b1, b2=b2, decoder=decoder, activation="tanh")
    X = rng.uniform(size=(700, n))
    data = patch_file(X, chunk_rows=100)
    output = tmp_path / "features.h5"
    result = encode(model, data, output, reconstruct=True, dtype=dtype, block_rows=block_rows)
    # The twin reads the rows as the encoder does: rounded to the compute dtype.
    rows = X.astype(dtype)
    a2 = hidden_layer(rows, W1, b1, "tanh")
    z3 = a2 @ W2.T + b2
    a3 = z3 if decoder == "linear" else sigmoid(z3)
    tolerance = 1e-12 if dtype == "float64" else 1e-5
    with h5py.File(output, "r") as handle:
        np.testing.assert_allclose(handle["features"][()], a2, rtol=0, atol=tolerance)
        assert handle["features"][()].min() < -0.5  # tanh units, not sigmoid ones
        np.testing.assert_allclose(handle["reconstruction"][()], a3, rtol=0, atol=100 * tolerance)
        assert json.loads(handle.attrs["model"])["activation"] == "tanh"
    np.testing.assert_allclose(result.mean_activation, a2.mean(axis=0), rtol=0, atol=tolerance)
    assert result.reconstruction == pytest.approx(0.5 * np.sum((a3 - rows) ** 2) / 700, rel=1e-4)


def test_encode_refuses_an_activation_other_than_the_models(tmp_path, rng, model_file, patch_file):
    model = model_file(rng.normal(size=(4, 16)), activation="tanh")
    data = patch_file(rng.uniform(size=(50, 16)))
    output = tmp_path / "features.h5"
    result = invoke("encode", model, data, "-o", output, "--activation", "sigmoid")
    assert result.exit_code == 2, result.output
    assert f"Error: {model} was trained with tanh hidden units, not sigmoid;" in result.stderr
    assert not output.exists()
    assert invoke("encode", model, data, "-o", output, "--activation", "tanh", "-q").exit_code == 0


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
@pytest.mark.parametrize("block_rows", [None, 50, 300])
def test_reconstruction_in_float64_equals_dense_numpy(
    tmp_path, rng, model_file, patch_file, decoder, block_rows
):
    s, n = 9, 16
    W1, W2 = rng.normal(size=(s, n)), rng.normal(size=(n, s))
    b1, b2 = rng.normal(size=s), rng.normal(size=n)
    model = model_file(W1, W2=W2, b1=b1, b2=b2, decoder=decoder)
    X = rng.uniform(size=(700, n))
    data = patch_file(X, chunk_rows=None)  # contiguous input: chunked by the block size
    output = tmp_path / "features.h5"
    result = encode(model, data, output, reconstruct=True, dtype="float64", block_rows=block_rows)
    a2 = dense_a2(X, W1, b1)
    z3 = a2 @ W2.T + b2
    a3 = z3 if decoder == "linear" else sigmoid(z3)
    with h5py.File(output, "r") as handle:
        assert handle["features"].dtype == np.float64
        np.testing.assert_allclose(handle["features"][()], a2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(handle["reconstruction"][()], a3, rtol=1e-12, atol=1e-14)
        assert handle["reconstruction"].chunks[1] == n
        stored_error = handle.attrs["reconstruction"]
    expected_error = 0.5 * np.sum((a3 - X) ** 2) / X.shape[0]
    assert result.reconstruction == pytest.approx(expected_error, rel=1e-12)
    assert stored_error == pytest.approx(expected_error, rel=1e-12)


def test_attributes_link_model_and_data(tmp_path, planted):
    model, data, _, _ = planted
    output = tmp_path / "features.h5"
    encode(model, data, output)
    with h5py.File(output, "r") as handle:
        attrs = dict(handle.attrs)
    assert attrs["format"] == FEATURES_FORMAT == INSPECT_FEATURES_FORMAT
    linked_model = json.loads(attrs["model"])
    linked_data = json.loads(attrs["data"])
    assert linked_model["path"] == str(model.resolve())
    assert (linked_model["inputs"], linked_model["hidden"]) == (64, 25)
    assert linked_data == {"path": str(data.resolve()), "shape": [1000, 64], "dtype": "float32"}
    assert list(attrs["patch_shape"]) == [8, 8, 1]


def test_progress_reports_every_block_up_to_all_rows(tmp_path, planted):
    model, data, _, _ = planted
    seen: list[tuple[int, int]] = []
    encode(
        model,
        data,
        tmp_path / "f.h5",
        block_rows=300,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(300, 1000), (600, 1000), (900, 1000), (1000, 1000)]


def test_command_writes_features_and_says_so(tmp_path, planted):
    model, data, X, weights = planted
    output = tmp_path / "features.h5"
    result = invoke("encode", model, data, "-o", output, "--reconstruct", "--quiet")
    assert result.exit_code == 0
    assert result.output.startswith(f"Wrote {output}: 1,000 rows x 25 features")
    assert "reconstruction error" in result.output
    with h5py.File(output, "r") as handle:
        np.testing.assert_allclose(
            handle["features"][()], dense_a2(X, weights["W1"], weights["b1"]), atol=1e-6
        )
        assert handle["reconstruction"].shape == (1000, 64)


# --------------------------------------------------------------------------- bad input


def test_model_and_data_of_different_sizes_names_both(tmp_path, rng, model_file, patch_file):
    model = model_file(rng.normal(size=(5, 49)))
    data = patch_file(rng.uniform(size=(100, 64)).astype(np.float32))
    output = tmp_path / "f.h5"
    assert_clean_failure(invoke("encode", model, data, "-o", output), 2, str(model), str(data), "49", "64")
    assert not output.exists()


def test_model_with_missing_dataset(tmp_path, planted):
    model, data, _, _ = planted
    with h5py.File(model, "a") as handle:
        del handle["b1"]
    assert_clean_failure(invoke("encode", model, data, "-o", tmp_path / "f.h5"), 2, str(model), "/b1")


def test_arguments_swapped(tmp_path, planted):
    model, data, _, _ = planted
    assert_clean_failure(
        invoke("encode", data, model, "-o", tmp_path / "f.h5"), 2, str(data), "not a model file"
    )


def test_existing_output_needs_force(tmp_path, planted):
    model, data, _, _ = planted
    output = tmp_path / "f.h5"
    output.write_bytes(b"keep me")
    assert_clean_failure(invoke("encode", model, data, "-o", output), 2, str(output), "--force")
    assert output.read_bytes() == b"keep me"
    assert invoke("encode", model, data, "-o", output, "--force", "-q").exit_code == 0
    with h5py.File(output, "r") as handle:
        assert handle["features"].shape == (1000, 25)


def test_directory_as_output(tmp_path, planted):
    model, data, _, _ = planted
    assert_clean_failure(invoke("encode", model, data, "-o", tmp_path), 2, str(tmp_path), "directory")


def test_output_onto_an_input_is_refused(tmp_path, planted):
    model, data, _, _ = planted
    before = data.read_bytes()
    assert_clean_failure(invoke("encode", model, data, "-o", data, "--force"), 2, "overwrite the input")
    assert data.read_bytes() == before


# --------------------------------------------------------------------------- memory

MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from streamae.encoding import encode
    encode(sys.argv[1], sys.argv[2], sys.argv[3], reconstruct=True)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    """
)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_rows(tmp_path, rng, model_file):
    model = model_file(rng.normal(size=(25, 64)))
    peaks = {}
    for rows in (20_000, 400_000):  # 5 MB and 102 MB of input, a3 doubles the output
        data = tmp_path / f"patches{rows}.h5"
        write_large_patch_file(data, rows)
        completed = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(model), str(data), str(tmp_path / f"f{rows}.h5")],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        peaks[rows] = int(completed.stdout.strip().splitlines()[-1]) / 1024  # MiB
    print(f"peak RSS: {peaks}")
    # 380,000 more rows are 97 MiB more input and 133 MiB more output; allow 16 MiB of noise.
    assert peaks[400_000] - peaks[20_000] < 16, peaks


def test_progress_lines_without_a_terminal_and_none_when_quiet(tmp_path, planted, monkeypatch):
    import streamae.cli.encode as command_module

    monkeypatch.setattr(command_module, "PLAIN_PROGRESS_SECONDS", 0.0)
    model, data, _, _ = planted
    result = invoke("encode", model, data, "-o", tmp_path / "a.h5", "--block-rows", "400")
    assert result.exit_code == 0
    # Plain lines (CliRunner's stderr is not a terminal), none for the last block.
    assert result.stderr.splitlines() == [
        "encoding patches.h5: 400 of 1,000 rows (40%)",
        "encoding patches.h5: 800 of 1,000 rows (80%)",
    ]
    quiet = invoke("encode", model, data, "-o", tmp_path / "b.h5", "--block-rows", "400", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout.startswith("Wrote ")


def test_model_and_data_of_different_patch_shapes(tmp_path, rng, model_file, patch_file):
    model = model_file(rng.normal(size=(5, 64)), patch_shape=(8, 8, 1))
    data = patch_file(rng.uniform(size=(10, 64)).astype(np.float32), patch_shape=(4, 16, 1))
    result = invoke("encode", model, data, "-o", tmp_path / "f.h5")
    assert_clean_failure(result, 2, str(model), "8x8x1", str(data), "4x16x1")


@pytest.mark.parametrize("decoder", ["sigmoid", "linear"])
def test_encode_agrees_with_the_training_objective(tmp_path, rng, model_file, patch_file, decoder):
    # On the training data, mean a2 is the objective's rho_hat and the mean ½‖a3 − x‖² its
    # reconstruction term: encode and training compute the same network.
    from streamae.compute.parameters import Hyperparameters, pack
    from streamae.compute.schemes import TwoPassObjective as Objective
    from streamae.io.patchfile import ArrayPatches

    s, n = 7, 20
    W1, W2 = rng.normal(0, 0.5, size=(s, n)), rng.normal(0, 0.5, size=(n, s))
    b1, b2 = rng.normal(size=s), rng.normal(size=n)
    X = rng.uniform(size=(400, n))
    model = model_file(W1, W2=W2, b1=b1, b2=b2, decoder=decoder, patch_shape=(4, 5))
    data = patch_file(X, chunk_rows=64)
    result = encode(model, data, tmp_path / "f.h5", reconstruct=True, dtype="float64", block_rows=100)
    hyper = Hyperparameters(hidden=s, decoder=decoder)
    evaluation = Objective(ArrayPatches(X, block_rows=64), hyper, n_visible=n, dtype=np.float64)(
        pack(W1, W2, b1, b2)
    )
    np.testing.assert_allclose(result.mean_activation, evaluation.rho_hat, rtol=1e-12)
    assert result.reconstruction == pytest.approx(evaluation.reconstruction, rel=1e-12)
