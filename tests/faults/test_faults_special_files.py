"""Special files and odd names as inputs and outputs (issue 11, classes 1, 2, 3, 7).

Outputs must be regular files or absent: a FIFO, a character device (a node made by the
test, never the machine's /dev/null), a socket, or a link to one of them is refused, with
``--force`` too, and is still what it was afterwards.  Inputs that are not regular files
are refused before they are opened.  Every run where a regression would block forever on a
FIFO runs in a subprocess with a timeout that fails the test.  The log obeys the rules of
every output and may not be another output of the same command.  Long names fail before any
work, and the longest legal name works (its temporary name fits NAME_MAX).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import invoke

from .faultkit import (
    WRITERS,
    OutputGuard,
    assert_clean_case,
    assert_clean_subprocess_failure,
    assert_no_temporaries,
    run_streamae,
)

# A run that should be refused at once; far more than enough (a hang fails the test).
HANG_TIMEOUT = 90


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _null_device(path: Path) -> Path:
    """A character device node like /dev/null (major 1, minor 3), made in the test's folder."""
    if not _is_root():
        pytest.skip("creating a device node needs root")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def _zero_device(path: Path) -> Path:
    """A character device node like /dev/zero (an endless stream of zero bytes)."""
    if not _is_root():
        pytest.skip("creating a device node needs root")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    return path


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets bound by a test, closed afterwards."""
    opened: list[socket.socket] = []
    yield opened
    for item in opened:
        item.close()


def _socket_maker(opened: list[socket.socket]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        if len(os.fsencode(path)) > 100:
            pytest.skip("the path is too long for a Unix socket address")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.fspath(path))
        opened.append(server)
        return path

    return make


def _link_to_fifo(path: Path) -> Path:
    target = _fifo(path.with_name(path.name + ".fifo"))
    path.symlink_to(target)
    return path


SPECIAL_KINDS = ("fifo", "char-device", "socket", "link-to-fifo")


def _make_special(kind: str, path: Path, opened: list[socket.socket]) -> Path:
    makers = {
        "fifo": _fifo,
        "char-device": _null_device,
        "socket": _socket_maker(opened),
        "link-to-fifo": _link_to_fifo,
    }
    return makers[kind](path)


def _mode(path: Path) -> int:
    return os.stat(path).st_mode


# ---------------------------------------------------------------- class 1: special outputs


# Every kind with --force (the dangerous case); the FIFO also without it.
SPECIAL_OUTPUT_CASES = [(kind, True) for kind in SPECIAL_KINDS] + [("fifo", False)]


@pytest.mark.parametrize("writer", ["extract", "train", "train --log", "encode", "visualize"])
@pytest.mark.parametrize(
    ("kind", "force"),
    SPECIAL_OUTPUT_CASES,
    ids=[f"{k}-{'force' if f else 'plain'}" for k, f in SPECIAL_OUTPUT_CASES],
)
def test_an_output_that_is_not_a_regular_file_is_refused(kind, force, writer, inputs, tmp_path, sockets):
    target = _make_special(kind, tmp_path / "special.out", sockets)
    before = _mode(target)
    build, _ = WRITERS[writer]
    args = [*build(inputs, target), *(["--force"] if force else [])]
    completed = run_streamae(args, timeout=HANG_TIMEOUT)
    assert_clean_subprocess_failure(
        completed, writer.split()[0], 2, names=[target], fragments=["regular file"]
    )
    assert _mode(target) == before, "the special file was replaced"
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("writer", ["extract", "train", "visualize"])
def test_the_null_device_is_refused_clearly(writer, inputs, tmp_path):
    """-o /dev/null (the real one; without --force, so a regression could not destroy it)."""
    build, _ = WRITERS[writer]
    completed = run_streamae(build(inputs, Path(os.devnull)), timeout=HANG_TIMEOUT)
    assert_clean_subprocess_failure(completed, writer, 2, names=[os.devnull], fragments=["null device"])
    assert stat.S_ISCHR(_mode(Path(os.devnull)))


# ---------------------------------------------------------------- class 2: the log


@pytest.mark.parametrize(
    "spelling",
    ["same", "dot-dot", "symlink", "hard-link"],
)
def test_the_log_may_not_be_the_model_file(spelling, good_patches, tmp_path):
    model = tmp_path / "model.h5"
    if spelling == "same":
        log = model
    elif spelling == "dot-dot":
        (tmp_path / "sub").mkdir()
        log = tmp_path / "sub" / ".." / "model.h5"
    else:
        guard = OutputGuard.create(model)
        log = tmp_path / "log.jsonl"
        if spelling == "symlink":
            log.symlink_to(model)
        else:
            os.link(model, log)
    result = invoke("train", good_patches, "-o", model, "--log", log, "--max-iter", "1", "--force", "-q")
    assert_clean_case(result, "train", 2, names=[model, log], fragments=["both"])
    if spelling in ("symlink", "hard-link"):
        guard.assert_intact()
    else:
        assert not model.exists()


@pytest.mark.parametrize("existing", ["text", "model"])
def test_an_existing_log_needs_force(existing, good_patches, good_model, tmp_path):
    log = tmp_path / "old.log"
    if existing == "model":
        log = good_model
    guard = OutputGuard.create(log) if existing == "text" else None
    before = log.read_bytes()
    result = invoke("train", good_patches, "-o", tmp_path / "new.h5", "--log", log, "--max-iter", "1", "-q")
    assert_clean_case(result, "train", 2, names=[log], fragments=["--force"])
    assert log.read_bytes() == before
    assert not (tmp_path / "new.h5").exists()
    if guard is not None:
        guard.assert_intact()


def test_the_log_is_replaced_with_force_and_appended_on_resume(good_patches, tmp_path):
    model, log = tmp_path / "model.h5", tmp_path / "log.jsonl"
    log.write_text("stale line\n")
    common = ["train", good_patches, "-o", model, "--log", log, "--hidden", "3", "-q"]
    assert invoke(*common, "--max-iter", "2", "--keep-state", "--force").exit_code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iteration"] for r in records if "iteration" in r] == [1, 2]
    assert records[0]["event"] == "start"  # the run header
    assert invoke(*common, "--max-iter", "4", "--resume").exit_code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iteration"] for r in records if "iteration" in r] == [1, 2, 3, 4]
    assert [r.get("event") for r in records].count("start") == 2  # one header per run


# ---------------------------------------------------------------- class 3: special inputs


def _reader_cases() -> list[tuple[str, str, Callable[[dict[str, Path], Path], list[object]]]]:
    """(command, which input is special, argv builder given the inputs and the special path)."""
    return [
        ("info", "patches", lambda i, s: ["info", s]),
        ("train", "patches", lambda i, s: ["train", s, "-o", i["out"], "--max-iter", "1", "-q"]),
        ("train", "model (--resume)", lambda i, s: ["train", i["patches"], "-o", s, "--resume", "-q"]),
        ("encode", "model", lambda i, s: ["encode", s, i["patches"], "-o", i["out"], "-q"]),
        ("encode", "patches", lambda i, s: ["encode", i["model"], s, "-o", i["out"], "-q"]),
        ("visualize", "model", lambda i, s: ["visualize", s, "-o", i["out"].with_suffix(".png")]),
        ("gradcheck", "patches", lambda i, s: ["gradcheck", "--data", s]),
        ("extract", "image", lambda i, s: ["extract", s, "-o", i["out"], "--num-patches", "5", "-q"]),
    ]


READER_CASES = _reader_cases()


# FIFOs on every reader; devices and sockets on one reader of each kind of file.
SPECIAL_INPUT_CASES = [(case, "fifo") for case in range(len(READER_CASES))] + [
    (case, kind)
    for case, (command, _, _) in enumerate(READER_CASES)
    if command in ("info", "train", "extract") and case != 2
    for kind in ("char-device", "socket")
]


@pytest.mark.parametrize(
    ("case", "kind"),
    SPECIAL_INPUT_CASES,
    ids=[f"{READER_CASES[c][0]}-{READER_CASES[c][1]}-{k}" for c, k in SPECIAL_INPUT_CASES],
)
def test_an_input_that_is_not_a_regular_file_is_refused(case, kind, inputs, tmp_path, sockets):
    command, which, build = READER_CASES[case]
    name = "img.png" if which == "image" else "input.h5"
    if kind == "char-device":
        special = _zero_device(tmp_path / name)
    else:
        special = _make_special(kind, tmp_path / name, sockets)
    completed = run_streamae(build({**inputs, "out": tmp_path / "out.h5"}, special), timeout=HANG_TIMEOUT)
    assert_clean_subprocess_failure(completed, command, 2, names=[special], fragments=["not a regular file"])
    assert not (tmp_path / "out.h5").exists()


def test_a_fifo_inside_an_image_folder_is_skipped_not_read(inputs, tmp_path):
    """A folder is searched for regular files: a FIFO named like an image is not one."""
    folder = tmp_path / "photos"
    folder.mkdir()
    os.link(inputs["image"], folder / "photo.png")
    _fifo(folder / "zz.png")
    completed = run_streamae(["extract", folder, "-o", tmp_path / "p.h5", "--num-patches", "5", "-q"],
                             timeout=HANG_TIMEOUT)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "p.h5").exists()


# ---------------------------------------------------------------- class 7: long names


def _name_of(length: int, suffix: str) -> str:
    return "n" * (length - len(suffix)) + suffix


@pytest.mark.parametrize("writer", ["extract", "train", "train --log", "encode", "visualize"])
def test_the_longest_legal_name_works(writer, inputs, tmp_path):
    suffix = ".png" if writer.startswith("visualize") else ".h5"
    target = tmp_path / _name_of(255, suffix)
    build, _ = WRITERS[writer]
    result = invoke(*build(inputs, target))
    assert result.exit_code == 0, result.output
    assert target.exists()
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("length", [256, 304, 1000])
@pytest.mark.parametrize("writer", ["extract", "train", "train --log", "encode", "visualize"])
def test_a_name_longer_than_the_file_system_allows_fails_before_any_work(writer, length, inputs, tmp_path):
    target = tmp_path / _name_of(length, ".h5")
    before = sorted(p.name for p in tmp_path.iterdir())
    build, _ = WRITERS[writer]
    message = assert_clean_case(invoke(*build(inputs, target)), writer.split()[0], 2, fragments=["name"])
    assert f"{length} bytes" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_path_longer_than_path_max_fails_before_any_work(inputs, tmp_path):
    deep = tmp_path
    while len(os.fsencode(deep)) < 4200:
        deep = deep / ("d" * 200)
    target = deep / "model.h5"  # the folder does not exist either: either refusal is clean
    result = invoke("train", inputs["patches"], "-o", target, "--max-iter", "1", "-q")
    assert_clean_case(result, "train", 2)
