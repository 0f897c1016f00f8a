"""Held-out evaluation: metrics equal a dense NumPy twin, held-out rows never train, early stop."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from naive import dense_objective

import streamae
from streamae.cli.main import cli
from streamae.compute.parameters import initialize, unpack
from streamae.errors import UsageError
from streamae.render import plot_curves
from streamae.training.validation import held_out_chunks, parse_validation, split_ranges

SETTINGS = {"hidden": 5, "rho": 0.1, "beta": 3.0, "lam": 1e-3}


def write(path, data, *, dataset="patches", chunk=32):
    with h5py.File(path, "w") as handle:
        handle.create_dataset(dataset, data=data, chunks=(chunk, data.shape[1]))
    return path


def train(data, output, **options):
    return streamae.train(data, output, dtype="float64", stop_signals=False, **SETTINGS, **options)


def test_parse_validation_splits_only_a_dataset_path():
    assert parse_validation("held.h5:/X", "/patches") == (parse_validation("held.h5", "/y")[0], "/X")
    assert parse_validation("held.h5", "/y")[1] == "/y"
    assert parse_validation("a:b.h5", "/patches")[0].name == "a:b.h5"


def test_split_ranges_cover_the_share_once():
    held = np.array([1, 2, 5])
    train, out = split_ranges((0, 230), 230, 32, held)
    assert out == [(32, 96), (160, 192)]
    assert train == [(0, 32), (96, 160), (192, 230)]
    rows = sorted(r for a, b in train + out for r in range(a, b))
    assert rows == list(range(230))


def test_held_out_metrics_equal_dense_numpy(tmp_path, rng):
    X = rng.uniform(0.05, 0.95, size=(256, 8))
    H = rng.uniform(0.05, 0.95, size=(96, 8))
    data = write(tmp_path / "train.h5", X)
    held = write(tmp_path / "held.h5", H, dataset="group/X")
    model = train(data, tmp_path / "m.h5", max_iter=3, validation=f"{held}:/group/X")
    validation = streamae.load_model(tmp_path / "m.h5").validation
    assert list(validation["iteration"]) == [0.0, 1.0, 2.0, 3.0]
    cost, _, terms = dense_objective(model.theta, H, **SETTINGS)
    assert validation["cost"][-1] == pytest.approx(cost, rel=1e-11)
    for name in ("reconstruction", "weight_decay", "sparsity"):
        assert validation[name][-1] == pytest.approx(terms[name], rel=1e-11)
    W1, b1 = model.W1, model.b1
    a2 = 1.0 / (1.0 + np.exp(-(H @ W1.T + b1)))
    assert validation["rho_hat_mean"][-1] == pytest.approx(a2.mean(), rel=1e-11)
    start, _, _ = dense_objective(initialize(8, 5, 0), H, **SETTINGS)
    assert validation["cost"][0] == pytest.approx(start, rel=1e-11)
    # The training history is the training rows' J, untouched by the held-out file.
    assert model.history["cost"][-1] == pytest.approx(
        dense_objective(model.theta, X, **SETTINGS)[0], rel=1e-11
    )


def test_validate_every_and_the_log(tmp_path, rng):
    data = write(tmp_path / "train.h5", rng.uniform(0.05, 0.95, size=(128, 6)))
    held = write(tmp_path / "held.h5", rng.uniform(0.05, 0.95, size=(64, 6)))
    log = tmp_path / "log.jsonl"
    result = CliRunner().invoke(
        cli,
        ["train", str(data), "-o", str(tmp_path / "m.h5"), "--max-iter", "4", "--hidden", "3"]
        + ["--validation", str(held), "--validate-every", "2", "--log", str(log), "--dtype", "float64"],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records = [r for r in records if r.get("event") != "start"]  # the run header
    assert ["validation_cost" in r for r in records] == [False, True, False, True]
    model = streamae.load_model(tmp_path / "m.h5")
    assert list(model.validation["iteration"]) == [0.0, 2.0, 4.0]
    assert model.validation["cost"][-1] == pytest.approx(records[-1]["validation_cost"], rel=1e-15)
    text = CliRunner().invoke(cli, ["info", str(tmp_path / "m.h5")]).stdout
    assert "held-out J" in text and "3 evaluations" in text
    drawn = plot_curves(model, tmp_path / "curves.png")
    assert drawn.series["cost"].shape == (4,) and (tmp_path / "curves.png").stat().st_size > 0


def test_held_out_rows_never_enter_training(tmp_path, rng):
    chunk, n_chunks = 32, 16
    X = rng.uniform(0.05, 0.95, size=(chunk * n_chunks, 8))
    held = held_out_chunks(X.shape[0], chunk, 0.25, seed=0)
    assert len(held) == 4
    mask = np.zeros(X.shape[0], dtype=bool)
    for c in held:
        mask[c * chunk : (c + 1) * chunk] = True
    poisoned = X.copy()
    poisoned[mask] = 1.0  # a legal value that would change J if these rows were trained on
    clean = train(
        write(tmp_path / "clean.h5", X, chunk=chunk), tmp_path / "a.h5", max_iter=3, validation_fraction=0.25
    )
    dirty = train(
        write(tmp_path / "dirty.h5", poisoned, chunk=chunk),
        tmp_path / "b.h5",
        max_iter=3,
        validation_fraction=0.25,
    )
    alone = train(write(tmp_path / "alone.h5", X[~mask], chunk=chunk), tmp_path / "c.h5", max_iter=3)
    np.testing.assert_array_equal(clean.history["cost"], dirty.history["cost"])
    np.testing.assert_allclose(clean.history["cost"], alone.history["cost"], rtol=1e-12)
    np.testing.assert_allclose(clean.theta, alone.theta, rtol=1e-10, atol=1e-13)
    # ...while the held-out numbers are those of the held-out rows.
    assert clean.validation["cost"][-1] == pytest.approx(
        dense_objective(clean.theta, X[mask], **SETTINGS)[0], rel=1e-11
    )
    assert dirty.validation["cost"][-1] != pytest.approx(clean.validation["cost"][-1], rel=1e-3)
    assert clean.info["validation"]["chunks"] == [int(c) for c in held]


def test_early_stop_keeps_the_best_parameters(tmp_path, rng):
    # Training rows near 0.1 and held-out rows near 0.9: once the sparsity term has
    # settled, fitting the one moves the outputs away from the other, so the held-out J
    # falls for a while and then rises.
    X = np.clip(rng.normal(0.1, 0.02, size=(256, 8)), 0.01, 0.99)
    H = np.clip(rng.normal(0.9, 0.02, size=(64, 8)), 0.01, 0.99)
    data = write(tmp_path / "train.h5", X)
    held = write(tmp_path / "held.h5", H)
    model = train(data, tmp_path / "m.h5", max_iter=50, validation=str(held), early_stop=2)
    costs = model.validation["cost"]
    best = int(np.argmin(costs))
    assert 0 < best < len(costs) - 1 and np.all(np.diff(costs[best:]) > 0), costs
    assert len(costs) == best + 1 + 2, "stopped after two validations without improvement"
    assert model.iterations == best + 2 and "early stop" in model.info["finished"]
    assert model.info["best_iteration"] == best
    # The kept parameters are those after `best` iterations: the same run stopped there.
    plain = train(data, None, max_iter=best)
    np.testing.assert_array_equal(model.theta, plain.theta)
    assert model.validation["cost"][best] == pytest.approx(
        dense_objective(plain.theta, H, **SETTINGS)[0], rel=1e-11
    )
    stored = streamae.load_model(tmp_path / "m.h5")
    assert stored.optimizer is None
    np.testing.assert_array_equal(stored.W1, unpack(plain.theta, 8, 5).W1)
    a2 = 1.0 / (1.0 + np.exp(-(X @ stored.W1.T + stored.b1)))
    np.testing.assert_allclose(stored.rho_hat, a2.mean(axis=0), rtol=1e-11)
    # J, its terms and |∇J| reported (model file, info) are those of the kept point (issue 25).
    J, grad, terms = dense_objective(plain.theta, X, **SETTINGS)
    assert stored.info["cost"] == pytest.approx(J, rel=1e-6)
    assert stored.info["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-5)
    assert stored.info["reconstruction"] == pytest.approx(terms["reconstruction"], rel=1e-6)
    assert stored.info["cost"] != pytest.approx(stored.history["cost"][-1], rel=1e-9)
    from streamae.describe import describe

    final = describe(tmp_path / "m.h5")["final"]
    assert final["cost"] == pytest.approx(J, rel=1e-6)
    assert final["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-5)


def test_conflicting_and_orphan_options_name_the_parameter(tmp_path, rng):
    data = write(tmp_path / "train.h5", rng.uniform(0.05, 0.95, size=(64, 4)))
    with pytest.raises(UsageError) as both:
        train(data, None, validation=str(data), validation_fraction=0.5)
    assert both.value.parameter == "validation_fraction"
    with pytest.raises(UsageError) as orphan:
        train(data, None, early_stop=3)
    assert orphan.value.parameter == "early_stop"
    with pytest.raises(UsageError) as bad:
        train(data, None, validation_fraction=1.5)
    assert bad.value.parameter == "validation_fraction"
    with pytest.raises(UsageError) as one_chunk:
        streamae.train(data, None, validation_fraction=0.5, stop_signals=False, chunk_rows=64)
    assert one_chunk.value.parameter == "validation_fraction"


def test_held_out_file_of_another_width_is_refused(tmp_path, rng):
    data = write(tmp_path / "train.h5", rng.uniform(0.05, 0.95, size=(64, 4)))
    held = write(tmp_path / "held.h5", rng.uniform(0.05, 0.95, size=(64, 5)))
    with pytest.raises(UsageError, match="rows of 5 values but the training data"):
        train(data, None, validation=str(held))
