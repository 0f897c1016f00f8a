"""`streamae export`: weights out as .npz, .mat (read back by SciPy) and a folder of .npy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from naive import display_color_network, notes_patch_vector, starter_code_theta

from streamae.cli.main import cli
from streamae.export import export_weights
from streamae.io.modelfile import load_model


@pytest.fixture
def planted(rng, model_file):
    s, n = 5, 12
    W1, W2 = rng.normal(size=(s, n)), rng.normal(size=(n, s))
    b1, b2 = rng.normal(size=s), rng.normal(size=n)
    return model_file(W1, W2=W2, b1=b1, b2=b2, patch_shape=(3, 4, 1), rho=0.05, beta=2.0)


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    print(result.output)
    return result


def test_mat_export_holds_the_starter_codes_theta_in_the_notes_layout(planted, tmp_path):
    output = tmp_path / "weights.mat"
    result = invoke("export", planted, "-o", output)
    assert result.exit_code == 0 and f"Wrote {output} (mat)." in result.output
    model = load_model(planted)
    mat = scipy.io.loadmat(output)
    # The notes' layout: each unit's weights over the patch's pixels taken column-major (patch(:)).
    W1 = np.array([notes_patch_vector(row.reshape(3, 4)) for row in model.W1])
    W2 = np.array([notes_patch_vector(column.reshape(3, 4)) for column in model.W2.T]).T
    b2 = notes_patch_vector(model.b2.reshape(3, 4))
    expected = starter_code_theta(W1, W2, model.b1, b2)
    assert mat["theta"].shape == (expected.size, 1)
    assert np.array_equal(mat["theta"][:, 0], expected)
    assert np.array_equal(mat["W1"], W1) and np.array_equal(mat["W2"], W2)
    assert mat["b1"].shape == (5, 1) and np.array_equal(mat["b1"][:, 0], model.b1)
    assert mat["b2"].shape == (12, 1) and np.array_equal(mat["b2"][:, 0], b2)
    assert float(mat["hiddenSize"][0, 0]) == 5 and float(mat["visibleSize"][0, 0]) == 12
    assert float(mat["sparsityParam"][0, 0]) == 0.05 and float(mat["lambda"][0, 0]) == 1e-4
    assert str(mat["activation"][0]) == "sigmoid" and str(mat["decoder"][0]) == "sigmoid"
    # The notes' MATLAB: W1 = reshape(theta(1:hiddenSize*visibleSize), hiddenSize, visibleSize).
    first = mat["theta"][: 5 * 12, 0].reshape((5, 12), order="F")
    assert np.array_equal(first, W1)


def test_display_color_network_draws_the_planted_rgb_features_from_the_mat(rng, model_file, tmp_path):
    """The notes' displayColorNetwork(W1') on the exported .mat puts feature k in tile k, in colour."""
    h = w = 4
    patches = rng.uniform(-1, 1, size=(6, h, w, 3))  # six planted RGB features, one per unit
    planted = model_file(patches.reshape(6, -1), patch_shape=(h, w, 3), activation="tanh")
    scipy_path = tmp_path / "rgb.mat"
    export_weights(planted, scipy_path)
    mat = scipy.io.loadmat(scipy_path)
    image = display_color_network(mat["W1"].T)
    cols = 2  # round(sqrt(6))
    for k, patch in enumerate(patches):
        i, j = divmod(k, cols)
        tile = image[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w, :]
        scaled = patch / np.abs(patch).max(axis=(0, 1))  # each channel over its own max |value|
        np.testing.assert_allclose(tile, (scaled + 1) / 2, rtol=0, atol=1e-12)
    assert str(mat["activation"][0]) == "tanh"


def test_every_format_names_the_hyperparameters_alike(rng, model_file, tmp_path):
    planted = model_file(rng.normal(size=(3, 8)), patch_shape=(2, 4, 1), activation="tanh", rho=0.2)
    names = {"hidden", "inputs", "rho", "beta", "lambda", "decoder", "activation", "iterations"}
    export_weights(planted, tmp_path / "w.npz")
    export_weights(planted, tmp_path / "w.mat")
    export_weights(planted, tmp_path / "w", format="npy-dir")
    with np.load(tmp_path / "w.npz") as npz:
        from_npz = {name: npz[name].item() for name in names}
    mat = scipy.io.loadmat(tmp_path / "w.mat")
    from_mat = {
        name: mat[name].item() if mat[name].dtype.kind != "U" else str(mat[name][0]) for name in names
    }
    hyper = json.loads((tmp_path / "w" / "hyperparameters.json").read_text())
    from_json = {name: hyper[name] for name in names}
    assert from_npz == from_mat == from_json
    assert from_json["activation"] == "tanh" and from_json["lambda"] == 1e-4 and from_json["rho"] == 0.2
    assert "lam" not in hyper


def test_npz_and_npy_dir_round_trip(planted, tmp_path):
    model = load_model(planted)
    export_weights(planted, tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as npz:
        for name in ("W1", "b1", "W2", "b2"):
            assert np.array_equal(npz[name], getattr(model, name))
        assert float(npz["rho"]) == 0.05 and str(npz["decoder"]) == "sigmoid"
        assert list(npz["patch_shape"]) == [3, 4, 1]
    folder = tmp_path / "weights"
    assert invoke("export", planted, "-o", folder, "--format", "npy-dir").exit_code == 0
    assert np.array_equal(np.load(folder / "W2.npy"), model.W2)
    hyper = json.loads((folder / "hyperparameters.json").read_text())
    assert hyper["hidden"] == 5 and hyper["beta"] == 2.0 and hyper["lambda"] == 1e-4


def test_an_existing_output_is_replaced_only_with_force(planted, tmp_path):
    folder = tmp_path / "weights"
    assert invoke("export", planted, "-o", folder).exit_code == 0
    again = invoke("export", planted, "-o", folder)
    assert again.exit_code == 2 and f"Error: {folder} exists; pass --force to replace it." in again.stderr
    assert invoke("export", planted, "-o", folder, "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    (tmp_path / "w.mat").write_text("old")
    assert invoke("export", planted, "-o", tmp_path / "w.mat").exit_code == 2
    assert (tmp_path / "w.mat").read_text() == "old"
