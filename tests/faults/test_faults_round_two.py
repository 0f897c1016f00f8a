"""Issue 25's classes 2-9 on the new surfaces, each as parametrised CLI (and API) cases."""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import invoke, write_patch_file

from .faultkit import assert_clean_case, listing, write_model
from .test_faults_generated import invoke_with_timeout


def write_wav(path: Path, samples: np.ndarray, *, rate: int = 8000, fmt: str = "<f8") -> Path:
    """A float WAV (tag 3) of one channel holding ``samples``."""
    payload = np.asarray(samples, dtype=fmt).tobytes()
    width = np.dtype(fmt).itemsize
    header = struct.pack("<HHIIHH", 3, 1, rate, rate * width, width, 8 * width)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(header)) + header
    body += b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "tone.wav", np.sin(np.linspace(0, 200, 4000)) * 0.5)


@pytest.fixture
def vectors(tmp_path: Path) -> Path:
    path = tmp_path / "v.npy"
    np.save(path, np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32))
    return path


# --------------------------------------------------------------------------- class 2


@pytest.mark.parametrize("extra", [["--color", "rgb"], ["--variable", "x"], ["--raw-shape", "16x16"]])
def test_audio_refuses_the_options_it_cannot_use(tmp_path, wav, extra):
    out = tmp_path / "out.h5"
    result = invoke("extract", wav, "-o", out, "--patch-size", "16", "--num-patches", "20", *extra)
    assert_clean_case(result, "extract", 2, fragments=["WAV"])
    assert not out.exists()


def test_audio_applies_normalize_like(tmp_path, wav):
    reference = tmp_path / "ref.h5"
    assert invoke("extract", wav, "-o", reference, "--patch-size", "16", "--num-patches", "200",
                  "--normalize", "zca", "-q").exit_code == 0  # fmt: skip
    out = tmp_path / "out.h5"
    assert invoke("extract", wav, "-o", out, "--patch-size", "16", "--num-patches", "50",
                  "--normalize-like", reference, "-q").exit_code == 0  # fmt: skip
    with h5py.File(out) as handle, h5py.File(reference) as ref:
        assert '"zca"' in handle.attrs["normalization"]
        np.testing.assert_array_equal(handle["zca/matrix"][()], ref["zca/matrix"][()])


def test_audio_skip_bad_skips_with_one_warning(tmp_path, wav):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    out = tmp_path / "out.h5"
    result = invoke("extract", wav, bad, "-o", out, "--patch-size", "16", "--num-patches", "20", "--skip-bad")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("warning: skipped") == 1


@pytest.mark.parametrize(
    "extra",
    [["--normalize-like", "{ref}"], ["--num-patches", "5"], ["--color", "rgb"], ["--raw-shape", "8x8"],
     ["--raw-dtype", "uint8"]],
)  # fmt: skip
def test_vectors_refuse_options_they_would_ignore(tmp_path, vectors, good_patches, extra):
    out = tmp_path / "out.h5"
    extra = [e.format(ref=good_patches) for e in extra]
    result = invoke("extract", "--vectors", vectors, "-o", out, *extra)
    assert_clean_case(result, "extract", 2, fragments=["vectors"])
    assert not out.exists()


def test_vectors_apply_compression(tmp_path, vectors):
    out = tmp_path / "out.h5"
    assert invoke("extract", "--vectors", vectors, "-o", out, "--compression", "gzip").exit_code == 0
    with h5py.File(out) as handle:
        assert handle["patches"].compression == "gzip"


def test_validate_every_alone_is_refused(tmp_path, good_patches):
    out = tmp_path / "m.h5"
    result = invoke("train", good_patches, "-o", out, "--validate-every", "3", "--max-iter", "1")
    assert_clean_case(result, "train", 2, fragments=["--validate-every", "held-out"])


@pytest.fixture
def one_d_model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "audio-model.h5", n=32, s=4, patch_shape=(1, 32, 1))


@pytest.mark.parametrize(
    "extra", [["--cols", "2"], ["--scale", "2"], ["--sort", "norm"], ["--space", "whitened"]]
)
def test_visualize_of_a_1d_model_refuses_grid_options(tmp_path, one_d_model, extra):
    out = tmp_path / "f.png"
    result = invoke("visualize", one_d_model, "-o", out, *extra)
    assert_clean_case(result, "visualize", 2, fragments=[extra[0]])
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--cols", "2"], ["--scale", "2"]])
def test_reconstructions_of_a_1d_model_refuse_grid_options(tmp_path, one_d_model, good_patches, extra):
    """A 1-D model's reconstructions are line plots (input over output): no tile grid to shape."""
    out = tmp_path / "r.png"
    result = invoke("visualize", one_d_model, "--reconstructions", good_patches, "-o", out, *extra)
    assert_clean_case(result, "visualize", 2, fragments=[extra[0]])
    assert not out.exists()


def test_spectra_of_an_image_model_is_refused(tmp_path, good_model):
    result = invoke("visualize", good_model, "-o", tmp_path / "f.png", "--spectra")
    assert_clean_case(result, "visualize", 2, fragments=["--spectra"])


# --------------------------------------------------------------------------- class 3


def test_a_float64_wav_beyond_float32_is_refused(tmp_path):
    loud = write_wav(tmp_path / "loud.wav", np.full(400, 1e300))
    out = tmp_path / "out.h5"
    result = invoke(
        "extract", loud, "-o", out, "--patch-size", "16", "--num-patches", "10", "--normalize", "none"
    )
    assert_clean_case(result, "extract", (1, 2), names=[loud], fragments=["float32"])
    assert not out.exists()


def test_zca_that_normalises_to_nan_or_inf_is_refused(tmp_path, monkeypatch):
    import streamae.extraction.normalize as normalize

    monkeypatch.setattr(
        normalize, "zca_matrix", lambda covariance, epsilon: np.full(covariance.shape, np.inf)
    )
    quiet = write_wav(tmp_path / "q.wav", np.sin(np.linspace(0, 50, 2000)))
    out = tmp_path / "out.h5"
    result = invoke(
        "extract", quiet, "-o", out, "--patch-size", "8", "--num-patches", "20", "--normalize", "zca"
    )
    assert_clean_case(result, "extract", 1, fragments=["NaN or Inf"])
    assert not out.exists()


def test_validation_naming_the_training_data_is_refused(tmp_path, good_patches):
    result = invoke(
        "train", good_patches, "-o", tmp_path / "m.h5", "--validation", good_patches, "--max-iter", "1"
    )
    assert_clean_case(result, "train", 2, names=[good_patches], fragments=["training data"])


def test_vectors_refuse_a_dataset_never_written(tmp_path):
    source = tmp_path / "src.h5"
    with h5py.File(source, "w") as handle:
        handle.create_dataset("X", shape=(1000, 8), dtype="f4", chunks=(100, 8))
    out = tmp_path / "out.h5"
    result = invoke("extract", "--vectors", f"{source}:/X", "-o", out)
    assert_clean_case(result, "extract", 2, names=[source], fragments=["never written"])
    assert not out.exists()


def test_the_tanh_histogram_draws_every_unit(tmp_path):
    from streamae.compute.parameters import Hyperparameters
    from streamae.io.modelfile import load_model
    from streamae.render import activation_histogram

    model = load_model(write_model(tmp_path / "m.h5"))
    model.hyper = Hyperparameters(hidden=model.n_hidden, activation="tanh")
    model.rho_hat = np.linspace(-0.95, -0.5, model.n_hidden)
    assert activation_histogram(model).counts.sum() == model.n_hidden


# --------------------------------------------------------------------------- classes 5, 7, 8


def test_a_null_dataspace_in_vectors_is_one_sentence(tmp_path):
    source = tmp_path / "null.h5"
    with h5py.File(source, "w") as handle:
        handle.create_dataset("X", data=h5py.Empty("f4"))
    result = invoke("extract", "--vectors", f"{source}:/X", "-o", tmp_path / "o.h5")
    assert_clean_case(result, "extract", 2, names=[source])


@pytest.mark.parametrize("command", ["info", "export"])
def test_a_model_declaring_an_unwritten_huge_dataset_is_refused_without_allocating(tmp_path, command):
    import resource

    model = write_model(tmp_path / "m.h5")
    with h5py.File(model, "r+") as handle:
        del handle["rho_hat"]
        handle.create_dataset("rho_hat", shape=(2**27,), dtype="f8", chunks=(2**20,))  # 1 GiB declared
    assert model.stat().st_size < 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    args = [model] if command == "info" else [model, "-o", tmp_path / "w.npz"]
    result = invoke(command, *args)
    assert_clean_case(result, command, (1, 2), names=[model])
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 256 * 1024, f"peak RSS grew by {grown} KiB"


@pytest.mark.parametrize("spelling", ["{p}:patches", "{p}:/patches"])
def test_validation_file_colon_dataset_finds_the_dataset(tmp_path, good_patches, spelling):
    held = write_patch_file(tmp_path / "held.h5", np.full((64, 64), 0.5, np.float32), patch_shape=(8, 8, 1))
    result = invoke("train", good_patches, "-o", tmp_path / "m.h5", "--validation", spelling.format(p=held),
                    "--max-iter", "1", "--hidden", "2", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder", "loop"])
def test_a_special_wav_is_said_for_what_it_is(tmp_path, kind):
    import os

    path = tmp_path / "sound.wav"
    {"fifo": lambda: os.mkfifo(path), "folder": path.mkdir, "loop": lambda: path.symlink_to(path)}[kind]()
    before = listing(tmp_path)
    # A FIFO opened for reading would block: the alarm fails the test instead of hanging the suite.
    result = invoke_with_timeout(["extract", path, "-o", tmp_path / "o.h5", "--patch-size", "16"])
    message = assert_clean_case(result, "extract", 2, names=[path])
    assert "no such" not in message
    assert listing(tmp_path) == before


def test_a_wav_with_sample_rate_zero_is_refused(tmp_path):
    zero = write_wav(tmp_path / "zero.wav", np.zeros(100), rate=0)
    result = invoke("extract", zero, "-o", tmp_path / "o.h5", "--patch-size", "16")
    assert_clean_case(result, "extract", 2, names=[zero], fragments=["sample rate"])


def test_skip_bad_warnings_escape_file_names(tmp_path, wav):
    bad = tmp_path / "bad\x1b[2J.wav"
    bad.write_bytes(b"junk")
    result = invoke("extract", wav, bad, "-o", tmp_path / "o.h5", "--patch-size", "16", "--num-patches", "5",
                    "--skip-bad")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stderr


# --------------------------------------------------------------------------- class 4


@pytest.mark.parametrize(
    "damage",
    [
        lambda h: _replace(h, "zscore/mean", np.zeros(3)),
        lambda h: _replace(h, "zscore/std", np.full(64, np.nan)),
        lambda h: _replace(h, "zscore/std", -np.ones(64)),
        lambda h: _replace(h, "zscore/mean", np.zeros((64, 64))),
    ],
    ids=["short mean", "NaN std", "negative std", "mean of another shape"],
)
def test_normalize_like_refuses_a_damaged_reference(tmp_path, damage):
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 32), dtype=np.uint8)).save(image)
    reference = tmp_path / "ref.h5"
    assert invoke("extract", image, "-o", reference, "--num-patches", "50", "--normalize", "zscore",
                  "-q").exit_code == 0  # fmt: skip
    with h5py.File(reference, "r+") as handle:
        damage(handle)
    out = tmp_path / "out.h5"
    result = invoke("extract", image, "-o", out, "--num-patches", "20", "--normalize-like", reference)
    assert_clean_case(result, "extract", 2, names=[reference])
    assert not out.exists()


def _replace(handle, name: str, values: np.ndarray) -> None:
    del handle[name]
    handle.create_dataset(name, data=values)


def test_model_save_refuses_what_load_model_would_and_keeps_the_good_file(tmp_path):
    from streamae.errors import DataError
    from streamae.io.modelfile import load_model

    path = write_model(tmp_path / "m.h5")
    before = path.read_bytes()
    model = load_model(path)
    model.W1 = model.W1.copy()
    model.W1[0, 0] = np.nan
    with pytest.raises(DataError, match="not written"):
        model.save(path, force=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]


def test_reconstructions_of_damaged_patches_is_one_sentence(tmp_path, good_model):
    data = np.random.default_rng(1).uniform(0.1, 0.9, (40, 64)).astype(np.float32)
    data[:, 3] = np.nan
    bad = write_patch_file(tmp_path / "bad.h5", data, patch_shape=(8, 8, 1))
    result = invoke("visualize", good_model, "-o", tmp_path / "r.png", "--reconstructions", bad)
    assert_clean_case(result, "visualize", (1, 2), names=[bad])


# --------------------------------------------------------------------------- class 5 and the API


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_values_near_the_float64_limit_are_encoded_or_said(tmp_path, dtype):
    from streamae.io.modelfile import load_model

    model = load_model(write_model(tmp_path / "m.h5"))
    x = np.full((5, 64), 1e307)
    if dtype == "float64":
        assert np.isfinite(model.encode(x)).all() and np.isfinite(model.reconstruct(x)).all()
    else:
        from streamae.errors import UsageError

        with pytest.raises(UsageError, match="float32's range"):
            model.encode(x, dtype=dtype)


def test_encode_with_default_options_keeps_the_array_dtype(tmp_path):
    from streamae.encoding import encode
    from streamae.io.modelfile import load_model
    from streamae.options import EncodeOptions

    model = load_model(write_model(tmp_path / "m.h5"))
    x = np.random.default_rng(0).uniform(size=(4, 64))
    assert encode(model, x).dtype == encode(model, x, None, EncodeOptions()).dtype == np.float64


def test_encode_refuses_data_normalised_unlike_the_model(tmp_path, good_model, good_patches):
    from streamae.io.modelfile import load_model

    model = load_model(good_model)
    model.normalization = {"mode": "zca"}
    trained = tmp_path / "zca-model.h5"
    model.save(trained)
    with h5py.File(good_patches, "r+") as handle:
        handle.attrs["normalization"] = '{"mode": "ufldl", "sigma": 0.1}'
    result = invoke("encode", trained, good_patches, "-o", tmp_path / "f.h5")
    assert_clean_case(result, "encode", 2, names=[good_patches], fragments=["--normalize-like"])


# --------------------------------------------------------------------------- also looked at


def test_the_api_takes_validation_as_a_path(tmp_path, good_patches):
    from streamae.training.session import train

    held = write_patch_file(tmp_path / "held.h5", np.full((64, 64), 0.5, np.float32), patch_shape=(8, 8, 1))
    model = train(good_patches, None, max_iter=1, hidden=2, validation=held)
    assert len(model.validation["cost"]) >= 1


def test_keep_state_with_early_stop_is_refused(tmp_path, good_patches):
    result = invoke("train", good_patches, "-o", tmp_path / "m.h5", "--validation-fraction", "0.3",
                    "--early-stop", "2", "--keep-state", "--max-iter", "1")  # fmt: skip
    assert_clean_case(result, "train", 2, fragments=["--keep-state", "--early-stop"])


def test_a_group_given_as_dataset_lists_its_own_datasets(tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as handle:
        handle["outside"] = np.zeros((3, 4), "f4")
        handle["g/inside"] = np.zeros((3, 4), "f4")
    result = invoke("info", path, "--dataset", "/g")
    message = assert_clean_case(result, "info", 2, names=[path])
    assert "/g/inside" in message and "outside" not in message


def test_info_of_a_null_dataspace_is_one_sentence(tmp_path):
    path = tmp_path / "null.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=h5py.Empty("f4"))
        handle.attrs["format"] = "streamae.patches/1"
    assert_clean_case(invoke("info", path), "info", (1, 2), names=[path])


@pytest.mark.parametrize("fails", [True, False])
def test_numpy_warnings_are_held_back_beside_an_error(capsys, fails):
    import warnings

    from streamae.cli.common import reported_errors
    from streamae.errors import UsageError

    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as outside the test suite, where warnings print
        try:
            with reported_errors(False):
                warnings.warn("overflow encountered in cast", RuntimeWarning, stacklevel=1)
                if fails:
                    raise UsageError("data.h5: bad values; give other data.")
        except SystemExit as stop:
            assert stop.code == 2
    err = capsys.readouterr().err
    expected = (
        "Error: data.h5: bad values; give other data.\n"
        if fails
        else ("warning: RuntimeWarning: overflow encountered in cast\n")
    )
    assert err == expected


def test_images_refuse_channels(tmp_path, inputs):
    out = tmp_path / "out.h5"
    result = invoke("extract", inputs["image"], "-o", out, "--channels", "keep", "--num-patches", "5")
    assert_clean_case(result, "extract", 2, fragments=["--channels"])
    assert not out.exists()


def test_a_folder_export_keeps_a_live_neighbour_temporary(tmp_path, good_model):
    """``weights`` and ``weights.npz`` share a prefix: one run's cleanup never takes the other's file."""
    import os

    from streamae.export import export_weights

    neighbour = tmp_path / f".weights.npz.{os.getpid()}.streamae-tmp"
    neighbour.write_bytes(b"being written")
    export_weights(good_model, tmp_path / "weights")
    assert neighbour.read_bytes() == b"being written"


def test_image_zca_with_a_tiny_epsilon_is_refused_not_written(tmp_path):
    from PIL import Image

    stripes = np.zeros((40, 40), np.uint8)
    stripes[::2] = 255  # rank-deficient patches: zero variances, whitened by 1/sqrt(epsilon)
    image = tmp_path / "stripes.png"
    Image.fromarray(stripes).save(image)
    out = tmp_path / "z.h5"
    result = invoke("extract", image, "-o", out, "--normalize", "zca", "--zca-epsilon", "1e-300",
                    "--num-patches", "200", "-q")  # fmt: skip
    assert_clean_case(result, "extract", 1, fragments=["NaN or Inf", "--zca-epsilon"])
    assert not out.exists()


def test_normalize_like_with_a_never_written_zca_matrix_is_refused(tmp_path, inputs):
    reference = tmp_path / "ref.h5"
    assert invoke("extract", inputs["image"], "-o", reference, "--num-patches", "50", "--normalize", "zca",
                  "-q").exit_code == 0  # fmt: skip
    with h5py.File(reference, "r+") as handle:
        del handle["zca/matrix"]
        handle.create_dataset("zca/matrix", shape=(64, 64), dtype="f8", chunks=(8, 8))  # reads as zeros
    out = tmp_path / "out.h5"
    result = invoke(
        "extract", inputs["image"], "-o", out, "--num-patches", "20", "--normalize-like", reference
    )
    assert_clean_case(result, "extract", 2, names=[reference], fragments=["never completely written"])
    assert not out.exists()
