"""`streamae export`: weights out as .npz, .mat (read back by SciPy) and a folder of .npy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from naive import starter_code_theta

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


def test_mat_export_holds_the_starter_codes_theta(planted, tmp_path):
    output = tmp_path / "weights.mat"
    result = invoke("export", planted, "-o", output)
    assert result.exit_code == 0 and f"Wrote {output} (mat)." in result.output
    model = load_model(planted)
    mat = scipy.io.loadmat(output)
    expected = starter_code_theta(model.W1, model.W2, model.b1, model.b2)
    assert mat["theta"].shape == (expected.size, 1)
    assert np.array_equal(mat["theta"][:, 0], expected)
    assert np.array_equal(mat["W1"], model.W1) and np.array_equal(mat["W2"], model.W2)
    assert mat["b1"].shape == (5, 1) and np.array_equal(mat["b1"][:, 0], model.b1)
    assert float(mat["hiddenSize"][0, 0]) == 5 and float(mat["visibleSize"][0, 0]) == 12
    assert float(mat["sparsityParam"][0, 0]) == 0.05 and float(mat["lambda"][0, 0]) == 1e-4
    # The notes' MATLAB: W1 = reshape(theta(1:hiddenSize*visibleSize), hiddenSize, visibleSize).
    first = mat["theta"][: 5 * 12, 0].reshape((5, 12), order="F")
    assert np.array_equal(first, model.W1)


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
    assert hyper["hidden"] == 5 and hyper["beta"] == 2.0 and hyper["lam"] == 1e-4


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
