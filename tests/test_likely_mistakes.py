"""Settings that are almost surely mistakes: each warned once, in words, never refused."""

from __future__ import annotations

import numpy as np
from helpers import write_patch_file

from streamae.compute.parameters import Hyperparameters
from streamae.training.likely_mistakes import data_warnings, resume_warnings
from streamae.training.session import TrainingMonitor, train


class Messages(TrainingMonitor):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_message(self, text: str) -> None:
        self.messages.append(text)


def test_the_linear_decoder_on_raw_pixel_values_is_warned_once(tmp_path):
    values = np.random.default_rng(1).uniform(0, 255, size=(400, 16)).astype(np.float32)
    data = write_patch_file(tmp_path / "raw.h5", values, chunk_rows=100)
    monitor = Messages()
    train(data, hidden=4, decoder="linear", max_iter=0, monitor=monitor, stop_signals=False)
    warnings = [m for m in monitor.messages if m.startswith("warning:")]
    low, high = float(values.min()), float(values.max())
    assert warnings == [
        f"warning: the data range [{low:.4g}, {high:.4g}] is far from normalised; the linear decoder "
        "will take many evaluations per iteration and reach a huge J. Normalise at extraction "
        "(normalize zca, zscore or ufldl) unless this range is intended."
    ]


def test_normalised_data_gives_no_warning():
    assert data_warnings(Hyperparameters(decoder="linear"), 64, -3.0, 4.0) == []
    assert data_warnings(Hyperparameters(hidden=25), 64, 0.1, 0.9) == []


def test_many_more_hidden_units_than_inputs_without_sparsity():
    (text,) = data_warnings(Hyperparameters(hidden=200, beta=0.0), 64, 0.1, 0.9)
    assert text == (
        "200 hidden units for 64 inputs with the sigmoid decoder and no sparsity (beta 0): the "
        "network can learn to copy its input and the features say little. Give beta > 0 or fewer "
        "hidden units."
    )
    assert data_warnings(Hyperparameters(hidden=200, beta=3.0), 64, 0.1, 0.9) == []


def test_max_iter_below_the_iterations_done():
    assert resume_warnings(100, 400) == [
        "max_iter 100 is below the 400 iterations already done, so nothing will be trained; "
        "give a larger max_iter to continue."
    ]
    assert resume_warnings(400, 400) == []
