"""`streamae demo`: the README's main job, on the photographs that ship with the package."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import orientation_coherence
from PIL import Image

from streamae.cli.main import cli
from streamae.compute.parameters import initialize, unpack
from streamae.demo import DEMO_OUTPUTS, shipped_images
from streamae.io.modelfile import load_model


def test_the_photographs_ship_with_their_licence_note():
    folder = shipped_images()
    assert len(list(folder.glob("*.png"))) == 4
    assert "CC0" in (folder / "LICENSES.md").read_text()


@pytest.mark.slow
def test_demo_learns_oriented_edges(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    for name in DEMO_OUTPUTS:
        assert (out / name).is_file(), name
        assert str(out / name) in result.stdout, f"the summary does not name {out / name}"
    with h5py.File(out / "patches.h5", "r") as handle:
        assert handle["patches"].shape == (10_000, 64)
    with Image.open(out / "curves.png") as image:
        assert image.size[0] > 0 and image.size[1] > 0
    model = load_model(out / "model.h5")
    assert model.iterations == 400 and model.patch_shape == (8, 8, 1)
    assert abs(model.rho_hat.mean() - 0.01) < 0.005
    # Edge-like units have gradients along one direction; random initial weights do not.
    trained = np.median(orientation_coherence(model.W1, (8, 8)))
    untrained = np.median(orientation_coherence(unpack(initialize(64, 25), 64, 25).W1, (8, 8)))
    assert untrained < 0.3 < 0.6 < trained
    with Image.open(out / "features.png") as image:
        assert image.mode == "L" and image.size[0] > 8 * 5

    again = CliRunner().invoke(cli, ["demo", "-o", str(out), "--quiet"])
    assert again.exit_code == 2 and "--force" in again.stderr
