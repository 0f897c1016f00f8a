"""A run that knows when the model is done (issue 24): the relative-progress rule, the
iterations a budget counts, the default warm start's choice, resume and MPI with the
new defaults.  Modules under test: compute/lbfgs.py, training/loop.py, training/stopping.py,
training/warmstart.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import StopAt, assert_same_run, needs_mpi, relative_difference, run, write_patch_file

from streamae.compute.lbfgs import StopRules, minimize, relative_progress_reason
from streamae.errors import Interrupted
from streamae.io.modelfile import load_model
from streamae.options import DEFAULT_TOLERANCE, FEW_ROWS_TOLERANCE
from streamae.runtime.signals import StopFlag
from streamae.training.loop import TrainingMonitor
from streamae.training.session import train
from streamae.training.stopping import choose_tolerance
from streamae.training.warmstart import AUTO_MIN_ROWS_PER_PARAMETER, choose_schedule

P = 2 * 16 * 5 + 5 + 16  # parameters of 16 -> 5 -> 16
ROWS = 12_000  # 66 rows per parameter: above auto's threshold of 25
COMMON = {"hidden": 5, "dtype": "float64", "chunk_rows": 500, "stop_signals": False, "scheme": "two-pass"}


def _values(rows: int, seed: int = 3) -> np.ndarray:
    generator = np.random.default_rng(seed)
    ramp = np.linspace(0.1, 0.8, rows)[:, None]
    return np.clip(ramp + generator.uniform(-0.1, 0.1, size=(rows, 16)), 0.05, 0.95)


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """12,000 rows of 16 values in 24 chunks of 500: large enough for auto to warm-start."""
    return write_patch_file(tmp_path / "big.h5", _values(ROWS), chunk_rows=500)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """3,000 rows (16.6 rows per parameter): below auto's threshold."""
    return write_patch_file(tmp_path / "small.h5", _values(3000, seed=4), chunk_rows=500)


def _window_drops(costs: np.ndarray, window: int) -> np.ndarray:
    """(J[k - window] - J[k]) / J[k] for every k with a full window (plain NumPy twin)."""
    return (costs[:-window] - costs[window:]) / np.abs(costs[window:])


def test_the_rule_stops_on_a_planted_plateau_and_says_why():
    rules = StopRules(tolerance=1e-3, window=3)
    falling = [10.0, 9.0, 8.0, 7.0, 6.0]
    assert relative_progress_reason(falling, rules) == ""
    plateau = falling + [5.999, 5.9985, 5.998]  # fell 0.033% over the last 3 iterations
    reason = relative_progress_reason(plateau, rules)
    assert reason.startswith("J fell by 0.00033 of its value over the last 3 iterations")
    assert "less than the tolerance 0.001" in reason
    assert relative_progress_reason(plateau[:3], rules) == ""  # not a full window yet
    assert relative_progress_reason(plateau, StopRules(tolerance=0.0, window=3)) == ""  # off


def test_minimize_stops_at_a_plateau_and_not_while_improving():
    # J = 1 + Σ exp(-x): every step keeps lowering it, by less and less.
    def fun(x):
        return 1.0 + float(np.sum(np.exp(-x))), -np.exp(-x)

    improving = minimize(fun, np.zeros(3), StopRules(max_iter=6, grad_tol=0, progress_tol=0, tolerance=1e-9))
    assert improving.finished == "reached 6 iterations"
    done = minimize(fun, np.zeros(3), StopRules(max_iter=500, grad_tol=0, progress_tol=0, tolerance=1e-3))
    assert done.finished.startswith("J fell by") and done.iteration < 500


class Records(TrainingMonitor):
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.messages: list[str] = []

    def on_iteration(self, record: dict) -> None:
        self.records.append(record)

    def on_message(self, text: str) -> None:
        self.messages.append(text)


def test_a_training_run_stops_at_the_first_iteration_that_meets_the_rule(small, tmp_path):
    model = train(small, tmp_path / "m.h5", **COMMON, max_iter=400, tolerance=1e-3, tolerance_window=4)
    costs = model.history["cost"]
    drops = _window_drops(costs, 4)
    assert model.iterations < 400 and model.info["finished"].startswith("J fell by")
    assert "over the last 4 iterations, less than the tolerance 0.001" in model.info["finished"]
    assert drops[-1] < 1e-3 and np.all(drops[:-1] >= 1e-3)  # stopped at the first, not later


def test_a_run_still_improving_is_not_stopped(small, tmp_path):
    model = train(small, tmp_path / "m.h5", **COMMON, max_iter=25, tolerance=1e-4, tolerance_window=5)
    assert model.info["finished"] == "reached 25 iterations"
    assert np.all(_window_drops(model.history["cost"], 5) >= 1e-4)  # it was still falling


def test_default_is_auto_above_the_threshold_and_none_below_and_the_header_says_why(big, small, tmp_path):
    assert choose_schedule("auto", AUTO_MIN_ROWS_PER_PARAMETER * P + 1, P)[0] == [5 * P]
    chosen, reason = choose_schedule("auto", AUTO_MIN_ROWS_PER_PARAMETER * P, P)
    assert chosen == "none" and "not above 25 rows per parameter" in reason  # 25·P / 20 < 256
    chosen, reason = choose_schedule("auto", 40_000, 1000)  # 40 rows per parameter
    assert chosen == [5000] and "above 25 rows per parameter" in reason
    chosen, reason = choose_schedule("auto", 20_000, 1000)  # 20 rows per parameter
    assert chosen == [1000, 4000] and "(a twentieth and a fifth of the data)" in reason
    shown = {}
    for name, data in (("big", big), ("small", small)):
        monitor = Records()
        model = train(data, tmp_path / f"{name}-model.h5", **COMMON, max_iter=3, monitor=monitor)
        header = monitor.messages[0]
        shown[name] = (header, model.info["warm_start"]["stages"])
    assert (
        "warm start: auto chose 1 sample stage(s) of 905 rows because the data holds 66 rows"
        in shown["big"][0]
    )
    assert shown["big"][1] == [1000, ROWS]  # 905 rows round up to two chunks of 500
    assert "warm start: auto chose none because the data holds 16.6 rows per parameter" in shown["small"][0]
    assert shown["small"][1] == [3000]


def test_the_default_tolerance_is_looser_with_fewer_rows_than_parameters():
    assert choose_tolerance(None, 10_000, 308_308)[0] == FEW_ROWS_TOLERANCE == 3e-4  # MNIST 784 -> 196
    value, reason = choose_tolerance(None, 308_308, 308_308)
    assert value == DEFAULT_TOLERANCE == 1e-4 and "at least one row per parameter" in reason
    assert choose_tolerance(5e-5, 10, 1000) == (
        5e-5,
        "5e-05, as set (by the caller, or by the checkpoint resumed)",
    )
    assert choose_tolerance(0.0, 10, 1000)[0] == 0.0  # the notes' run: the rule off


def test_a_run_on_fewer_rows_than_parameters_says_its_tolerance_and_resumes_with_it(small, tmp_path):
    wide = {**COMMON, "hidden": 100, "max_iter": 6}  # 3,316 parameters for 3,000 rows
    monitor = Records()
    whole = train(small, tmp_path / "whole.h5", **wide, monitor=monitor)
    assert (
        "tolerance: 0.0003 because the data holds fewer rows than the model has parameters"
        in (monitor.messages[0])
    )
    assert whole.info["tolerance"] == 3e-4  # stored as the number the run used
    flag = StopFlag()
    stopped = tmp_path / "stopped.h5"
    with pytest.raises(Interrupted):
        train(small, stopped, **wide, stop=flag, monitor=StopAt(flag, iteration=3))
    resumed = train(small, stopped, **wide, resume=True)
    assert resumed.info["tolerance"] == 3e-4
    assert_same_run(resumed, whole)


def test_max_iter_counts_full_data_iterations_and_the_report_never_exceeds_it(big, tmp_path):
    model = train(big, tmp_path / "m.h5", **COMMON, max_iter=7, tolerance=0.0)
    full = model.history["sample_rows"] == ROWS
    assert int(np.sum(full)) == 7 and int(np.sum(~full)) > 0  # the sample stage is reported apart
    assert model.info["finished"] == "reached 7 full-data iterations"


def _defaults_reference(big: Path, tmp_path: Path):
    return train(big, tmp_path / "reference.h5", **COMMON, max_iter=30)


def test_a_default_run_stopped_in_either_stage_resumes_exactly(big, tmp_path):
    reference = _defaults_reference(big, tmp_path)
    stages = reference.history["stage"]
    first_stage = int(np.sum(stages == 1))
    assert first_stage > 2 and int(np.sum(stages == 2)) > 3  # both stages ran
    for iteration in (first_stage // 2, first_stage, first_stage + 3):
        flag = StopFlag()
        output = tmp_path / f"stopped-{iteration}.h5"
        with pytest.raises(Interrupted):
            train(big, output, **COMMON, max_iter=30, stop=flag, monitor=StopAt(flag, iteration=iteration))
        assert load_model(output).iterations == iteration
        resumed = train(big, output, resume=True, **COMMON, max_iter=30)
        assert_same_run(resumed, reference)


def test_a_finished_run_resumed_with_its_settings_does_nothing_more(small, tmp_path):
    output = tmp_path / "m.h5"
    settings = {**COMMON, "max_iter": 400, "tolerance": 1e-3, "tolerance_window": 4, "keep_state": True}
    done = train(small, output, **settings)
    again = train(small, output, resume=True, **settings)
    assert again.iterations == done.iterations and again.info["finished"] == done.info["finished"]


@pytest.mark.mpi
@needs_mpi
def test_two_ranks_give_one_process_answer_with_the_defaults(big, tmp_path):
    args = ["--hidden", "5", "--dtype", "float64", "-q", "--force", "--max-iter", "30", "--chunk-rows", "500"]
    for name, ranks in (("one.h5", None), ("two.h5", 2)):
        done = run(["train", str(big), "-o", str(tmp_path / name), *args], ranks)
        assert done.returncode == 0, done.stderr
    one, two = load_model(tmp_path / "one.h5"), load_model(tmp_path / "two.h5")
    assert one.info["warm_start"]["stages"] == two.info["warm_start"]["stages"] == [1000, ROWS]
    assert two.iterations == one.iterations and two.info["finished"] == one.info["finished"]
    assert relative_difference(two.theta, one.theta) < 1e-9


def test_the_defaults_keep_held_out_evaluation_working(big, tmp_path):
    held = write_patch_file(tmp_path / "held.h5", _values(1000, seed=9), chunk_rows=500)
    model = train(big, tmp_path / "v.h5", **COMMON, max_iter=4, validation=str(held))
    assert model.info["warm_start"]["stages"] == [1000, ROWS]  # auto warm-started
    assert len(model.validation["cost"]) == 5  # the start and every full-data iteration
    monitor = Records()
    fraction = train(big, tmp_path / "f.h5", **COMMON, max_iter=4, validation_fraction=0.1, monitor=monitor)
    assert fraction.info["warm_start"]["stages"] == [fraction.data["shape"][0]]
    assert "auto chose none because validation_fraction holds chunks of the file out" in monitor.messages[0]


def test_the_finish_line_counts_full_data_iterations_and_passes(big, tmp_path):
    from click.testing import CliRunner

    from streamae.cli.main import cli
    from streamae.training.warmstart import full_data_passes

    args = ["train", str(big), "-o", str(tmp_path / "m.h5"), "--hidden", "5", "--max-iter", "6"]
    done = CliRunner().invoke(cli, [*args, "--chunk-rows", "500", "--tolerance", "0"])
    assert done.exit_code == 0, done.output
    model = load_model(tmp_path / "m.h5")
    on_samples = int(np.sum(model.history["sample_rows"] != ROWS))
    passes = full_data_passes(model.history, ROWS)[-1]
    # A sample evaluation counts its rows over all of them (plain NumPy twin of the sum).
    steps = np.diff(model.history["evaluations"], prepend=0.0)
    assert passes == pytest.approx(float(np.sum(steps * model.history["sample_rows"] / ROWS)))
    line = next(text for text in done.output.splitlines() if text.startswith("finished after"))
    assert line.startswith(f"finished after 6 full-data iterations and {on_samples} on samples (reached 6 ")
    assert f"({passes:.1f} full-data passes)" in line
