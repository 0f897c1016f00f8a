"""The coarse-to-fine warm start: schedules, stages in the model file, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import (
    IMAGES_DIR,
    StopAt,
    assert_same_run,
    needs_mpi,
    orientation_coherence,
    relative_difference,
    run,
    write_patch_file,
)

from streamae.errors import Interrupted, UsageError
from streamae.io.modelfile import load_model
from streamae.io.patchfile import inspect_patch_file
from streamae.runtime.signals import StopFlag
from streamae.training.evaluate import objective
from streamae.training.session import train
from streamae.training.warmstart import (
    STAGE_BUDGET_FULL_EVALUATIONS,
    auto_sizes,
    parse_schedule,
    plan_warm_start,
)

# Tolerances of 0: every stage makes exactly its budget of iterations.
SETTINGS = {
    "hidden": 5,
    "max_iter": 12,
    "grad_tol": 0.0,
    "progress_tol": 0.0,
    "tolerance": 0.0,
    "stop_signals": False,
    "scheme": "two-pass",
    "dtype": "float64",
    "warm_start": "500,1000",
    "chunk_rows": 250,  # one chunk per read, so a stop lands on a known block
}
ROWS = 3000


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """3000 rows of 16 values in 12 chunks of 250, ordered (a ramp) as a strided extract is."""
    generator = np.random.default_rng(11)
    ramp = np.linspace(0.1, 0.8, ROWS)[:, None]
    values = np.clip(ramp + generator.uniform(-0.1, 0.1, size=(ROWS, 16)), 0.05, 0.95)
    return write_patch_file(tmp_path / "data.h5", values.astype(np.float32), chunk_rows=250)


def test_schedules_parse_or_name_the_parameter():
    assert parse_schedule("none") == "none" and parse_schedule(" AUTO ") == "auto"
    assert parse_schedule("20000,200_000") == [20000, 200000]
    for bad in ("", "fast", "0", "-5", "20000,2000", "1e4"):
        with pytest.raises(UsageError, match="warm_start") as caught:
            parse_schedule(bad)
        assert caught.value.parameter == "warm_start"


def test_auto_grows_tenfold_from_five_rows_per_parameter_above_25_rows_per_parameter():
    p = 2 * 64 * 25 + 25 + 64  # the notes' 8x8 -> 25
    assert auto_sizes(10**6, p) == [5 * p]
    assert auto_sizes(10**7, p) == [5 * p, 50 * p]
    assert auto_sizes(10**8, p) == [5 * p, 50 * p, 500 * p]
    assert auto_sizes(25 * p + 1, p) == [5 * p]


def test_auto_takes_a_twentieth_and_a_fifth_up_to_25_rows_per_parameter_unless_too_small():
    p = 2 * 64 * 25 + 25 + 64
    assert auto_sizes(25 * p, p) == [25 * p // 20, 25 * p // 5]  # at the threshold: 5·p is a fifth
    assert auto_sizes(10_000, 2 * 784 * 196 + 196 + 784) == [500, 2000]  # MNIST's 10⁴ digits
    assert auto_sizes(5120, p) == [256, 1024]  # the smallest first sample
    assert auto_sizes(5119, p) == []  # a twentieth below 256 rows: the plain run


def test_a_plan_rounds_to_whole_chunks_and_budgets_each_stage(data):
    layout = inspect_patch_file(data)
    plan = plan_warm_start("600,1000", layout, 100, max_iter=400)
    assert plan.sizes == [750, 1000, ROWS]  # 600 rows need 3 chunks of 250: 0, 5.5 -> 6, 11
    first, second, last = plan.stages
    assert first.chunks.tolist() == [0, 6, 11] and last.chunks is None
    # At most 40 full evaluations' worth of rows per sample stage, never above max_iter.
    assert first.iterations == -(-STAGE_BUDGET_FULL_EVALUATIONS * ROWS // 750) == 160
    assert plan_warm_start("600,1000", layout, 100, max_iter=100).stages[0].iterations == 100
    assert plan_warm_start("600", layout, 100, max_iter=7).stages[0].iterations == 7
    assert plan_warm_start("none", layout, 100, max_iter=400).sizes == [ROWS]
    assert plan_warm_start("500,1000", layout, 100, max_iter=0).sizes == [ROWS]
    with pytest.raises(UsageError, match="not a sample") as caught:
        plan_warm_start("2900", layout, 100, max_iter=400)
    assert caught.value.parameter == "warm_start"


def test_stages_are_recorded_and_the_last_is_the_full_objective(data, tmp_path):
    model = train(data, tmp_path / "model.h5", **SETTINGS)
    assert model.iterations == 36
    stage, rows = model.history["stage"], model.history["sample_rows"]
    assert stage.tolist() == [1] * 12 + [2] * 12 + [3] * 12
    assert rows.tolist() == [500] * 12 + [1000] * 12 + [ROWS] * 12
    record = load_model(tmp_path / "model.h5").info["warm_start"]
    assert record["schedule"] == "500,1000" and record["stages"] == [500, 1000, ROWS]
    # The last stage's J is the notes' full-batch J at the final weights.
    full = objective(data, model.theta, hidden=5, dtype="float64")
    assert abs(model.info["cost"] - full.cost) <= 1e-12 * abs(full.cost)
    assert abs(model.history["cost"][-1] - full.cost) <= 1e-12 * abs(full.cost)


def test_warm_start_none_is_the_plain_run(data, tmp_path):
    settings = {**SETTINGS, "max_iter": 15}
    del settings["warm_start"]
    plain = train(data, tmp_path / "plain.h5", **settings)  # the default
    none = train(data, tmp_path / "none.h5", warm_start="none", **settings)
    assert np.array_equal(none.theta, plain.theta)
    assert np.array_equal(none.history["cost"], plain.history["cost"])
    assert none.history["stage"].tolist() == [1] * 15
    assert none.history["sample_rows"].tolist() == [ROWS] * 15


@pytest.mark.parametrize(
    "where",
    [
        {"iteration": 5},  # inside the first sample stage
        {"iteration": 12},  # at its end: the stop lands on stage 2's first evaluation
        {"iteration": 19},  # inside the second sample stage
        {"iteration": 30},  # inside the full-data stage
        # Mid-pass, in the full-data stage: 12 blocks check the values, 56 + 128 read the
        # samples; float32 rows computed in float64 are decoded per read, which the lanes
        # make themselves (two reads of 1,500 rows per pass on two threads).
        {"block": 201},
    ],
)
def test_a_warm_run_stopped_in_any_stage_resumes_exactly(data, tmp_path, where):
    reference = train(data, tmp_path / "reference.h5", **SETTINGS)
    flag = StopFlag()
    output = tmp_path / "stopped.h5"
    with pytest.raises(Interrupted, match="stopped by SIGTERM after iteration") as caught:
        train(data, output, stop=flag, monitor=StopAt(flag, **where), **SETTINGS)
    assert "resume=True" in str(caught.value)
    stopped = load_model(output)
    assert 0 < stopped.iterations < reference.iterations
    if "iteration" in where:
        assert stopped.iterations == where["iteration"]
    else:
        assert stopped.iterations >= 24  # the sample stages were done
    resumed = train(data, output, resume=True, **SETTINGS)
    assert_same_run(resumed, reference)  # bitwise in float64
    assert np.array_equal(resumed.history["stage"], reference.history["stage"])


def test_resuming_with_another_schedule_is_refused(data, tmp_path):
    flag = StopFlag()
    output = tmp_path / "stopped.h5"
    with pytest.raises(Interrupted):
        train(data, output, stop=flag, monitor=StopAt(flag, iteration=5), **SETTINGS)
    with pytest.raises(UsageError, match="warm-start stages") as caught:
        train(data, output, resume=True, **{**SETTINGS, "warm_start": "none"})
    assert caught.value.parameter == "warm_start"


def test_old_model_files_without_stages_still_load(data, tmp_path):
    import h5py

    path = tmp_path / "old.h5"
    train(data, path, **{**SETTINGS, "warm_start": "none", "max_iter": 3, "keep_state": True})
    with h5py.File(path, "a") as handle:  # as written before the warm start existed
        del handle["history/stage"], handle["history/sample_rows"]
    old = load_model(path)
    assert old.history["stage"].tolist() == [1, 1, 1]
    assert old.history["sample_rows"].tolist() == [ROWS] * 3
    resumed = train(data, path, resume=True, **{**SETTINGS, "warm_start": "none", "max_iter": 5})
    assert resumed.iterations == 5


@pytest.mark.slow
def test_warm_started_features_are_oriented_edges(tmp_path):

    from streamae.compute.parameters import initialize, unpack
    from streamae.extraction.pipeline import extract

    patches = tmp_path / "patches.h5"
    images = sorted(str(p) for p in IMAGES_DIR.glob("*.png"))
    extract(images, patches, patch_size=8, num_patches=40_000, normalize="ufldl", seed=0)
    model = train(patches, tmp_path / "model.h5", warm_start="4096", max_iter=200, stop_signals=False)
    assert model.history["sample_rows"][0] == 4096 and model.history["sample_rows"][-1] == 40_000
    trained = np.median(orientation_coherence(model.W1, (8, 8)))
    untrained = np.median(orientation_coherence(unpack(initialize(64, 25), 64, 25).W1, (8, 8)))
    assert untrained < 0.3 < 0.6 < trained


@pytest.mark.mpi
@needs_mpi
def test_ranks_share_each_sample_and_give_one_process_answer(data, tmp_path):
    """Two ranks split every stage's chunks (stage 1: one chunk each): same stages, same θ."""
    args = ["--hidden", "5", "--dtype", "float64", "-q", "--force", "--max-iter", "8"]
    args += ["--warm-start", "500,1000", "--grad-tol", "0", "--progress-tol", "0", "--tolerance", "0"]
    for name, ranks in (("one.h5", None), ("two.h5", 2)):
        done = run(["train", str(data), "-o", str(tmp_path / name), *args], ranks)
        assert done.returncode == 0, done.stderr
    one, two = load_model(tmp_path / "one.h5"), load_model(tmp_path / "two.h5")
    assert two.info["ranks"] == 2 and two.iterations == one.iterations == 24
    assert np.array_equal(two.history["sample_rows"], one.history["sample_rows"])
    assert relative_difference(two.theta, one.theta) < 1e-9


def test_the_command_reports_each_stage_and_logs_it(data, tmp_path):
    import json

    from click.testing import CliRunner

    from streamae.cli.main import cli

    log = tmp_path / "log.jsonl"
    args = ["train", str(data), "-o", str(tmp_path / "m.h5"), "--hidden", "5", "--max-iter", "3"]
    done = CliRunner().invoke(cli, [*args, "--warm-start", "500,1000", "--log", str(log)])
    assert done.exit_code == 0, done.output
    assert (
        "stage 1 of 3: 500 rows in 2 chunks" in done.output and "stage 3 of 3: all 3,000 rows" in done.output
    )
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records = [r for r in records if r.get("event") != "start"]  # the run header
    assert [(r["stage"], r["sample_rows"]) for r in records] == [(1, 500)] * 3 + [(2, 1000)] * 3 + [
        (3, ROWS)
    ] * 3
    bad = CliRunner().invoke(cli, [*args, "--warm-start", "fast", "-f"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "--warm-start must be none, auto or increasing sample sizes" in bad.output
