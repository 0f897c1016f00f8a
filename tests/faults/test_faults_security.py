"""Security basics: files are read as data only, their strings are bounded before printing,
and outputs are never written through a link planted to reach another file.

(Outputs that are symlinks to an input are refused in ``test_faults_paths.py``.)
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import invoke

from streamae.io.atomic import temporary_path_for

from .faultkit import assert_clean_case, edit_hdf5, write_model

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "streamae").glob("*.py"), *(REPO / "cli").glob("*.py")])
# Ways to turn file contents into code or objects.  mpi4py's lowercase collectives pickle
# objects between the ranks of one job (trusted peers, not files), and say so in
# docstrings only, so the patterns look for imports and calls, not the word.
FORBIDDEN = {
    "pickle import": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|shelve|marshal|joblib)\b", re.M),
    "pickle call": re.compile(r"\b(c?pickle|dill|marshal)\.(loads?|Unpickler)\b"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "eval or exec": re.compile(r"(?<![\w.])(eval|exec)\s*\("),
    "yaml.load": re.compile(r"\byaml\.(unsafe_)?load\s*\("),
    "literal_eval": re.compile(r"\bliteral_eval\s*\("),
}
TEN_MB = 10_000_000
ESCAPE = "\x1b]0;owned\x07\x1b[2J"  # retitle the terminal, clear the screen
MAX_LINE = 400


def test_the_source_never_unpickles_or_evaluates():
    assert SOURCES, "no sources found"
    found = [
        f"{path.relative_to(REPO)}: {name}"
        for path in SOURCES
        for name, pattern in FORBIDDEN.items()
        if pattern.search(path.read_text())
    ]
    assert not found, found


def test_the_patterns_catch_what_they_look_for():
    """The grep above can fail: each pattern matches a line it exists to catch."""
    samples = {
        "pickle import": "import pickle\n",
        "pickle call": "value = pickle.loads(blob)",
        "allow_pickle=True": "np.load(path, allow_pickle = True)",
        "eval or exec": "shape = eval(attrs['shape'])",
        "yaml.load": "yaml.load(text)",
        "literal_eval": "ast.literal_eval(text)",
    }
    for name, sample in samples.items():
        assert FORBIDDEN[name].search(sample), name
    assert not FORBIDDEN["eval or exec"].search("model.evaluate(x); obj.exec(1)")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_arrays_are_loaded_without_pickle(suffix, tmp_path, monkeypatch):
    """Every np.load streamae makes passes allow_pickle=False (checked on the call itself)."""
    source = tmp_path / f"stack{suffix}"
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    np.save(source, images) if suffix == ".npy" else np.savez(source, images=images)
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    result = invoke("extract", source, "-o", tmp_path / "p.h5", "--num-patches", "10", "-q")
    assert result.exit_code == 0, result.output
    assert calls and all(value is False for value in calls), calls


# --------------------------------------------------------------------------- printing


def _hostile_strings(handle: h5py.File, keys: tuple[str, ...]) -> None:
    for index, key in enumerate(keys):
        filler = "ABCDEFG"[index % 7] * TEN_MB
        handle.attrs[key] = ESCAPE + (f'["{filler}"]' if key == "sources" else filler)


def _assert_printable_and_bounded(text: str) -> None:
    assert len(text) < 20_000, f"{len(text):,} characters printed"
    longest = max(map(len, text.splitlines()), default=0)
    assert longest <= MAX_LINE, f"a line of {longest:,} characters"
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text), "control characters reach the terminal"


@pytest.fixture
def hostile_files(tmp_path, good_patches, good_model) -> dict[str, Path]:
    """A patch, a model and a foreign file whose attributes are 10 MB strings with escapes."""
    patches = edit_hdf5(tmp_path / "hostile-patches.h5", good_patches,
                        lambda h: _hostile_strings(h, ("sources", "normalization", "seed", "color",
                                                       "sampling", "streamae_version")))  # fmt: skip
    model = edit_hdf5(tmp_path / "hostile-model.h5", good_model,
                      lambda h: _hostile_strings(h, ("info", "data", "streamae_version")))  # fmt: skip
    foreign = tmp_path / "hostile-other.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x" * 200] = np.zeros(2)
        _hostile_strings(handle, ("format", "title"))
    return {"patches": patches, "model": model, "foreign": foreign}


@pytest.mark.parametrize("kind", ["patches", "model", "foreign"])
def test_info_prints_a_bounded_line_for_a_10_mb_attribute(kind, hostile_files):
    text = invoke("info", hostile_files[kind])
    assert text.exit_code == 0, text.output[:2000]
    _assert_printable_and_bounded(text.stdout)
    as_json = invoke("info", "--json", hostile_files[kind])
    assert as_json.exit_code == 0
    assert len(as_json.stdout) < 20_000 and "\x1b" not in as_json.stdout


def test_error_messages_bound_a_hostile_attribute(tmp_path, good_model, good_patches, guard):
    """An attribute that ends up in an error message is cut short there too."""
    bad = edit_hdf5(tmp_path / "bad-decoder.h5", good_model,
                    lambda h: h.attrs.__setitem__("decoder", ESCAPE + "Z" * TEN_MB))  # fmt: skip
    for args in (["visualize", bad, "-o", guard.path, "--force"],
                 ["encode", bad, good_patches, "-o", guard.path, "--force"]):  # fmt: skip
        result = invoke(*args)
        assert_clean_case(result, args[0], 2, names=[bad])
        assert "\x1b" not in result.stderr
    guard.assert_intact()


def test_resume_refusal_bounds_the_stored_data_path(tmp_path, good_patches):
    model = tmp_path / "checkpoint.h5"
    trained = invoke(
        "train", good_patches, "-o", model, "--max-iter", "1", "--hidden", "3", "--keep-state", "-q"
    )
    assert trained.exit_code == 0, trained.output
    with h5py.File(model, "r+") as handle:
        handle.attrs["data"] = '{"path": "' + "P" * TEN_MB + '", "shape": [300, 64], "dtype": "float32"}'
    result = invoke("train", good_patches, "-o", model, "--max-iter", "2", "--hidden", "3", "--resume")
    assert_clean_case(result, "train", 2, names=[model])


# --------------------------------------------------------------------------- planted links


@pytest.mark.parametrize("command", ["train", "encode", "visualize"])
def test_a_link_planted_at_the_temporary_path_is_not_followed(command, tmp_path, good_patches, good_model):
    """The temporary's name is predictable (target name and pid): a symlink someone put
    there, pointing at a file to destroy, must be removed, not written through."""
    victim = tmp_path / "victim.dat"
    victim.write_bytes(b"precious")
    out = tmp_path / ("out.png" if command == "visualize" else "out.h5")
    temporary_path_for(out).symlink_to(victim)  # this process's pid: CliRunner runs in-process
    args = {
        "train": ["train", good_patches, "-o", out, "--max-iter", "1", "--hidden", "2", "-q"],
        "encode": ["encode", good_model, good_patches, "-o", out, "-q"],
        "visualize": ["visualize", good_model, "-o", out],
    }[command]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"precious"
    assert out.is_file() and not out.is_symlink()
    assert not temporary_path_for(out).exists() and not temporary_path_for(out).is_symlink()


def test_a_fresh_model_file_helper(tmp_path):
    """The model factory of these tests writes a file streamae reads (a guard on the guard)."""
    path = write_model(tmp_path / "m.h5")
    copy = tmp_path / "copy.h5"
    shutil.copyfile(path, copy)
    assert invoke("info", copy).exit_code == 0
    assert os.path.getsize(copy) == os.path.getsize(path)
