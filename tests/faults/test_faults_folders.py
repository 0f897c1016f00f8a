"""Folder outputs (``export -o NAME`` with no .npz/.mat suffix) follow the rules of files (issue 25, class 1).

Never the input, never a folder holding it, never a folder of the user's own files (``.``
included), nothing replaced without ``--force``, a link replaced (not what it points to),
nothing left behind by a failure, and a kill between the steps of a replacement leaves the
old folder or the new one at the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from streamae.export import export_weights
from streamae.io.atomic import FOLDER_MARKER, TEMP_SUFFIX, remove_stale_temporaries

from .faultkit import assert_clean_case, assert_no_temporaries, write_model


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder`` (links by their target text)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            found[rel] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return found


@pytest.fixture
def model_in_folder(tmp_path: Path) -> Path:
    """A model inside a folder that also holds the user's notes."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    return write_model(folder / "model.h5")


def test_force_never_replaces_the_input_model_with_a_folder(model_in_folder):
    before = tree(model_in_folder.parent)
    result = invoke("export", model_in_folder, "-o", model_in_folder, "--format", "npy-dir", "--force")
    assert_clean_case(result, "export", 2, names=[model_in_folder], fragments=["input"])
    assert tree(model_in_folder.parent) == before


def test_force_never_wipes_the_folder_holding_the_input(model_in_folder):
    folder = model_in_folder.parent
    before = tree(folder)
    result = invoke("export", model_in_folder, "-o", folder, "--force")
    assert_clean_case(result, "export", 2, names=[folder], fragments=["input"])
    assert tree(folder) == before


def test_force_never_empties_a_foreign_folder(tmp_path, good_model):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpeg")
    result = invoke("export", good_model, "-o", foreign, "--force")
    assert_clean_case(result, "export", 2, names=[foreign], fragments=["holiday.jpg"])
    assert tree(foreign) == {"holiday.jpg": b"jpeg"}


def test_force_with_the_current_folder_is_a_usage_error(tmp_path, good_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = invoke("export", good_model, "-o", ".", "--force")
    assert_clean_case(result, "export", 2, names=["."])
    assert tree(tmp_path) == before


def test_an_existing_folder_needs_force_and_then_is_replaced_whole(tmp_path, good_model):
    out = tmp_path / "weights"
    assert invoke("export", good_model, "-o", out).exit_code == 0
    first = tree(out)
    assert FOLDER_MARKER in first and "W1.npy" in first
    result = invoke("export", good_model, "-o", out)
    assert_clean_case(result, "export", 2, names=[out], fragments=["--force"])
    assert tree(out) == first
    other = write_model(tmp_path / "other.h5", seed=11)
    assert invoke("export", other, "-o", out, "--force").exit_code == 0
    assert not np.array_equal(np.load(out / "W1.npy"), np.frombuffer(first["W1.npy"][128:]))
    assert_no_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5", "other.h5", "weights"]


def test_force_over_a_link_replaces_the_link_and_leaves_its_target(tmp_path, good_model):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")
    link = tmp_path / "weights"
    link.symlink_to(target)
    result = invoke("export", good_model, "-o", link)
    assert_clean_case(result, "export", 2, names=[link], fragments=["link"])
    assert invoke("export", good_model, "-o", link, "--force").exit_code == 0
    assert link.is_dir() and not link.is_symlink()
    assert tree(target) == {"keep.txt": b"keep\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "model.h5", "weights"]


def test_a_folder_that_appears_during_the_export_is_not_replaced(tmp_path, good_model, monkeypatch):
    import streamae.export as export_module

    out = tmp_path / "weights"
    real_save = np.save

    def save_and_race(path, values):
        if not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("theirs\n")
        real_save(path, values)

    monkeypatch.setattr(export_module.np, "save", save_and_race)
    result = invoke("export", good_model, "-o", out)
    assert_clean_case(result, "export", 2, names=[out], fragments=["appeared"])
    assert tree(out) == {"theirs.txt": b"theirs\n"}
    assert_no_temporaries(tmp_path)


def test_an_interrupted_export_leaves_no_temporary_folder(tmp_path, good_model, monkeypatch):
    import streamae.export as export_module

    calls = []

    def interrupted(path, values):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        with open(path, "wb") as handle:
            np.lib.format.write_array(handle, values)

    monkeypatch.setattr(export_module.np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_weights(good_model, tmp_path / "weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]


def test_a_temporary_folder_of_a_killed_export_is_removed_by_the_next(tmp_path, good_model):
    out = tmp_path / "weights"
    stale = tmp_path / f".weights.999999999{TEMP_SUFFIX}"  # no such process
    stale.mkdir()
    (stale / "W1.npy").write_bytes(b"x" * 1000)
    export_weights(good_model, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5", "weights"]


def test_a_kill_between_two_renames_puts_the_old_folder_back(tmp_path, good_model):
    """Where no atomic swap exists the old folder is moved aside first; the next run restores it."""
    out = tmp_path / "weights"
    export_weights(good_model, out)
    before = tree(out)
    aside = tmp_path / f".weights.999999999.old{TEMP_SUFFIX}"
    os.rename(out, aside)  # the state a kill between the two renames leaves
    remove_stale_temporaries(out)
    assert tree(out) == before and not aside.exists()


def test_the_file_formats_refuse_a_folder_and_keep_it(tmp_path, good_model):
    folder = tmp_path / "w.npz"
    folder.mkdir()
    result = invoke("export", good_model, "-o", folder, "--force")
    assert_clean_case(result, "export", 2, names=[folder])
    assert folder.is_dir()


def test_a_mat_export_past_the_v5_limit_is_refused_before_writing(tmp_path, good_model, monkeypatch):
    import streamae.export as export_module

    monkeypatch.setattr(export_module, "MAT_V5_LIMIT", 1000)
    out = tmp_path / "w.mat"
    result = invoke("export", good_model, "-o", out)
    assert_clean_case(result, "export", 2, names=[out], fragments=[".npz"])
    assert not out.exists()
