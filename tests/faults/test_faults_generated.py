"""Generated HDF5 inputs (Hypothesis) and datasets declared but never written.

Hypothesis draws the rank, shape, dtype, chunking and a few poisoned values of ``/patches``;
``train`` must either succeed, exactly when the data is something it can train on, or fail
cleanly.  The examples are derandomized, so CI sees the same cases every run.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import failure_problems, invoke, write_patch_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from streamae.errors import UsageError
from streamae.options import COMMANDS, Option

from .faultkit import FIGURES, OutputGuard, assert_clean_case, assert_no_temporaries, write_model

DTYPES = ["float32", "float64", "float16", "int8", "uint16", "int64", "complex64", "bool", "S4"]


@st.composite
def patch_datasets(draw) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """An array for /patches and a chunk shape for it (None: contiguous)."""
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=rank, max_size=rank)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(0.0, 1.0, size=shape)
    if values.size and dtype.kind == "f" and draw(st.booleans()):
        poison = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1.5, -0.5]))
        values.flat[draw(st.integers(0, values.size - 1))] = poison
    array = values.astype(dtype) if dtype.kind != "S" else values.astype("S4")
    chunks = None
    if rank and all(shape) and draw(st.booleans()):
        chunks = tuple(draw(st.integers(1, dim)) for dim in shape)
    return array, chunks


def trainable(array: np.ndarray) -> bool:
    """What train must accept: 2-D float16/32/64, not empty, finite values in [0, 1]."""
    return (
        array.ndim == 2
        and array.dtype in (np.float16, np.float32, np.float64)
        and array.size > 0
        and bool(np.all(np.isfinite(array)))
        and bool(array.min() >= 0.0 and array.max() <= 1.0)
    )


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(patch_datasets())
def test_train_on_any_generated_dataset_succeeds_or_fails_cleanly(case):
    array, chunks = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.h5"
        with h5py.File(path, "w") as handle:
            handle.create_dataset("patches", data=array, chunks=chunks)
            handle.attrs["format"] = "streamae.patches/1"
        guard = OutputGuard.create(Path(folder) / "model.h5")
        result = invoke("train", path, "-o", guard.path, "--force", "--max-iter", "1", "--hidden", "2", "-q")
        if trainable(array):
            assert result.exit_code == 0, result.output
            return
        problems = failure_problems(result.stdout, result.stderr, result.exit_code, (1, 2), [path.name])
        FIGURES.record_case("train", not problems)
        assert problems == [], f"{problems}\n{result.stderr}"
        guard.assert_intact()


# --------------------------------------------------------------------------- never written

DECLARED_ROWS = 200_000  # 51 MB declared, nothing stored: quick to stream, plainly not data


@pytest.fixture
def never_written(tmp_path: Path) -> Path:
    path = tmp_path / "declared.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", shape=(DECLARED_ROWS, 64), dtype=np.float32, chunks=(4096, 64))
        handle.attrs["format"] = "streamae.patches/1"
    return path


def test_the_declared_dataset_stores_nothing(never_written):
    """The case is what it claims: a large shape and no stored chunk."""
    assert never_written.stat().st_size < 100_000
    with h5py.File(never_written) as handle:
        assert handle["patches"].id.get_storage_size() == 0


def test_train_refuses_a_dataset_never_written(never_written, guard):
    result = invoke("train", never_written, "-o", guard.path, "--force", "--max-iter", "1", "--hidden", "2")
    assert_clean_case(result, "train", (1, 2), names=[never_written])
    guard.assert_intact()


def test_encode_refuses_a_dataset_never_written(never_written, good_model, guard):
    result = invoke("encode", good_model, never_written, "-o", guard.path, "--force")
    assert_clean_case(result, "encode", (1, 2), names=[never_written])
    guard.assert_intact()


# --------------------------------------------------------------------------- every option
#
# The campaign below is generated from streamae/options.py: every command-line option of every
# command gets the hostile values its kind implies, on top of a command that is valid without it,
# so the option alone is at fault.  Each case must end in success or one clean sentence (exit 1
# or 2; exit 2 whenever the value is outside the option's declared type or range), with no raw
# escape code printed, nothing changed on disk when it fails, no temporary left behind, and
# within CASE_SECONDS.  An option whose kind yields no hostile value fails
# test_every_option_has_hostile_cases with a message saying where to add one.

# A case still running after this long has hung (a FIFO opened for reading, a loop): it fails.
CASE_SECONDS = 60
ESCAPED = "bad\x1b]0;owned\x07\x1b[2Jname"
TOO_LONG = "n" * 300

# Each command as valid without the option under test: (argv, the inputs it reads).
BASES: dict[str, Callable[[Path], list[str]]] = {
    "train": lambda f: ["train", f / "patches.h5", "-o", f / "out.h5", "--max-iter", "1", "--hidden", "2",
                        "-q"],
    "gradcheck": lambda f: ["gradcheck", "--rows", "4", "--hidden", "2", "--visible", "4", "-q"],
    "extract": lambda f: ["extract", f / "photo.png", "-o", f / "out.h5", "--num-patches", "10", "-q"],
    "encode": lambda f: ["encode", f / "model.h5", f / "patches.h5", "-o", f / "out.h5", "-q"],
    "visualize": lambda f: ["visualize", f / "model.h5", "-o", f / "out.png"],
    "info": lambda f: ["info", f / "model.h5"],
    "demo": lambda f: ["demo", "-o", f / "demo", "--num-patches", "200", "--max-iter", "1", "-q"],
    "export": lambda f: ["export", f / "model.h5", "-o", f / "out.npz"],
    "data": lambda f: ["data", "audio", "-o", f],
}  # fmt: skip

# Path options the command writes (the others it reads).  A new path option must be named in one
# of the two, so the campaign knows which hostile paths to give it.
OUTPUT_PATHS = {("train", "output"), ("train", "log"), ("extract", "output"), ("encode", "output"),
                ("visualize", "output"), ("visualize", "curves"), ("visualize", "activations"),
                ("demo", "output_dir"), ("export", "output"), ("data", "output")}  # fmt: skip
INPUT_PATHS = {("gradcheck", "data"), ("extract", "normalize_like"), ("extract", "vectors"),
               ("visualize", "reconstructions")}  # fmt: skip
# String options naming data as FILE[:DATASET] (their hostile values are spellings of that).
FILE_DATASET = {("train", "validation"), ("extract", "vectors")}


@dataclass(frozen=True)
class Hostile:
    """One hostile value: a label and the text given after the flag (``{f}`` is the case folder)."""

    label: str
    text: str


def _path_values(output: bool) -> list[Hostile]:
    common = [
        Hostile("missing folder", "{f}/missing/x.h5"),
        Hostile("a folder", "{f}/adir"),
        Hostile("a FIFO", "{f}/fifo.h5"),
        Hostile("a link loop", "{f}/loop.h5"),
        Hostile("escape codes", "{f}/" + ESCAPED + ".h5"),
        Hostile("too long", "{f}/" + TOO_LONG + ".h5"),
    ]
    if output:
        return [*common, Hostile("the null device", "/dev/null"), Hostile("the input", "{input}"),
                Hostile("another output", "{output}")]  # fmt: skip
    return [*common, Hostile("missing", "{f}/missing.h5"), Hostile("a device", "/dev/zero"),
            Hostile("the output", "{output}"), Hostile("the model", "{f}/model.h5"),
            Hostile("an image", "{f}/photo.png")]  # fmt: skip


NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e999", str(10**30), "abc", ""]


def hostile_values(command: str, option: Option) -> list[Hostile]:
    """The hostile values of ``option`` of ``command``, from its kind (empty: none known)."""
    key = (command, option.name)
    if option.kind is bool:
        return [Hostile("a value given to a flag", "=yes")]
    if key in FILE_DATASET:
        values = ["{f}/patches.h5:", "{f}/patches.h5:/missing", "{f}/patches.h5:patches", ":/patches",
                  "{f}/missing.h5:/patches", "{f}/patches.h5:/patches:/x", "{f}/adir:/patches",
                  "{f}/fifo.h5:/patches", "{f}/" + ESCAPED + ".h5:/patches", "{input}",
                  "{output}"]  # fmt: skip
        return [Hostile(f"FILE:DATASET {value!r}", value) for value in values]
    if option.choices is not None:
        return [Hostile("an unknown choice", "unknown"), Hostile("empty", ""),
                Hostile("escape codes", ESCAPED)]  # fmt: skip
    if option.kind == "path":
        if key in OUTPUT_PATHS:
            return _path_values(output=True)
        if key in INPUT_PATHS:
            return _path_values(output=False)
        return []
    if option.kind in (int, float):
        return [Hostile(f"number {value!r}", value) for value in NUMBERS]
    if option.kind in ("size", "shape"):
        sizes = ["0", "-1", "0x8", "8x", "axb", "nan", "1x2x3x4", str(10**30)]
        return [Hostile(f"size {v!r}", v) for v in sizes]
    if option.kind == "bytes":
        return [Hostile(f"bytes {v!r}", v) for v in ["-1", "nan", "inf", "1e999", "8Q", "", str(10**30)]]
    if option.kind is str:
        return [Hostile("empty", ""), Hostile("escape codes", ESCAPED),
                Hostile("a path that is not there", "/nonexistent"), Hostile("very long", "x" * 5000),
                Hostile("nan", "nan")]  # fmt: skip
    return []


def all_options() -> list[tuple[str, Option]]:
    """(command, option) for every command-line option of every command."""
    return [(name, option) for name, spec in COMMANDS.items() for option in spec if option.cli]


def campaign_cases() -> list[tuple[str, Option, Hostile]]:
    return [(c, o, h) for c, o in all_options() for h in hostile_values(c, o)]


def test_every_option_has_hostile_cases():
    missing = [
        f"{command} {option.cli_flag} (kind {getattr(option.kind, '__name__', option.kind)})"
        for command, option in all_options()
        if not hostile_values(command, option)
    ]
    assert not missing, (
        f"no hostile case for {', '.join(missing)}: in tests/faults/test_faults_generated.py add the "
        "option to OUTPUT_PATHS or INPUT_PATHS (a path), to FILE_DATASET (FILE[:DATASET] text), or "
        "give its kind a list of values in hostile_values()"
    )


def _populate(folder: Path) -> None:
    """The inputs every base command reads, and the hostile things paths point at."""
    data = np.random.default_rng(7).uniform(0.1, 0.9, size=(300, 64)).astype(np.float32)
    write_patch_file(folder / "patches.h5", data, chunk_rows=64, patch_shape=(8, 8, 1))
    write_model(folder / "model.h5", n=64, s=9, patch_shape=(8, 8, 1))
    pixels = np.random.default_rng(4).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "photo.png")
    (folder / "adir").mkdir()
    os.mkfifo(folder / "fifo.h5")
    (folder / "loop.h5").symlink_to(folder / "loop.h5")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime) of everything under ``folder`` (FIFOs and links by lstat)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            info = os.lstat(Path(root) / name)
            found[os.path.relpath(Path(root) / name, folder)] = (info.st_size, info.st_mtime_ns)
    return found


def _expects_usage_error(option: Option, text: str) -> bool:
    """True when ``text`` is outside the option's declared type or range (so exit code 2)."""
    if option.kind is bool:
        return True
    if option.choices is not None:
        return text not in option.choices
    if option.kind in (int, float):
        try:
            value = int(text) if option.kind is int else float(text)
        except ValueError:
            return True
        if option.kind is float and not math.isfinite(value):
            return True
    elif option.parse is not None:
        value = text
    else:
        return False
    try:
        option.check(value)
    except UsageError:
        return True
    return False


class Hung(BaseException):
    """Raised by the alarm in a case that ran past CASE_SECONDS (not an Exception: nothing catches it)."""


def invoke_with_timeout(argv: list[object]):
    def alarm(signum, frame):
        raise Hung

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        return invoke(*argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _case_argv(command: str, option: Option, hostile: Hostile, folder: Path) -> list[object]:
    base = [str(a) for a in BASES[command](folder)]
    output = next((base[i + 1] for i, a in enumerate(base) if a == "-o"), str(folder / "out.h5"))
    inputs = [a for a in base[1:] if a.startswith(str(folder)) and a != output]
    text = hostile.text.format(f=folder, input=inputs[0] if inputs else folder / "model.h5", output=output)
    if option.kind is bool:
        return [*base, option.cli_flag + text]
    return [*base, option.cli_flag, text]


@pytest.mark.parametrize(
    ("command", "option", "hostile"),
    campaign_cases(),
    ids=[f"{c}-{o.cli_flag}-{h.label}" for c, o, h in campaign_cases()],
)
def test_generated_hostile_value(tmp_path, command, option, hostile):
    folder = tmp_path / "case"
    folder.mkdir()
    _populate(folder)
    argv = _case_argv(command, option, hostile, folder)
    before = _snapshot(folder)
    try:
        result = invoke_with_timeout(argv)
    except Hung:
        FIGURES.record_case(f"{command} (gen)", False)
        pytest.fail(f"streamae {command} {option.cli_flag} {hostile.label}: running after {CASE_SECONDS} s")
    assert "\x1b" not in result.stdout + result.stderr, "a raw escape code was printed"
    expect_usage = _expects_usage_error(option, argv[-1] if option.kind is not bool else "")
    if result.exit_code == 0 and not expect_usage:
        FIGURES.record_case(f"{command} (gen)", True)
        assert_no_temporaries(folder)
        return
    codes = (2,) if expect_usage else (1, 2)
    problems = failure_problems(result.stdout, result.stderr, result.exit_code, codes, [])
    FIGURES.record_case(f"{command} (gen)", not problems)
    assert not problems, f"{problems}\nstderr: {result.stderr}"
    assert _snapshot(folder) == before, "a failed run changed the files"
    assert_no_temporaries(folder)


# Library-only options (no flag) meet the same numbers through the options objects the API builds.
API_NUMBERS = [0, -1, math.nan, math.inf, -math.inf, 10**30, "abc", None, True]


def library_only_options() -> list[tuple[str, Option]]:
    return [(name, option) for name, spec in COMMANDS.items() for option in spec if not option.cli]


@pytest.mark.parametrize(
    ("command", "option"), library_only_options(), ids=[f"{c}-{o.name}" for c, o in library_only_options()]
)
def test_library_only_options_refuse_hostile_numbers(command, option):
    from streamae.options import Options

    assert option.kind in (int, float), f"{command} {option.name}: give its kind hostile values here"
    spec = COMMANDS[command]
    options_class = next(cls for cls in Options.__subclasses__() if cls.spec is spec)
    for value in API_NUMBERS:
        try:
            option.check(value)
        except UsageError:
            with pytest.raises(UsageError) as refused:
                options_class(**{option.name: value})
            assert refused.value.parameter == option.name
            FIGURES.record_case(f"{command} (gen, API)", True)
        else:
            options_class(**{option.name: value})  # a legal value builds
            FIGURES.record_case(f"{command} (gen, API)", True)
