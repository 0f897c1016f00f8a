"""Checkpoints and --resume: written when asked, valid at every moment, continued exactly.

Stops are requested in-process through the trainer's stop flag (what the signal
handlers set), at an iteration boundary or in the middle of a pass; the signals
themselves are tested in test_signals.py.  The reference for "exact" is an
uninterrupted run with the same settings: the resumed run must end on the same
parameters, history and counters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import StopAt, assert_same_run, invoke, start, write_patch_file

from streamae.errors import Interrupted, UsageError
from streamae.io.modelfile import load_model
from streamae.options import CHECKPOINT_TIME_SHARE, DEFAULT_CHECKPOINT_EVERY
from streamae.runtime.signals import StopFlag
from streamae.training import checkpoint as checkpoint_module
from streamae.training.checkpoint import CheckpointPolicy
from streamae.training.session import train

# Tolerances of 0 so that every run makes exactly --max-iter iterations.
# Two-pass: the stops below land on a given block of a pass, which in-core reads only once.
SETTINGS = {
    "hidden": 5,
    "max_iter": 25,
    "grad_tol": 0.0,
    "progress_tol": 0.0,
    "stop_signals": False,
    "scheme": "two-pass",
    "chunk_rows": 500,  # one chunk per read, so the stops below land on a known block
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """3000 rows of 16 values in [0.05, 0.95], in 6 chunks of 500."""
    values = np.random.default_rng(7).uniform(0.05, 0.95, size=(3000, 16)).astype(np.float32)
    return write_patch_file(tmp_path / "data.h5", values, chunk_rows=500)


@pytest.mark.parametrize(
    ("dtype", "where", "activation"),
    [
        ("float64", {"iteration": 7}, "sigmoid"),
        ("float64", {"block": 101}, "sigmoid"),  # mid-pass: the evaluation is abandoned
        ("float32", {"block": 77}, "sigmoid"),
        ("float64", {"iteration": 7}, "tanh"),
        ("float64", {"block": 101}, "tanh"),
        ("float32", {"block": 77}, "tanh"),
    ],
)
def test_a_stopped_run_resumes_exactly(data, tmp_path, dtype, where, activation):
    settings = {**SETTINGS, "activation": activation}
    reference = train(data, tmp_path / "reference.h5", dtype=dtype, **settings)
    assert reference.activation == activation
    flag = StopFlag()
    monitor = StopAt(flag, **where)
    output = tmp_path / "stopped.h5"
    with pytest.raises(Interrupted, match="stopped by SIGTERM after iteration") as caught:
        train(data, output, dtype=dtype, stop=flag, monitor=monitor, **settings)
    assert "resume=True" in str(caught.value) and str(output) in str(caught.value)
    stopped = load_model(output)
    assert 0 < stopped.iterations < reference.iterations
    assert stopped.info["finished"] == ""
    if "iteration" in where:
        assert stopped.iterations == where["iteration"]
    resumed = train(data, output, dtype=dtype, resume=True, **settings)
    assert_same_run(resumed, reference)
    assert_same_run(load_model(output), reference)


def test_checkpoints_every_k_iterations_are_valid_models(data, tmp_path):
    monitor = StopAt(StopFlag())
    train(data, tmp_path / "m.h5", dtype="float64", checkpoint_every=5, monitor=monitor, **SETTINGS)
    assert monitor.checkpoints == [5, 10, 15, 20]  # 25 is the final write
    assert load_model(tmp_path / "m.h5").info["finished"] == "reached 25 iterations"


def test_checkpoints_by_time_and_never(data, tmp_path):
    every_moment = StopAt(StopFlag())
    settings = {**SETTINGS, "max_iter": 4}
    train(
        data, tmp_path / "a.h5", checkpoint_every=0, checkpoint_minutes=1e-9, monitor=every_moment, **settings
    )
    assert every_moment.checkpoints == [1, 2, 3]
    never = StopAt(StopFlag())
    train(data, tmp_path / "b.h5", checkpoint_every=0, monitor=never, **settings)
    assert never.checkpoints == []


def test_checkpoint_policy_refuses_bad_values():
    with pytest.raises(UsageError, match="checkpoint_every must be an integer ≥ 0, got -1") as caught:
        CheckpointPolicy(every=-1)
    assert caught.value.parameter == "checkpoint_every"
    with pytest.raises(UsageError, match="checkpoint_minutes must be a finite number > 0, got 0"):
        CheckpointPolicy(minutes=0.0)


def test_the_command_line_default_is_the_library_default():
    from streamae.cli.train import train as train_command

    (option,) = [param for param in train_command.params if param.name == "checkpoint_every"]
    assert option.default is None and CheckpointPolicy().every is None


def test_the_default_checkpoints_every_ten_iterations_unless_writing_takes_too_long():
    due = CheckpointPolicy().due
    assert not due(9, DEFAULT_CHECKPOINT_EVERY - 1, 100.0, 0.0)
    assert due(10, DEFAULT_CHECKPOINT_EVERY, 1.0, 0.0)  # the first write: its cost is unknown
    # A write of 1 s waits until 1 / CHECKPOINT_TIME_SHARE seconds have passed.
    assert not due(20, DEFAULT_CHECKPOINT_EVERY, 0.99 / CHECKPOINT_TIME_SHARE, 1.0)
    assert due(20, DEFAULT_CHECKPOINT_EVERY, 1.01 / CHECKPOINT_TIME_SHARE, 1.0)
    assert due(3, 1, 61.0, 100.0) is False  # no minutes asked: time alone never makes one due
    assert CheckpointPolicy(minutes=1.0).due(3, 1, 61.0, 100.0)
    # An explicit count is kept whatever the writes cost.
    assert CheckpointPolicy(every=5).due(15, 5, 0.001, 100.0)
    assert not CheckpointPolicy(every=5).due(16, 6, 1000.0, 0.0)
    assert not CheckpointPolicy(every=0).due(10, 10, 1000.0, 0.0)


@pytest.mark.parametrize(("share", "expected"), [(1e-12, [10]), (1e12, [10, 20])])
def test_the_trainer_defers_the_default_checkpoint_by_the_time_its_write_took(
    data, tmp_path, monkeypatch, share, expected
):
    # The first checkpoint comes at iteration 10; the next only when its write (measured
    # by the trainer) is within the share of the time since: never for a tiny share.
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_TIME_SHARE", share)
    monitor = StopAt(StopFlag())
    train(data, tmp_path / "m.h5", dtype="float64", monitor=monitor, **SETTINGS)
    assert monitor.checkpoints == expected  # 25 is the final write


def test_resuming_a_finished_run_with_a_larger_max_iter_continues_it(data, tmp_path):
    longer = train(data, tmp_path / "longer.h5", dtype="float64", **SETTINGS)
    output = tmp_path / "m.h5"
    train(data, output, dtype="float64", keep_state=True, **{**SETTINGS, "max_iter": 10})
    resumed = train(data, output, dtype="float64", resume=True, **SETTINGS)
    assert_same_run(resumed, longer)


def test_resuming_a_converged_run_does_nothing(data, tmp_path):
    output = tmp_path / "m.h5"
    settings = {**SETTINGS, "grad_tol": 0.05}
    first = train(data, output, dtype="float64", keep_state=True, **settings)
    assert first.info["finished"].startswith("gradient below")
    again = train(data, output, dtype="float64", resume=True, **settings)
    assert again.iterations == first.iterations
    assert np.array_equal(again.theta, first.theta)


def test_a_stop_without_an_output_file_says_nothing_was_written(data):
    flag = StopFlag()
    with pytest.raises(Interrupted, match="no output file was given, so nothing was written"):
        train(data, dtype="float64", stop=flag, monitor=StopAt(flag, iteration=2), **SETTINGS)


@pytest.mark.parametrize(
    ("block", "fragment"),
    [(2, "while checking the values; nothing new"), (8, "before the first iteration; nothing new")],
)
def test_a_stop_before_the_first_iteration_writes_nothing(data, tmp_path, block, fragment):
    flag = StopFlag()
    with pytest.raises(Interrupted, match=fragment):
        train(data, tmp_path / "m.h5", stop=flag, monitor=StopAt(flag, block=block), **SETTINGS)
    assert not (tmp_path / "m.h5").exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (["--hidden", "6"], "it was trained with --hidden 5, not 6"),
        (["--rho", "0.05"], "it was trained with --rho 0.01, not 0.05"),
        (["--lambda", "0.001"], "it was trained with --lambda 0.0001, not 0.001"),
        (["--decoder", "linear"], "it was trained with --decoder sigmoid, not linear"),
        (["--activation", "tanh"], "it was trained with --activation sigmoid, not tanh"),
        (["--dtype", "float32"], "it was trained with --dtype float64, not float32"),
    ],
)
def test_resume_with_other_hyperparameters_is_refused(data, tmp_path, change, fragment):
    output = tmp_path / "m.h5"
    base = ["train", data, "-o", output, "--hidden", "5", "--max-iter", "3", "--dtype", "float64", "-q"]
    base.append("--keep-state")
    assert invoke(*base).exit_code == 0
    before = output.read_bytes()
    result = invoke(*base, "--resume", *change)
    assert result.exit_code == 2, result.output
    assert f"Error: {output}: cannot resume: {fragment}" in result.stderr
    assert output.read_bytes() == before  # the checkpoint is untouched


def test_resume_on_another_data_file_is_refused(data, tmp_path):
    other = write_patch_file(tmp_path / "other.h5", np.full((3000, 16), 0.5, dtype=np.float32))
    output = tmp_path / "m.h5"
    assert (
        invoke("train", data, "-o", output, "--hidden", "5", "--max-iter", "2", "--keep-state").exit_code == 0
    )
    result = invoke("train", other, "-o", output, "--hidden", "5", "--resume", "-q")
    assert result.exit_code == 2
    assert (
        f"cannot resume: it was trained with the data file {data.resolve()}, not {other.resolve()}"
        in result.stderr
    )
    shorter = write_patch_file(tmp_path / "data.h5", np.full((2000, 16), 0.5, dtype=np.float32))
    result = invoke("train", shorter, "-o", output, "--hidden", "5", "--resume", "-q")
    assert "it was trained with the data shape [3000, 16], not [2000, 16]" in result.stderr


def test_resume_without_a_checkpoint_is_refused(data, tmp_path):
    result = invoke("train", data, "-o", tmp_path / "none.h5", "--resume")
    assert result.exit_code == 2
    assert "none.h5: no such model file to resume from; train without --resume first." in result.stderr


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    """SIGKILL while the model file is being rewritten: the last complete checkpoint survives.

    A large hidden layer makes each write take milliseconds (the correction pairs grow
    every iteration), and a checkpoint is written after every iteration; the test
    watches for the temporary file of a write in progress and kills the run then.
    """
    values = np.random.default_rng(3).uniform(0.05, 0.95, size=(400, 64)).astype(np.float32)
    data = write_patch_file(tmp_path / "data.h5", values, chunk_rows=200)
    output = tmp_path / "m.h5"
    args = ["train", str(data), "-o", str(output), "--hidden", "200", "--max-iter", "400"]
    args += ["--grad-tol", "0", "--progress-tol", "0", "--checkpoint-every", "1", "-q"]
    for _attempt in range(5):
        output.unlink(missing_ok=True)
        process = start(args)
        try:
            torn = _wait_for_a_write_in_progress(output, process)
            if torn is None:
                continue
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            if torn.exists():
                break  # killed with the write unfinished: what this test is about
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
    else:
        pytest.fail("could not kill the run during a checkpoint write in 5 attempts")
    survivor = load_model(output)  # complete and readable
    assert survivor.iterations >= 1 and survivor.info["finished"] == ""
    # The next run continues from it and clears the dead writer's temporary file.
    resumed = train(
        data, output, hidden=200, max_iter=survivor.iterations + 1, resume=True, stop_signals=False
    )
    assert resumed.iterations == survivor.iterations + 1
    assert not torn.exists()


def _wait_for_a_write_in_progress(
    output: Path, process: subprocess.Popen, timeout: float = 60
) -> Path | None:
    """The temporary file of a checkpoint write after the first, once it appears."""
    deadline = time.monotonic() + timeout
    folder = output.parent
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists():
            for name in os.listdir(folder):
                if name.startswith(f".{output.name}.") and name.endswith(".streamae-tmp"):
                    return folder / name
    return None
