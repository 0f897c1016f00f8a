"""extract --vectors: the rows of an array as they are; 2-D arrays of vectors are not images."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from streamae.cli.main import cli
from streamae.errors import InputFileError
from streamae.extraction.pipeline import extract
from streamae.io.modelfile import load_model


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    print(result.output)
    return result


def test_a_2d_array_of_vectors_is_not_cut_into_patches(tmp_path, rng):
    np.save(tmp_path / "features.npy", rng.uniform(size=(500, 30)))
    with pytest.raises(InputFileError) as caught:
        extract([tmp_path / "features.npy"], tmp_path / "p.h5")
    assert str(caught.value) == (
        f"{tmp_path / 'features.npy'}: holds a 2-D array of shape (500, 30), which looks like 500 "
        "vectors of 30 values rather than an image; to train on the rows as they are, extract them "
        "with vectors (streamae extract --vectors), or save an image stack as (N, H, W)."
    )


@pytest.mark.parametrize("kind", ["npy", "h5"])
def test_vectors_round_trip_and_train(tmp_path, rng, kind):
    values = rng.uniform(0.05, 0.95, size=(700, 30)).astype(np.float32)
    if kind == "npy":
        np.save(tmp_path / "v.npy", values)
        source = tmp_path / "v.npy"
    else:
        with h5py.File(tmp_path / "v.h5", "w") as handle:
            handle.create_dataset("group/vectors", data=values.astype(np.float64))
        source = f"{tmp_path / 'v.h5'}:group/vectors"
    result = invoke("extract", "--vectors", source, "-o", tmp_path / "p.h5", "--chunk-rows", "128")
    assert result.exit_code == 0 and "wrote 700 vectors of 30 values" in result.stderr
    with h5py.File(tmp_path / "p.h5") as handle:
        assert np.array_equal(handle["patches"][()], values)
        assert list(handle.attrs["patch_shape"]) == [30] and handle["patches"].chunks == (128, 30)
    assert (
        invoke(
            "train", tmp_path / "p.h5", "-o", tmp_path / "m.h5", "--hidden", "4", "--max-iter", "2"
        ).exit_code
        == 0
    )
    assert load_model(tmp_path / "m.h5").patch_shape == (30,)


def test_vectors_refuse_non_finite_rows_and_missing_datasets(tmp_path):
    values = np.zeros((10, 4))
    values[6, 2] = np.nan
    np.save(tmp_path / "v.npy", values)
    result = invoke("extract", "--vectors", tmp_path / "v.npy", "-o", tmp_path / "p.h5")
    assert result.exit_code == 2 and "v.npy: row 6 holds NaN or Inf; remove or repair it." in result.stderr
    assert not (tmp_path / "p.h5").exists()
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle["x"] = np.zeros((3, 3))
    result = invoke("extract", "--vectors", f"{tmp_path / 'v.h5'}:y", "-o", tmp_path / "p.h5")
    assert result.exit_code == 2 and "has no dataset 'y'" in result.stderr
