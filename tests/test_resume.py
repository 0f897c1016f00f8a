"""Resume without retyping: settings from the checkpoint, small finished models, messages.

The reference for "exact" is today's resume with every option typed again: a resume
with nothing but ``--resume`` must end on bit-identical float64 parameters.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import Recorder, uniform_patch_file, write_patch_file

from streamae.cli.main import cli
from streamae.cli.train import resume_command
from streamae.errors import Interrupted, UsageError
from streamae.io.modelfile import HISTORY_FIELDS, load_model
from streamae.runtime.signals import StopFlag
from streamae.training.resume import resolve_settings
from streamae.training.session import train

# Every option away from its default, so that a resume that forgot one would differ.
OPTIONS = [
    "--hidden", "7", "--rho", "0.05", "--beta", "2.5", "--lambda", "0.001", "--dtype", "float64",
    "--max-iter", "14", "--grad-tol", "0", "--progress-tol", "0", "--chunk-rows", "300",
    "--scheme", "two-pass", "--seed", "3",
]  # fmt: skip
LIBRARY = {
    "hidden": 7,
    "rho": 0.05,
    "beta": 2.5,
    "lam": 0.001,
    "dtype": "float64",
    "max_iter": 14,
    "grad_tol": 0.0,
    "progress_tol": 0.0,
    "chunk_rows": 300,
    "scheme": "two-pass",
    "seed": 3,
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return uniform_patch_file(tmp_path / "data.h5", seed=11, rows=1200, chunk_rows=400)


def invoke(*args) -> object:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    print(result.output)
    return result


def stopped_checkpoint(data: Path, output: Path) -> Interrupted:
    flag = StopFlag()
    with pytest.raises(Interrupted) as caught:
        train(data, output, stop=flag, monitor=Recorder(flag, 5), stop_signals=False, **LIBRARY)
    assert load_model(output).iterations == 5
    return caught.value


def test_resume_with_nothing_but_resume_is_bitwise_the_resume_with_every_option(data, tmp_path):
    first = tmp_path / "a.h5"
    stopped_checkpoint(data, first)
    second = tmp_path / "b.h5"
    shutil.copyfile(first, second)
    assert invoke("train", data, "-o", first, "--resume", "-q").exit_code == 0
    assert invoke("train", data, "-o", second, *OPTIONS, "--resume", "-q").exit_code == 0
    bare, typed = load_model(first), load_model(second)
    assert bare.iterations == typed.iterations == 14
    assert np.array_equal(bare.theta, typed.theta)  # bit for bit
    for name in HISTORY_FIELDS:
        if name != "seconds":
            assert np.array_equal(bare.history[name], typed.history[name]), name
    assert bare.hyper == typed.hyper and bare.info["dtype"] == "float64"


def test_the_stop_message_prints_a_command_that_works_as_printed(data, tmp_path):
    folder = tmp_path / "with space"
    folder.mkdir()
    output = folder / "it's.h5"
    error = stopped_checkpoint(data, output)
    assert "continue with resume=True" in str(error)  # the library names the parameter
    command = resume_command(str(data), str(output))  # what the command line prints instead
    words = shlex.split(command)
    assert words[0] == "streamae" and "--resume" in words
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert load_model(output).iterations == 14


def test_a_finished_model_holds_no_optimizer_state_and_stays_small(tmp_path):
    """MNIST-shaped (784 -> 196): the finished file is below 2x its weights and history."""
    values = np.random.default_rng(2).uniform(0.0, 1.0, size=(200, 784)).astype(np.float32)
    data = write_patch_file(tmp_path / "mnist.h5", values, chunk_rows=100)
    output = tmp_path / "model.h5"
    model = train(data, output, hidden=196, max_iter=6, grad_tol=0, progress_tol=0, stop_signals=False)
    weights = sum(getattr(model, name).nbytes for name in ("W1", "W2", "b1", "b2"))
    history = sum(values.nbytes for values in model.history.values())
    assert output.stat().st_size < 2 * (weights + history)
    with h5py.File(output) as handle:
        assert "optimizer" not in handle
    kept = train(data, tmp_path / "kept.h5", hidden=196, max_iter=6, grad_tol=0, keep_state=True)
    assert kept.optimizer is not None and (tmp_path / "kept.h5").stat().st_size > 2 * (weights + history)


def test_resuming_a_finished_model_without_state_says_why_and_what_to_do(data, tmp_path):
    output = tmp_path / "m.h5"
    assert invoke("train", data, "-o", output, "--hidden", "5", "--max-iter", "3", "-q").exit_code == 0
    result = invoke("train", data, "-o", output, "--resume")
    assert result.exit_code == 2
    assert (
        f"Error: {output}: a finished model without the optimizer state (dropped when its run "
        "ended, unless keep_state was asked), so it cannot be continued exactly; train afresh, or "
        "train with keep_state when a run may need to be continued after it finishes."
    ) in result.stderr


def test_info_says_whether_a_file_can_be_resumed(data, tmp_path):
    invoke("train", data, "-o", tmp_path / "done.h5", "--hidden", "5", "--max-iter", "3", "-q")
    invoke(
        "train", data, "-o", tmp_path / "kept.h5", "--hidden", "5", "--max-iter", "3", "--keep-state", "-q"
    )

    def resumable(name: str) -> str:
        output = invoke("info", tmp_path / name).output
        return next(line for line in output.splitlines() if "resumable:" in line).split(":", 1)[1].strip()

    assert resumable("done.h5").startswith("no (a finished model without the optimizer state")
    assert resumable("kept.h5").startswith("yes")


def test_a_larger_max_iter_on_resume_is_applied_and_said(data, tmp_path):
    output = tmp_path / "m.h5"
    stopped_checkpoint(data, output)
    monitor = Recorder()
    model = train(data, output, resume=True, max_iter=16, monitor=monitor, stop_signals=False)
    assert model.iterations == 16
    assert "resume: max_iter 16 applies from now on (the checkpoint's run used 14)" in monitor.messages


def test_max_iter_below_the_iterations_done_warns_and_says_so_at_the_end(data, tmp_path):
    output = tmp_path / "m.h5"
    train(data, output, keep_state=True, stop_signals=False, **{**LIBRARY, "max_iter": 6})
    monitor = Recorder()
    model = train(data, output, resume=True, max_iter=3, monitor=monitor, stop_signals=False)
    assert model.iterations == 6
    assert (
        "warning: max_iter 3 is below the 6 iterations already done, so nothing will be trained; "
        "give a larger max_iter to continue."
    ) in monitor.messages
    assert monitor.finish_reason == "max_iter 3 is below the 6 iterations done"


def test_a_fixed_setting_that_disagrees_is_refused_naming_the_parameter():
    with pytest.raises(
        UsageError, match="it was trained with hidden=196, not 25; leave hidden out"
    ) as caught:
        resolve_settings({"hidden": 25}, {"hidden": 196}, "m.h5")
    assert caught.value.parameter == "hidden"


def test_settings_left_out_come_from_the_checkpoint_or_the_defaults():
    settings = resolve_settings({"rho": None, "max_iter": None}, {"rho": 0.1, "max_iter": 50}, "m.h5")
    assert settings["rho"] == 0.1 and settings["max_iter"] == 50 and settings["hidden"] == 25
    assert resolve_settings({}, None)["max_iter"] == 400


def test_old_model_files_without_the_new_fields_still_load_and_resume(data, tmp_path):
    """A file written before the settings and the normalisation were stored: the caller's values apply."""
    output = tmp_path / "m.h5"
    stopped_checkpoint(data, output)
    with h5py.File(output, "r+") as handle:
        info = __import__("json").loads(handle.attrs["info"])
        for key in ("max_iter", "grad_tol", "progress_tol", "memory", "scheme", "chunk_rows", "seed"):
            info.pop(key, None)
        handle.attrs["info"] = __import__("json").dumps(info)
    assert load_model(output).iterations == 5
    model = train(data, output, resume=True, max_iter=14, grad_tol=0, progress_tol=0, chunk_rows=300,
                  scheme="two-pass", stop_signals=False)  # fmt: skip
    assert model.iterations == 14


# --- the settings added since resume was written (held-out data, warm start) --------------

FAST = {"hidden": 7, "dtype": "float64", "max_iter": 14, "grad_tol": 0.0, "progress_tol": 0.0, "seed": 3}


def _stopped_then_resumed_as_printed(data: Path, output: Path, settings: dict) -> tuple[object, str]:
    """Train with ``settings``, stop after iteration 5, then run the command the stop message prints."""
    flag = StopFlag()
    with pytest.raises(Interrupted) as caught:
        train(data, output, stop=flag, monitor=Recorder(flag, 5), stop_signals=False, **FAST, **settings)
    assert load_model(output).iterations == 5
    words = shlex.split(resume_command(str(data), str(output)))
    result = invoke(*words[1:])
    assert result.exit_code == 0, result.output
    return load_model(output), str(caught.value)


@pytest.mark.parametrize("held", ["file", "fraction"])
def test_resume_as_printed_keeps_the_held_out_evaluation_and_its_history(data, tmp_path, held):
    if held == "file":
        values = np.random.default_rng(5).uniform(0.05, 0.95, size=(300, 16)).astype(np.float32)
        settings = {"validation": str(write_patch_file(tmp_path / "held.h5", values, chunk_rows=100))}
    else:
        settings = {"validation_fraction": 0.34}  # one chunk of three
    settings["validate_every"] = 2
    whole = train(data, tmp_path / "whole.h5", stop_signals=False, **FAST, **settings)
    resumed, _ = _stopped_then_resumed_as_printed(data, tmp_path / "stopped.h5", settings)
    assert np.array_equal(resumed.theta, whole.theta)  # bit for bit
    assert list(resumed.validation["iteration"]) == [0, 2, 4, 6, 8, 10, 12, 14]
    for name, values in whole.validation.items():
        assert np.array_equal(resumed.validation[name], values), name


def test_a_run_stopped_in_a_warm_start_sample_stage_resumes_as_printed(data, tmp_path):
    settings = {"warm_start": "400"}  # stage 1: one chunk of 400 rows, then all 1200
    whole = train(data, tmp_path / "whole.h5", stop_signals=False, **FAST, **settings)
    assert set(whole.history["stage"]) == {1, 2}
    resumed, message = _stopped_then_resumed_as_printed(data, tmp_path / "stopped.h5", settings)
    assert "continue with resume=True (the other settings come from the checkpoint)" in message
    assert resumed.iterations == whole.iterations
    assert np.array_equal(resumed.theta, whole.theta)  # bit for bit
    assert np.array_equal(resumed.history["stage"], whole.history["stage"])
