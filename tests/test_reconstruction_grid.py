"""The notes' pictures for whitened data: W1·ZCAWhite, and inputs beside their reconstructions."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from streamae.cli.main import cli
from streamae.compute.parameters import Hyperparameters
from streamae.extraction.pipeline import extract
from streamae.io.modelfile import Model, load_model
from streamae.reconstruction_grid import reconstruction_grid
from streamae.render import contrast_stretch, feature_grid, features_in_space
from streamae.training.session import train


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    print(result.output)
    return result


@pytest.fixture
def zca_model(rng) -> Model:
    s, n = 6, 16
    A = rng.normal(size=(n, n))
    matrix = A @ A.T + n * np.eye(n)  # symmetric positive definite, like a ZCA matrix
    return Model(
        W1=rng.normal(size=(s, n)),
        W2=rng.normal(size=(n, s)),
        b1=rng.normal(size=s),
        b2=rng.normal(size=n),
        hyper=Hyperparameters(hidden=s, decoder="linear"),
        patch_shape=(4, 4, 1),
        normalization={"mode": "zca", "epsilon": 0.1, "mean": "/zca/mean", "matrix": "/zca/matrix"},
        normalization_arrays={"zca/mean": rng.normal(size=n), "zca/matrix": matrix},
    )


def test_the_zca_view_is_w1_times_zcawhite(zca_model):
    expected = zca_model.W1 @ zca_model.normalization_arrays["zca/matrix"]
    np.testing.assert_allclose(features_in_space(zca_model), expected, rtol=1e-12)
    np.testing.assert_array_equal(features_in_space(zca_model, "whitened"), zca_model.W1)
    grid = feature_grid(zca_model)  # the input space by default
    first = expected[0] / np.linalg.norm(expected[0])
    top, left = grid.origin(0)
    np.testing.assert_array_equal(
        grid.image[top : top + 4, left : left + 4], contrast_stretch(first).reshape(4, 4)
    )


def test_the_model_remembers_its_datas_zca_and_visualize_draws_both_spaces(images_dir, tmp_path):
    data = tmp_path / "zca.h5"
    extract([images_dir], data, num_patches=400, normalize="zca", patch_size=6)
    model_path = tmp_path / "m.h5"
    train(data, model_path, hidden=5, decoder="linear", max_iter=3, stop_signals=False)
    model = load_model(model_path)
    import h5py

    with h5py.File(data) as handle:
        assert np.array_equal(model.normalization_arrays["zca/matrix"], handle["zca/matrix"][()])
        assert np.array_equal(model.normalization_arrays["zca/mean"], handle["zca/mean"][()])
    assert model.normalization["mode"] == "zca"
    assert "normalization:    zca" in invoke("info", model_path).output
    for space in ("input", "whitened"):
        out = tmp_path / f"{space}.png"
        assert invoke("visualize", model_path, "-o", out, "--space", space, "--scale", "1").exit_code == 0
    default = tmp_path / "default.png"
    assert invoke("visualize", model_path, "-o", default, "--scale", "1").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(default)), np.asarray(Image.open(tmp_path / "input.png")))
    assert not np.array_equal(
        np.asarray(Image.open(default)), np.asarray(Image.open(tmp_path / "whitened.png"))
    )


def test_reconstructions_show_the_inputs_unwhitened(images_dir, tmp_path):
    """The un-whitened inputs equal the same patches extracted with plain unit scaling."""
    zca, unit = tmp_path / "zca.h5", tmp_path / "unit.h5"
    extract([images_dir], zca, num_patches=300, normalize="zca", patch_size=6, seed=2)
    extract([images_dir], unit, num_patches=300, normalize="unit", patch_size=6, seed=2)
    model_path = tmp_path / "m.h5"
    train(zca, model_path, hidden=5, decoder="linear", max_iter=2, stop_signals=False)
    model = load_model(model_path)
    grid = reconstruction_grid(model, zca, pairs=9, seed=1)
    import h5py

    with h5py.File(unit) as handle:
        raw = handle["patches"][()][grid.rows]
    np.testing.assert_allclose(grid.inputs, raw, rtol=0, atol=1e-4)
    assert grid.grid == (3, 6) and grid.image.shape == (1 + 3 * 7, 1 + 6 * 7)
    again = reconstruction_grid(model, zca, pairs=9, seed=1)
    assert np.array_equal(again.rows, grid.rows)  # chosen by the seed
    out = tmp_path / "rec.png"
    result = invoke(
        "visualize", model_path, "--reconstructions", zca, "-o", out, "--pairs", "9", "--scale", "2"
    )
    assert result.exit_code == 0 and "9 patches of" in result.output
    assert pixels(out).shape == (2 * (1 + 3 * 7), 2 * (1 + 6 * 7))
