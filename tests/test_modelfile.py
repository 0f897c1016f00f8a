"""Model files: the hidden activation is stored, read back, defaulted for old files, checked."""

from __future__ import annotations

import h5py
import pytest

from streamae.errors import InputFileError
from streamae.io.modelfile import load_model


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_the_activation_round_trips(rng, model_file, activation):
    path = model_file(rng.normal(size=(3, 8)), activation=activation)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["activation"] == activation
    model = load_model(path)
    assert model.hyper.activation == activation and model.activation == activation


def test_a_file_written_before_tanh_loads_as_sigmoid(rng, model_file):
    path = model_file(rng.normal(size=(3, 8)), activation="tanh")
    with h5py.File(path, "r+") as handle:
        del handle.attrs["activation"]  # what every file written before this option holds
    model = load_model(path)
    assert model.activation == "sigmoid"


@pytest.mark.parametrize("stored", ["relu", "tanh\x1b[2J" + "x" * 200, 3])
def test_a_damaged_activation_attribute_is_named(rng, model_file, stored):
    path = model_file(rng.normal(size=(3, 8)))
    with h5py.File(path, "r+") as handle:
        handle.attrs["activation"] = stored
    with pytest.raises(InputFileError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: the attribute activation is ")
    assert "not one of sigmoid, tanh; the model file is damaged, train it again." in message
    assert "\x1b" not in message and len(message) < len(str(path)) + 200
