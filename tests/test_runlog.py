"""The run header and the log: what ran, where, on what; a timestamp on every record."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import Recorder, uniform_patch_file

from streamae import __version__
from streamae.cli.main import cli
from streamae.errors import Interrupted
from streamae.io.modelfile import load_model
from streamae.runtime.signals import StopFlag
from streamae.training.runlog import format_header, run_header
from streamae.training.session import train


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return uniform_patch_file(tmp_path / "data.h5", seed=5, rows=900, chunk_rows=300)


class Passes(Recorder):
    """Also records the passes and the rows of each."""

    def __init__(self, flag: StopFlag | None = None, stop_after: int | None = None) -> None:
        super().__init__(flag, stop_after)
        self.passes: list[list] = []

    def on_pass(self, name: str, n_rows: int) -> None:
        self.passes.append([name, n_rows, 0])

    def on_block(self, rows: int) -> None:
        self.passes[-1][2] += rows


def test_the_first_line_of_a_run_and_of_its_log_is_the_header(data, tmp_path):
    log = tmp_path / "log.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(data),
            "-o",
            str(tmp_path / "m.h5"),
            "--hidden",
            "6",
            "--max-iter",
            "3",
            "--log",
            str(log),
        ],
    )
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"streamae {__version__} on {socket.gethostname()} at ")
    settings = (
        "hidden=6 rho=0.01 beta=3.0 lam=0.0001 max_iter=3 decoder=sigmoid activation=sigmoid dtype=float32"
    )
    assert "settings " + settings in first
    assert f"data {data.resolve()} (900x16 float32)" in first and "1 MPI rank;" in first
    # The warm start the run follows, and why (issue 24): 900 rows of 16 -> 6 are too few.
    assert first.endswith("warm start: auto chose none because the data holds 4.2 rows per parameter "
                          "(900 rows, 214 parameters), not above 25 rows per parameter, and a twentieth "
                          "of it is below 256 rows: too small a sample to learn from; tolerance: 0.0001 "
                          "(the data holds at least one row per parameter)")  # fmt: skip
    header, *records = [json.loads(line) for line in log.read_text().splitlines()]
    assert header["event"] == "start" and header["streamae_version"] == __version__
    assert header["host"] == socket.gethostname() and isinstance(header["command"], str)
    assert {k: header["data"][k] for k in ("path", "shape", "dtype")} == {
        "path": str(data.resolve()),
        "shape": [900, 16],
        "dtype": "float32",
    }
    assert header["data"]["content"].startswith("sha256/")
    assert header["threads"] >= 1 and header["ranks"] == 1
    assert header["warm_start"].startswith("auto chose none because")
    assert header["tolerance"].startswith("0.0001 ")
    expected = "hidden rho beta lam decoder dtype max_iter seed grad_tol progress_tol scheme chunk_rows"
    more = ["lbfgs_pairs", "activation", "keep_state", "resume", "log", "checkpoint_every"]
    for name in expected.split() + more:
        assert name in header["settings"], name
    # chunk_rows: the rows per read the run used (the read policy's choice), as the model records.
    used = load_model(tmp_path / "m.h5").info["chunk_rows"]
    assert header["settings"]["hidden"] == 6 and header["settings"]["chunk_rows"] == used
    times = [datetime.datetime.fromisoformat(record["time"]) for record in [header, *records]]
    assert len(records) == 3 and times == sorted(times)
    assert all(t.tzinfo is not None for t in times)


def test_the_header_is_one_line_without_control_characters():
    header = run_header(
        settings={"hidden": 5}, data={"path": "evil\x1b[2Jname\n", "shape": [1, 2], "dtype": "float32"},
        threads=2, ranks=4, command="streamae train x",
    )  # fmt: skip
    text = format_header(header)
    assert "\n" not in text and "\x1b" not in text and text.endswith("2 threads, 4 MPI ranks")


def test_two_pass_counts_every_row_once_per_pass_and_says_its_scheme_in_a_sentence(data, tmp_path):
    monitor = Passes()
    train(data, hidden=4, max_iter=2, scheme="two-pass", monitor=monitor, stop_signals=False)
    assert monitor.passes and all(rows == 900 == done for _, rows, done in monitor.passes)
    assert "scheme: two-pass, as asked" in monitor.messages


def test_the_checkpoint_of_a_stop_is_announced_once(data, tmp_path):
    flag = StopFlag()
    monitor = Passes(flag, stop_after=2)
    with pytest.raises(Interrupted) as caught:
        train(data, tmp_path / "m.h5", hidden=4, max_iter=9, checkpoint_every=0, monitor=monitor,
              stop=flag, stop_signals=False)  # fmt: skip
    assert monitor.checkpoints == []  # the Interrupted message names it instead
    assert str(caught.value).count(str(tmp_path / "m.h5")) == 1  # the checkpoint
    assert "continue with resume=True" in str(caught.value)


class Resumes(Passes):
    """Also records the resume hook's arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.resumes: list[tuple] = []

    def on_resume(self, iteration: int, max_iter: int | None = None) -> None:
        self.resumes.append((iteration, max_iter))


def test_the_scheme_is_said_chosen_asked_or_the_checkpoints(data, tmp_path):
    chosen = Passes()
    train(data, tmp_path / "m.h5", hidden=4, max_iter=2, keep_state=True, monitor=chosen, stop_signals=False)
    said = [m for m in chosen.messages if m.startswith("scheme:")]
    assert len(said) == 1 and ", chosen because " in said[0] and "as asked" not in said[0]
    # A resume takes the checkpoint's scheme: not asked, and not chosen again either.
    resumed = Resumes()
    train(
        data, tmp_path / "m.h5", resume=True, max_iter=3, keep_state=True, monitor=resumed, stop_signals=False
    )
    said = [m for m in resumed.messages if m.startswith("scheme:")]
    assert said and "the checkpoint's" in said[0], said
    assert resumed.resumes == [(2, 3)]
    # Not given, max_iter is the checkpoint's (3 now), not the default 400: the bar's size.
    again = Resumes()
    train(data, tmp_path / "m.h5", resume=True, force=True, monitor=again, stop_signals=False)
    assert again.resumes == [(3, 3)]


def test_the_plain_iteration_line_labels_its_time_as_elapsed(data, tmp_path):
    result = CliRunner().invoke(
        cli, ["train", str(data), "-o", str(tmp_path / "m.h5"), "--hidden", "3", "--max-iter", "2"]
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("iter ")]
    assert len(lines) == 2 and all(" elapsed " in line and line.endswith(" s") for line in lines)
    elapsed = [float(line.split(" elapsed ")[1].split()[0]) for line in lines]
    assert elapsed == sorted(elapsed)  # since the start of training, not per iteration


def test_the_resumed_progress_bar_is_sized_by_the_run(monkeypatch):
    from streamae.cli.train import ConsoleMonitor

    monitor = ConsoleMonitor(quiet=False)
    monitor.bars = True
    monitor.on_start(0, 0, 400)  # the CLI's default, before the checkpoint is read
    monitor.on_resume(30, 60)
    assert monitor._iterations.total == 60 and monitor._iterations.n == 30
    monitor.close()
