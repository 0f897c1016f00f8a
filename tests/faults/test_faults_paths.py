"""Output paths that cannot or must not be written: refused before any work, inputs never touched.

Every command that writes is given a directory, a path under a missing folder, a path under
a regular file, a read-only folder, its own input (directly, through a symlink, and as a
hard link), and a symlink to an unrelated file.  Refusals exit with 2 and one line naming
the path; an input is never altered; with --force a symlink is replaced, never written
through.

Running as root, permission bits do not stop writes, so "unwritable" is a read-only tmpfs
mounted by the test (skipped, with the reason, when mounting is not allowed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import invoke

from .faultkit import WRITERS, assert_clean_case, assert_no_temporaries, mounted_tmpfs


def _command(name: str) -> str:
    return name.split()[0]


def _snapshot(paths: dict[str, Path]) -> dict[str, bytes]:
    return {key: path.read_bytes() for key, path in paths.items()}


def _directory_cases() -> list:
    return list(WRITERS)


@pytest.mark.parametrize("writer", _directory_cases())
def test_output_is_a_directory(writer, inputs, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    build, _ = WRITERS[writer]
    result = invoke(*build(inputs, folder), "--force")
    assert_clean_case(result, _command(writer), 2, names=[folder])
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("writer", list(WRITERS))
def test_output_under_a_missing_folder(writer, inputs, tmp_path):
    target = tmp_path / "no-such-folder" / "out.file"
    build, _ = WRITERS[writer]
    assert_clean_case(invoke(*build(inputs, target)), _command(writer), 2, names=["no-such-folder"])
    assert not target.parent.exists()


@pytest.mark.parametrize("writer", list(WRITERS))
def test_output_under_a_regular_file(writer, inputs, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("a file, not a folder")
    target = plain / "out.file"
    build, _ = WRITERS[writer]
    assert_clean_case(invoke(*build(inputs, target)), _command(writer), 2, names=["plain.txt"])
    assert plain.read_text() == "a file, not a folder"


@pytest.mark.parametrize("writer", list(WRITERS))
def test_output_is_an_input(writer, inputs):
    build, used = WRITERS[writer]
    before = _snapshot(inputs)
    for key in used:
        result = invoke(*build(inputs, inputs[key]), "--force")
        assert_clean_case(result, _command(writer), 2, names=[inputs[key]])
    assert _snapshot(inputs) == before


@pytest.mark.parametrize("writer", list(WRITERS))
def test_output_is_a_symlink_to_an_input(writer, inputs, tmp_path):
    build, used = WRITERS[writer]
    before = _snapshot(inputs)
    for key in used:
        link = tmp_path / f"link-to-{key}"
        link.symlink_to(inputs[key])
        result = invoke(*build(inputs, link), "--force")
        assert_clean_case(result, _command(writer), 2, names=[link, inputs[key]])
        assert link.is_symlink()
    assert _snapshot(inputs) == before


@pytest.mark.parametrize("writer", [w for w in WRITERS if w != "train --log"])
def test_a_symlink_output_is_replaced_not_written_through(writer, inputs, tmp_path):
    """With --force the link itself is replaced: the file it pointed to keeps its bytes."""
    build, _ = WRITERS[writer]
    elsewhere = tmp_path / "someone-elses-file"
    elsewhere.write_bytes(b"not yours")
    link = tmp_path / "out-link"
    link.symlink_to(elsewhere)
    refused = invoke(*build(inputs, link))
    assert_clean_case(refused, _command(writer), 2, names=[link], fragments=["--force"])
    result = invoke(*build(inputs, link), "--force")
    assert result.exit_code == 0, result.output
    assert elsewhere.read_bytes() == b"not yours"
    assert link.is_file() and not link.is_symlink()
    assert_no_temporaries(tmp_path)


@pytest.mark.parametrize("writer", ["train", "encode"])
def test_a_hard_link_to_an_input_keeps_the_input(writer, inputs, tmp_path):
    """A hard link cannot be told from a new name, but the rename replaces the name only."""
    build, used = WRITERS[writer]
    link = tmp_path / "hard-link.h5"
    os.link(inputs[used[-1]], link)
    before = _snapshot(inputs)
    result = invoke(*build(inputs, link), "--force")
    assert result.exit_code == 0, result.output
    assert _snapshot(inputs) == before


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only tmpfs (root ignores permission bits, a read-only mount it cannot)."""
    with mounted_tmpfs(
        tmp_path / "read-only",
        "ro,size=1m",
        "mounting a read-only tmpfs needs root; permission bits would do for other users",
    ) as folder:
        yield folder


@pytest.mark.parametrize("writer", list(WRITERS))
def test_output_in_a_read_only_folder(writer, inputs, read_only_folder):
    target = read_only_folder / "out.file"
    build, _ = WRITERS[writer]
    assert_clean_case(invoke(*build(inputs, target)), _command(writer), 2, names=["read-only"])
    assert not target.exists()
