"""Held-out evaluation: metrics equal a dense NumPy twin, held-out rows never train, early stop."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import dense_objective

import streamae
from streamae.cli.main import cli
from streamae.compute.parameters import initialize, unpack
from streamae.errors import UsageError
from streamae.render import plot_curves
from streamae.training.validation import Validation, held_out_ranges, parse_validation, split_ranges

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
    held = [(32, 96), (160, 170)]
    train, out = split_ranges((0, 230), held)
    assert out == [(32, 96), (160, 170)]
    assert train == [(0, 32), (96, 160), (170, 230)]
    assert split_ranges((40, 165), held) == ([(96, 160)], [(40, 96), (160, 165)])
    assert split_ranges((100, 150), held) == ([(100, 150)], [])


@settings(max_examples=200, deadline=None)
@given(
    n_rows=st.integers(2, 5000),
    unit=st.integers(1, 700),
    fraction=st.floats(0.001, 0.999),
    seed=st.integers(0, 2**32 - 1),
)
def test_held_out_ranges_hold_the_fraction_exactly(n_rows, unit, fraction, seed):
    ranges = held_out_ranges(n_rows, unit, fraction, seed)
    rows = [r for a, b in ranges for r in range(a, b)]
    assert len(rows) == min(n_rows - 1, max(1, round(fraction * n_rows)))
    assert rows == sorted(set(rows)) and 0 <= rows[0] and rows[-1] < n_rows
    # Whole units, but for at most one unit split between the two sides.
    units = {}
    for r in rows:
        units[r // unit] = units.get(r // unit, 0) + 1
    split = [u for u, count in units.items() if count != min(unit, n_rows - u * unit)]
    assert len(split) <= 1


@settings(max_examples=100, deadline=None)
@given(
    n_rows=st.integers(2, 3000), unit=st.integers(1, 400), ranks=st.integers(1, 5), seed=st.integers(0, 99)
)
def test_the_ranks_shares_split_into_the_same_held_out_rows(n_rows, unit, ranks, seed):
    """Under MPI each rank splits its own share; together they hold out the file's rows once."""
    held = held_out_ranges(n_rows, unit, 0.3, seed)
    bounds = np.linspace(0, n_rows, ranks + 1).astype(int)
    train_rows, held_rows = [], []
    for rank in range(ranks):
        train, out = split_ranges((int(bounds[rank]), int(bounds[rank + 1])), held)
        train_rows += [r for a, b in train for r in range(a, b)]
        held_rows += [r for a, b in out for r in range(a, b)]
    assert held_rows == [r for a, b in held for r in range(a, b)]
    assert sorted(train_rows + held_rows) == list(range(n_rows))


def test_validation_fraction_holds_what_it_says(tmp_path, rng):
    """The issue's case: 0.1 of 10,000 rows held 18% (whole chunks); now 1,000 rows, said."""
    data = write(tmp_path / "train.h5", rng.uniform(0.05, 0.95, size=(10_000, 4)), chunk=1724)
    result = CliRunner().invoke(
        cli,
        ["train", str(data), "-o", str(tmp_path / "m.h5"), "--max-iter", "1", "--hidden", "2"]
        + ["--validation-fraction", "0.1"],
    )
    assert result.exit_code == 0, result.output
    assert f"held out: 1,000 rows of {data} (10.00% of its 10,000 rows, 0.1 asked)" in result.output
    info = streamae.load_model(tmp_path / "m.h5").info["validation"]
    assert info["rows"] == 1000 and sum(b - a for a, b in info["ranges"]) == 1000


def _scripted(costs):
    """An evaluate() returning the given held-out J values in turn."""
    from types import SimpleNamespace

    values = iter(costs)

    def evaluate(theta):
        cost = next(values)
        return SimpleNamespace(
            cost=cost, reconstruction=cost, weight_decay=0.0, sparsity=0.0, rho_hat=np.zeros(2)
        )

    return evaluate


def test_early_stop_ignores_improvements_below_the_minimum():
    # Falls fast, then creeps down by ~1e-6 relative per validation: wiggles at the floor.
    costs = [10.0, 9.0, 8.5, 8.49999, 8.49998, 8.49997, 8.49996, 8.49995]
    strict = Validation(_scripted(costs), early_stop=3, min_improvement=0.0)
    assert [strict.after_iteration(i, np.full(1, i), {}) for i in range(len(costs))] == [None] * 8
    loose = Validation(_scripted(costs), early_stop=3, min_improvement=1e-3)
    reasons = [loose.after_iteration(i, np.full(1, i), {}) for i in range(6)]
    assert reasons[:5] == [None] * 5 and "kept the parameters of iteration 5" in reasons[5]
    # Kept: the lowest J seen (iteration 5), though it was no improvement by the rule.
    assert loose.best_iteration == 5 and loose.best_cost == 8.49997 and loose.best_theta[0] == 5


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
    held = held_out_ranges(X.shape[0], chunk, 0.25, seed=0)
    mask = np.zeros(X.shape[0], dtype=bool)
    for a, b in held:
        mask[a:b] = True
    assert mask.sum() == 128
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
    assert clean.info["validation"]["ranges"] == [list(r) for r in held]


def test_early_stop_keeps_the_best_parameters(tmp_path, rng):
    # Training rows near 0.1 and held-out rows near 0.9: once the sparsity term has
    # settled, fitting the one moves the outputs away from the other, so the held-out J
    # falls for a while and then rises.
    X = np.clip(rng.normal(0.1, 0.02, size=(256, 8)), 0.01, 0.99)
    H = np.clip(rng.normal(0.9, 0.02, size=(64, 8)), 0.01, 0.99)
    data = write(tmp_path / "train.h5", X)
    held = write(tmp_path / "held.h5", H)
    model = train(
        data, tmp_path / "m.h5", max_iter=50, validation=str(held), early_stop=2, early_stop_min_improvement=0
    )
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
    one_row = write(tmp_path / "one.h5", rng.uniform(0.05, 0.95, size=(1, 4)), chunk=1)
    with pytest.raises(UsageError) as alone:
        streamae.train(one_row, None, validation_fraction=0.5, stop_signals=False)
    assert alone.value.parameter == "validation_fraction"


def test_held_out_file_of_another_width_is_refused(tmp_path, rng):
    data = write(tmp_path / "train.h5", rng.uniform(0.05, 0.95, size=(64, 4)))
    held = write(tmp_path / "held.h5", rng.uniform(0.05, 0.95, size=(64, 5)))
    with pytest.raises(UsageError, match="rows of 5 values but the training data"):
        train(data, None, validation=str(held))
