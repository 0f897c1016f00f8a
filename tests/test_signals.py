"""Stopping on SIGTERM, SIGINT and SIGUSR1: a checkpoint, exit code 3, and an exact --resume.

The end-to-end tests run ``streamae train`` in a subprocess (alone and under
``mpiexec -n 2``), signal it once its log shows a randomly chosen iteration, and check
that the checkpoint is valid, the exit code is 3, and ``--resume`` ends on the same
parameters as an uninterrupted run with the same settings.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import marked_pids, needs_mpi, relative_difference, run, start, wait_for_lines, write_patch_file

from streamae.errors import EXIT_INTERRUPTED
from streamae.io.modelfile import load_model
from streamae.runtime.signals import STOP_SIGNALS, StopFlag, stop_on_signals

# Tolerances of 0: every run makes exactly MAX_ITER iterations unless the line search
# stalls, so the stop lands well before the end.
MAX_ITER = 120
SETTINGS = ["--hidden", "5", "--dtype", "float64", "--grad-tol", "0", "--progress-tol", "0", "-q"]
SETTINGS += ["--max-iter", str(MAX_ITER)]


def test_each_stop_signal_sets_the_flag_and_the_handlers_are_restored():
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number in STOP_SIGNALS:
        flag = StopFlag()
        with stop_on_signals(flag):
            os.kill(os.getpid(), number)
        assert flag.requested and flag.signal_name == signal.Signals(number).name
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == before


def test_the_first_signal_wins_and_a_ctrl_c_after_it_stops_at_once():
    flag = StopFlag()
    with pytest.raises(KeyboardInterrupt), stop_on_signals(flag):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # the user insists: no waiting for the iteration
    assert flag.signal_name == "SIGTERM"


def test_outside_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def worker():
        with stop_on_signals(StopFlag()) as flag:
            seen.append(signal.getsignal(signal.SIGTERM))
            flag.request("requested by hand")
            seen.append(flag.signal_name)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before, "requested by hand"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3000 rows of 16 values in 6 chunks of 500."""
    values = np.random.default_rng(11).uniform(0.05, 0.95, size=(3000, 16)).astype(np.float32)
    return write_patch_file(tmp_path_factory.mktemp("signals") / "data.h5", values, chunk_rows=500)


@pytest.fixture(scope="module")
def references(data, tmp_path_factory):
    """Uninterrupted runs, computed once per number of ranks (None: one process)."""
    folder = tmp_path_factory.mktemp("references")
    cache: dict = {}

    def reference(ranks: int | None):
        if ranks not in cache:
            output = folder / f"reference-{ranks}.h5"
            done = run(["train", str(data), "-o", str(output), *SETTINGS], ranks)
            assert done.returncode == 0, done.stderr
            cache[ranks] = load_model(output)
        return cache[ranks]

    return reference


def stop_and_resume(data, tmp_path, references, rng, ranks, send, expected_message):
    """Run on ``ranks``, signal (``send(process, marker)``) once the log shows a random
    iteration, then resume: the stopped and resumed runs against the uninterrupted one."""
    reference = references(ranks)
    target = int(rng.integers(3, min(60, reference.iterations - 30)))
    output, log = tmp_path / "model.h5", tmp_path / "log.jsonl"
    args = ["train", str(data), "-o", str(output), "--log", str(log), *SETTINGS]
    marker = uuid.uuid4().hex
    process = start(args, ranks, STREAMAE_TEST_JOB=marker)
    try:
        wait_for_lines(log, target + 1, process)  # the run header, then one line per iteration
        send(process, marker)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == EXIT_INTERRUPTED, err
    stopped = load_model(output)
    k = stopped.iterations
    assert target <= k < reference.iterations, (target, k)
    assert stopped.info["finished"] == "" and stopped.optimizer["iteration"] == k
    assert err.count("Stopped:") == 1, err  # rank 0 alone prints
    assert f"Stopped: {expected_message} after iteration {k}; the checkpoint {output} holds it" in err
    # The command line prints the command to continue with (the flag, not resume=True).
    assert "continue with `streamae train " in err and " --resume` (the other settings come from" in err

    done = run(args + ["--resume"], ranks)
    assert done.returncode == 0, done.stderr
    resumed = load_model(output)
    assert resumed.iterations == reference.iterations
    assert resumed.info["evaluations"] == reference.info["evaluations"]
    assert relative_difference(resumed.theta, reference.theta) < 1e-10
    np.testing.assert_allclose(resumed.history["cost"], reference.history["cost"], rtol=1e-10)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r.get("event") for r in records if "iteration" not in r] == ["start", "start"]  # two runs
    iterations = [r["iteration"] for r in records if "iteration" in r]
    assert iterations == list(range(1, reference.iterations + 1))  # no gap, no repeat
    return k


@pytest.mark.parametrize("ranks", [None, pytest.param(2, marks=[pytest.mark.mpi, needs_mpi])])
def test_sigterm_stops_every_rank_and_resume_is_exact(data, references, tmp_path, rng, ranks):
    """One process, or mpiexec, which forwards the signal to every rank (as srun does with --signal)."""
    stop_and_resume(
        data,
        tmp_path,
        references,
        rng,
        ranks,
        lambda process, marker: process.send_signal(signal.SIGTERM),
        "stopped by SIGTERM",
    )


@pytest.mark.mpi
@needs_mpi
def test_a_signal_to_one_rank_stops_all_at_the_same_iteration(data, references, tmp_path, rng):
    """Only rank 1 hears SIGUSR1; the stop flag is combined so no rank is left waiting."""

    def signal_rank_one(process, marker):
        pids = marked_pids(marker, 1)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGUSR1)

    stop_and_resume(
        data,
        tmp_path,
        references,
        rng,
        2,
        signal_rank_one,
        "stopped by a signal on another rank",
    )
