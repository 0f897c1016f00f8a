"""Every option of every command, declared once: name, type, range or choices, default, help.

The library validates keyword arguments with these specs (:meth:`OptionSet.validate`),
text with a grammar of its own included (``warm_start``), and its messages name the
*parameter* ("hidden must be an integer ≥ 1, got 0"); the command line builds its click
options from the same specs, reports an error by the flag of the parameter it carries, and
has the library say settings in flags (:func:`setting`, :func:`speaking_flags`).  A
training option also says where model files and checkpoints keep it (``stored``) and
what ``resume`` does with it (``on_resume``): model files, checkpoints, ``--resume`` and
``info`` read that.  Adding an option means adding one :class:`Option` here plus the code
that uses the value (``tests/test_options.py`` follows a throw-away one through).

This module imports nothing heavy (no NumPy, Numba or h5py), so ``streamae --help``
stays cheap to build from it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from streamae.errors import UsageError

# The largest seed any command takes: NumPy's generators take any non-negative integer,
# but the seed is stored as an HDF5 int64 attribute.
MAX_SEED = 2**63 - 1


def _number(value: float) -> str:
    """A bound as typed: ``1``, ``0.5``, ``9223372036854775807`` (not ``9.22337e+18``)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Option:
    """One parameter of one command.

    ``name`` is the library's keyword (``lam``); ``flag`` the command line's spelling
    when it differs from ``--`` + name with ``_`` → ``-`` (``--lambda``).  ``kind`` is
    ``int``, ``float``, ``str``, ``bool`` (a flag) or ``"path"``.  ``low``/``high``
    bound numbers (``low_open``/``high_open``: the bound itself is excluded);
    ``choices`` lists the allowed strings.  ``nullable``: ``None`` is allowed and means
    what ``help`` says.  ``unit`` names the unit of a number (``"bytes"``, ``"minutes"``)
    for help texts and messages.  ``cli=False`` keeps an option library-only;
    ``library=False`` a command-line-only one (``--quiet``, ``--debug``).  ``parse``
    turns text or a loose value into the option's value (``"12x8"`` → ``(12, 8)``),
    raising ValueError with the reason.  ``inverted``: a flag that sets the option to
    False (``--no-file-locking`` → ``file_locking=False``; not given → the default).
    ``show_default`` overrides whether ``--help`` shows the default; ``metavar`` names the
    value in ``--help``; ``required``: the command line insists on it.

    What a model file (and so a checkpoint) keeps of the option: ``stored`` is where its
    value lies, ``"attrs/lambda"`` (a file attribute), ``"info/max_iter"`` (a key of the
    ``info`` attribute; deeper keys with more ``/``) or ``"data/dataset"`` (the data
    fingerprint); ``restore`` turns the stored value back into the option's (default: as
    stored).  ``on_resume`` says what ``resume=True`` does with it: ``"same"`` — it changes
    the objective or the optimizer, so a given value must agree with the checkpoint's;
    ``"new"`` — a given value applies from then on; ``"unused"`` — it only shaped the
    start (the seed).  Every option with ``on_resume`` is taken from the checkpoint when
    a resumed run is not given it (:mod:`streamae.training.resume`).
    """

    name: str
    kind: object
    default: object
    help: str
    flag: str | None = None
    short: str | None = None
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    unit: str | None = None
    cli: bool = True
    library: bool = True
    metavar: str | None = None
    parse: Callable[[object], object] | None = None
    show_default: bool | None = None
    inverted: bool = False
    required: bool = False
    stored: str | None = None
    restore: Callable[[object], object] | None = None
    on_resume: str | None = None

    def __post_init__(self) -> None:
        if self.on_resume not in (None, "same", "new", "unused"):
            raise ValueError(f"{self.name}: on_resume must be same, new or unused, not {self.on_resume!r}")
        if self.stored is not None and self.stored.split("/")[0] not in ("attrs", "info", "data"):
            raise ValueError(
                f"{self.name}: stored must begin with attrs/, info/ or data/, not {self.stored!r}"
            )

    @property
    def stored_path(self) -> tuple[str, ...]:
        """``stored`` as its parts: ``("info", "warm_start", "schedule")`` (empty when not stored)."""
        return tuple(self.stored.split("/")) if self.stored else ()

    @property
    def cli_flag(self) -> str:
        """The command line's flag, such as ``--max-iter``."""
        return self.flag or "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        """The allowed values in words: "an integer ≥ 1", "one of sigmoid, linear"."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        noun = {int: "an integer", float: "a finite number", str: "a string", bool: "True or False"}.get(
            self.kind, "a path"
        )
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '≥'} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '≤'} {_number(self.high)}")
        return noun + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value: object) -> object:
        """``value`` converted to this option's type; a :class:`UsageError` naming the parameter if not."""
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise UsageError(f"{self.name} must be {self.describe_range()}, got None.", parameter=self.name)
        if self.parse is not None:
            try:
                return self.parse(value)
            except (TypeError, ValueError) as error:
                raise UsageError(f"{self.name} {error}", parameter=self.name) from None
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{self.name} must be True or False, got {value!r}.", parameter=self.name)
            return value
        if self.kind == "path":
            if not isinstance(value, str | os.PathLike):
                raise self._bad(value)
            return value
        if self.kind is int:
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or int(value) != value
            ):
                raise self._bad(value)
            value = int(value)
            # No count or size reaches 2**63 (NumPy and HDF5 overflow past it); a seed may.
            if self.high is None and self.name != "seed" and abs(value) > MAX_SEED:
                raise UsageError(
                    f"{self.name} must be {self.describe_range()} and at most {MAX_SEED}, "
                    f"got {_number(value) if abs(value) < 10**60 else 'a larger number'}.",
                    parameter=self.name,
                )
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise self._bad(value)
            value = float(value)
        elif self.kind is str and not isinstance(value, str):
            raise self._bad(value)
        if self.choices is not None and value not in self.choices:
            raise self._bad(value)
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise self._bad(value)
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise self._bad(value)
        return value

    def _bad(self, value: object) -> UsageError:
        shown = repr(value) if isinstance(value, str) else str(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return UsageError(f"{self.name} must be {self.describe_range()}, got {shown}.", parameter=self.name)


@dataclass(frozen=True)
class OptionSet:
    """The options of one command, in the order ``--help`` lists them."""

    command: str
    options: tuple[Option, ...]
    _by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {option.name: option for option in self.options})

    def __getitem__(self, name: str) -> Option:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self.options)

    def library_options(self) -> tuple[Option, ...]:
        """The options the library function takes (not ``--quiet``, ``--debug``)."""
        return tuple(option for option in self.options if option.library)

    def defaults(self) -> dict[str, object]:
        """Every library option's default, by parameter name."""
        return {option.name: option.default for option in self.library_options()}

    def validate(self, values: Mapping[str, object]) -> dict[str, object]:
        """``values`` (parameter name → value) checked and completed with the defaults.

        Raises :class:`UsageError` naming the parameter for an unknown name or a value
        outside the option's type, range or choices.
        """
        known = {option.name for option in self.library_options()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(
                f"{self.command} takes no parameter {unknown[0]!r}; "
                f"its parameters are {', '.join(o.name for o in self.library_options())}.",
                parameter=unknown[0],
            )
        checked = self.defaults()
        for name, value in checked.items():
            if self._by_name[name].parse is not None and value is not None:
                checked[name] = self._by_name[name].parse(value)  # "8" → (8, 8)
        for name, value in values.items():
            checked[name] = self._by_name[name].check(value)
        return checked

    def flag_for(self, name: str) -> str | None:
        """The command line's flag of parameter ``name`` (None if it has none)."""
        option = self._by_name.get(name)
        return option.cli_flag if option is not None and option.cli else None


def flags_in(sets: Iterable[OptionSet]) -> dict[str, str]:
    """Parameter name → flag over several option sets (for error messages)."""
    mapping: dict[str, str] = {}
    for option_set in sets:
        for option in option_set:
            if option.cli:
                mapping.setdefault(option.name, option.cli_flag)
    return mapping


# --- settings said in messages -------------------------------------------------------------
# The library's messages name settings as a Python caller types them (``force=True``);
# the command line speaks in flags (``--force``).  A message says a setting through
# :func:`setting`, which asks the vocabulary in effect: the library's by default, the
# command's flags inside :func:`speaking_flags` (the command line's error handling).
_FLAGS: contextvars.ContextVar[dict[str, Option] | None] = contextvars.ContextVar(
    "streamae_flags", default=None
)
# How to run the command again with some settings changed (the command line's own words).
_AGAIN: contextvars.ContextVar[Callable[[dict], str] | None] = contextvars.ContextVar(
    "streamae_again", default=None
)


@contextlib.contextmanager
def speaking_flags(
    option_set: OptionSet | None = None, again: Callable[[dict], str] | None = None
) -> Iterator[None]:
    """Within the block, messages say settings as flags, ``option_set``'s first.

    ``again(changes)`` spells the whole command run again with ``changes`` (parameter
    name → value), for messages that tell how to continue (:func:`again_with`).
    """
    vocabulary: dict[str, Option] = {}
    for each in ([option_set] if option_set is not None else []) + list(COMMANDS.values()):
        for option in each:
            if option.cli:
                vocabulary.setdefault(option.name, option)
    tokens = (_FLAGS.set(vocabulary), _AGAIN.set(again))
    try:
        yield
    finally:
        _FLAGS.reset(tokens[0])
        _AGAIN.reset(tokens[1])


def again_with(**changes: object) -> str:
    """How to run the same call again with ``changes``: ``resume=True`` for the library,
    the whole command (`` `streamae train DATA -o MODEL --resume` ``) on the command line."""
    again = _AGAIN.get()
    if again is not None:
        return again(changes)
    return " and ".join(setting(name, value) for name, value in changes.items())


def setting(name: str, value: object = True, text: str | None = None) -> str:
    """A setting as the caller types it: ``force=True`` / ``decoder='linear'`` for the
    library, ``--force`` / ``--decoder linear`` on the command line.

    ``text`` is the value as the message shows it (default: ``repr`` of a string, else
    ``str``); a flag that takes no value is said alone (``--resume``).
    """
    shown = text if text is not None else (repr(value) if isinstance(value, str) else str(value))
    option = (_FLAGS.get() or {}).get(name)
    if option is None:
        return f"{name}={shown}"
    if option.kind is bool:
        return option.cli_flag if value is (not option.inverted) else f"{name}={shown}"
    return f"{option.cli_flag} {text if text is not None else value}"


def said(name: str) -> str:
    """A parameter's name as the caller knows it: ``lam``, or ``--lambda`` on the command line."""
    option = (_FLAGS.get() or {}).get(name)
    return option.cli_flag if option is not None else name


def resumable(option_set: OptionSet) -> tuple[Option, ...]:
    """The options a checkpoint carries: those a resumed run takes from it when not given."""
    return tuple(option for option in option_set if option.on_resume is not None)


def stored_value(option: Option, sections: Mapping[str, object]) -> object:
    """``option``'s value as a model file keeps it (None when the file does not record it).

    ``sections`` maps ``"attrs"``, ``"info"`` and ``"data"`` to what the file holds
    there (plain dicts, as decoded).
    """
    value: object = sections
    for key in option.stored_path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if value is None:
        return None
    return option.restore(value) if option.restore is not None else value


def stored_settings_in(option_set: OptionSet, sections: Mapping[str, object]) -> dict[str, object]:
    """Parameter name → value of every resumable option the file records."""
    found = {option.name: stored_value(option, sections) for option in resumable(option_set)}
    return {name: value for name, value in found.items() if value is not None}


def info_settings(option_set: OptionSet, values: Mapping[str, object]) -> dict[str, object]:
    """The ``info`` entries of the options stored directly under ``info/``: key → value."""
    return {
        option.stored_path[1]: values[option.name]
        for option in option_set
        if len(option.stored_path) == 2
        and option.stored_path[0] == "info"
        and option.restore is None  # a value made from a record is written by that record
        and option.name in values
    }


# --- values written as text --------------------------------------------------------------


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_size(value: object) -> tuple[int, int]:
    """``8``, ``"8"``, ``"12x8"`` or ``(12, 8)`` as a (height, width) pair of positive ints."""
    if isinstance(value, tuple | list):
        numbers = tuple(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        numbers = (value,)
    else:
        try:
            numbers = tuple(int(part) for part in str(value).lower().replace("×", "x").split("x"))
        except ValueError:
            numbers = ()
    if (
        len(numbers) not in (1, 2)
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
        or min(numbers) < 1
    ):
        raise ValueError(f"must be one positive integer (8) or HEIGHTxWIDTH (12x8), got {_shown(value)}.")
    return numbers * 2 if len(numbers) == 1 else numbers


def parse_patch_shape(value: object) -> tuple[int, int, int]:
    """``HxW`` or ``HxWxC`` (``,`` also separates; or a tuple) as (h, w, c); c defaults to 1."""
    if isinstance(value, tuple | list):
        parts = [str(part) for part in value]
    else:
        parts = [part for part in re.split(r"[x,X×]", str(value).strip()) if part]
    if len(parts) not in (2, 3) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(
            f"must be HxW or HxWxC with positive whole numbers (such as 8x8 or 8x8x3), got {_shown(value)}."
        )
    values = [int(part) for part in parts]
    return (values[0], values[1], values[2] if len(values) == 3 else 1)


def parse_bytes(value: object) -> int:
    """Bytes from ``8G``, ``512M``, ``1.5GiB``, a plain byte count or an int (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = float(value)
    else:
        units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in units and text[-1:] != "" else ""
        number = text[:-1] if unit else text
        try:
            size = float(number) * units[unit]
        except ValueError:
            raise ValueError(f"must be a size such as 8G, 512M or 1000000, got {_shown(value)}.") from None
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"must be at least 0, got {_shown(value)}.")
    return int(size)


def parse_warm_start(value: object) -> str:
    """``"none"``, ``"auto"`` or increasing sample sizes (``"20000,200_000"``), as given.

    Only the grammar: whether the sizes fit the data is checked when the file is open.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be none, auto or sample sizes such as 20000,200000, got {_shown(value)}.")
    word = value.strip().lower()
    if word in ("none", "auto"):
        return value
    parts = [part.strip().replace("_", "") for part in word.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(
            f"must be none, auto or increasing sample sizes such as 20000,200000, got {_shown(value)}."
        )
    sizes = [int(part) for part in parts]
    if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ValueError(f"sample sizes must increase from stage to stage, got {_shown(value.strip())}.")
    return value


def parse_held_out_file(value: object) -> str:
    """A held-out ``FILE[:/DATASET]`` as text (a path object is taken as the file)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ValueError(f"must be a file name FILE or FILE:/DATASET, got {_shown(value)}.")
    if not value:
        raise ValueError("must name a file (FILE or FILE:/DATASET).")
    return value


def _held_out_file_of(record: object) -> str | None:
    """The ``validation`` value a model's held-out record stands for (None for a fraction)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("path"), str):
        return None
    dataset = record.get("dataset")
    return record["path"] + (f":{dataset}" if isinstance(dataset, str) else "")


# --- shared by several commands ----------------------------------------------------------

DECODERS = ("sigmoid", "linear")
DTYPES = ("float32", "float64")
SCHEMES = ("auto", "two-pass", "single-pass", "in-core")
COLORS = ("gray", "rgb")
NORMALIZATIONS = ("ufldl", "zscore", "zca", "unit", "none")
# The value types of raw image files (streamae.extraction.readers.RAW_DTYPES spells them out).
RAW_DTYPE_NAMES = ("uint8", "uint16-le", "uint16-be", "float32-le", "float32-be", "float64-le", "float64-be")
STORAGE_TYPES = ("float32", "float16")
COMPRESSIONS = ("none", "gzip", "lzf")
SORT_ORDERS = ("none", "activation", "norm")
# The largest --scale: a 64x enlargement of a 28x28 grid of 400 units is already ~36000 px wide.
MAX_SCALE = 64
DEFAULT_CHECKPOINT_EVERY = 10
# By default a checkpoint waits until writing it takes at most this share of the time
# since the last one: with 100 L-BFGS pairs of 308,308 parameters (784 -> 196) a
# checkpoint holds 0.5 GB of pairs and took 1.5-2.6 s (0.1 copied them into order
# first), against ~5 s for 10 iterations.
CHECKPOINT_TIME_SHARE = 0.05
# L-BFGS correction pairs kept (the notes' minFunc keeps 100).
DEFAULT_LBFGS_PAIRS = 100
# The relative-progress stop rule's defaults, chosen by measurement (docs/time-to-model.md;
# which tolerance a run takes: streamae/training/stopping.py).
DEFAULT_TOLERANCE = 1e-4
FEW_ROWS_TOLERANCE = 3e-4  # when the data holds fewer rows than the model has parameters
DEFAULT_TOLERANCE_WINDOW = 10

FORCE = Option("force", bool, False, "Replace the output file if it exists.", short="-f")
QUIET = Option(
    "quiet", bool, False, "Print nothing but errors and the final summary.", short="-q", library=False
)
DEBUG = Option("debug", bool, False, "Show the full traceback of any error (for bug reports).", library=False)


def _seed(help_text: str, high: int | None = None) -> Option:
    return Option("seed", int, 0, help_text, low=0, high=high)


# --- datasets, activations, held-out evaluation, audio (issue 15) --------------------------
# Each concern is its own small set, so commands pick what they take with
# ``spec_options(SET, "name")`` and the library validates with the same declarations.

DEFAULT_DATASET = "/patches"
ACTIVATIONS = ("sigmoid", "tanh")
CHANNEL_MODES = ("mix", "keep")

DATA = OptionSet(
    "data",
    (
        Option(
            "dataset",
            str,
            DEFAULT_DATASET,
            "The 2-D dataset of the HDF5 file to read, one example per row (a path such as "
            "/embeddings or /group/X).",
            stored="data/dataset",  # absent for /patches
            on_resume="same",
        ),
    ),
)

ACTIVATION = Option(
    "activation",
    str,
    "sigmoid",
    "Hidden units: sigmoid (inactive near 0) or tanh (inactive near -1; rho applies to "
    "the mean of (a2 + 1)/2).",
    choices=ACTIVATIONS,
    stored="attrs/activation",
    on_resume="same",
)

VALIDATION = OptionSet(
    "validation",
    (
        Option(
            "validation",
            str,
            None,
            "Held-out data FILE[:DATASET] evaluated during training (not trained on).",
            nullable=True,
            parse=parse_held_out_file,
            stored="info/validation",
            restore=_held_out_file_of,
            on_resume="new",
        ),
        Option(
            "validation_fraction",
            float,
            None,
            "Hold this fraction of the training file's rows out of training (whole blocks of a "
            "seeded choice, and part of one more, so the count is exact) and evaluate on them.",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
            nullable=True,
            stored="info/validation/fraction",
            on_resume="same",  # it chooses the training rows
        ),
        Option(
            "validate_every",
            int,
            1,
            "Evaluate the held-out data every this many iterations.",
            low=1,
            stored="info/validation/every",
            on_resume="new",
        ),
        Option(
            "early_stop",
            int,
            None,
            "Stop when the held-out objective has not improved for this many validations, keeping "
            "the best parameters.",
            low=1,
            nullable=True,
            stored="info/validation/early_stop",
            on_resume="new",
        ),
        Option(
            "early_stop_min_improvement",
            float,
            # Measured (benchmarks/early_stop_threshold.py, 2026-12-07) on the shipped photos
            # (10,000 8x8 patches) and MNIST digits (10,000 x 784 -> 196), 10% held out: with
            # early_stop 5, 1e-4 stops MNIST at iteration 304 keeping a held-out J 0.75% above
            # the 400-iteration run's lowest (0: 385, 0.11%; 1e-3: 219, 2.5%); on the photos
            # every value up to 3e-4 stops where 0 does.  1e-5 creep is not progress.
            1e-4,
            "With --early-stop: a held-out objective counts as improved only when it is below "
            "(1 - this) times that of the last improvement.",
            low=0,
            high=1,
            high_open=True,
        ),
    ),
)

AUDIO = OptionSet(
    "audio",
    (
        Option(
            "channels",
            str,
            "mix",
            "Audio with several channels: mix them to mono, or keep them (each window holds "
            "every channel, interleaved per sample).",
            choices=CHANNEL_MODES,
        ),
    ),
)

VISUALIZE_SIGNALS = OptionSet(
    "visualize",
    (
        Option(
            "spectra",
            bool,
            False,
            "For a model of 1-D signals, add each unit's magnitude spectrum below its waveform.",
        ),
    ),
)


def dataset_path(name: str) -> str:
    """``name`` as an absolute HDF5 path (``embeddings`` → ``/embeddings``)."""
    checked = DATA["dataset"].check(name)
    if not checked or checked.strip("/") == "":
        raise UsageError(f"dataset must name a dataset such as /patches, got {name!r}.", parameter="dataset")
    return "/" + checked.strip("/")


# --- train -------------------------------------------------------------------------------

TRAIN = OptionSet(
    "train",
    (
        Option(
            "output",
            "path",
            "model.h5",
            "Model file to write (HDF5); also the checkpoint --resume continues from.",
            short="-o",
            library=False,  # the library's second positional argument (None: write nothing)
        ),
        Option("hidden", int, 25, "Hidden units s2.", low=1, stored="attrs/hidden", on_resume="same"),
        Option(
            "rho",
            float,
            0.01,
            "Target mean activation (0, 1).",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
            stored="attrs/rho",
            on_resume="same",
        ),
        Option(
            "beta",
            float,
            3.0,
            "Weight of the sparsity penalty.",
            low=0,
            stored="attrs/beta",
            on_resume="same",
        ),
        Option(
            "lam",
            float,
            1e-4,
            "Weight decay.",
            flag="--lambda",
            low=0,
            stored="attrs/lambda",
            on_resume="same",
        ),
        Option(
            "max_iter", int, 400, "L-BFGS iterations at most.", low=0, stored="info/max_iter", on_resume="new"
        ),
        Option(
            "decoder",
            str,
            "sigmoid",
            "Output layer: sigmoid (data in [0, 1]) or linear (any real data).",
            choices=DECODERS,
            stored="attrs/decoder",
            on_resume="same",
        ),
        ACTIVATION,
        Option(
            "dtype",
            str,
            "float32",
            "Compute type of the kernels; sums and the optimizer are always float64.",
            choices=DTYPES,
            stored="info/dtype",
            on_resume="same",
        ),
        Option(
            "chunk_rows",
            int,
            None,
            "Rows per read (default: whole HDF5 chunks, about 8 MiB of rows).",
            low=1,
            # As asked (None: the read policy chooses again on resume, so the ranks'
            # shares stay those of the run continued); the rows used are info["chunk_rows"].
            stored="info/asked_chunk_rows",
            on_resume="new",
        ),
        Option(
            "threads",
            int,
            None,
            "Compute threads per process, Numba and BLAS alike (default: SLURM_CPUS_PER_TASK, "
            "else the CPU affinity shared among the MPI ranks of the node).",
            low=1,
        ),
        Option("seed", int, 0, "Seed of the initial weights.", low=0, stored="info/seed", on_resume="unused"),
        Option(
            "grad_tol",
            float,
            1e-5,
            "Stop when max |gradient| is below this.",
            low=0,
            stored="info/grad_tol",
            on_resume="new",
        ),
        Option(
            "progress_tol",
            float,
            1e-9,
            "Stop when J changes by less than this.",
            low=0,
            stored="info/progress_tol",
            on_resume="new",
        ),
        # The relative-progress rule (issue 24; compute/lbfgs.py, relative_progress_reason).
        Option(
            "tolerance",
            float,
            None,
            "Stop when J fell by less than this fraction of its value over the last "
            f"--tolerance-window full-data iterations: the model is done (default: "
            f"{DEFAULT_TOLERANCE:g}, or {FEW_ROWS_TOLERANCE:g} when the data holds fewer rows than "
            "the model has parameters; 0: never; the notes' run is --warm-start none --tolerance 0).",
            low=0,
            high=1,
            high_open=True,
            nullable=True,
            stored="info/tolerance",
            on_resume="new",
        ),
        Option(
            "tolerance_window",
            int,
            DEFAULT_TOLERANCE_WINDOW,
            "Iterations over which --tolerance measures the fall of J.",
            low=1,
            high=10_000,
            stored="info/tolerance_window",
            on_resume="new",
        ),
        Option(
            "lbfgs_pairs",
            int,
            DEFAULT_LBFGS_PAIRS,
            "L-BFGS correction pairs kept (its memory, in pairs of parameter vectors).",
            low=1,
            cli=False,
            stored="info/lbfgs_pairs",
            on_resume="same",
        ),
        Option(
            "resume",
            bool,
            False,
            "Continue from the model file at --output (a checkpoint), exactly where it stopped; "
            "refused if the data or the hyperparameters differ.",
        ),
        Option(
            "checkpoint_every",
            int,
            None,
            "Rewrite the model file (atomically, with the optimizer state) every this many "
            f"iterations; 0: only at the end.  Default: every {DEFAULT_CHECKPOINT_EVERY}, or less "
            f"often when writing one takes more than {CHECKPOINT_TIME_SHARE:.0%} of the time since "
            "the last (100 L-BFGS pairs of 784 -> 196 weights are 0.5 GB).",
            low=0,
        ),
        Option(
            "checkpoint_minutes",
            float,
            None,
            "Also rewrite it whenever this many minutes have passed since the last one.",
            low=0,
            low_open=True,
            unit="minutes",
        ),
        Option(
            "scheme",
            str,
            "auto",
            "How an evaluation reads the data: in-core reads it once into memory (if it fits "
            "--memory-budget), single-pass once per evaluation, two-pass twice (the notes' scheme); "
            "auto: in-core if it fits, else single-pass.  All give the same J and gradient.",
            choices=SCHEMES,
            stored="info/scheme",  # the scheme chosen (auto resolved), kept on resume
            on_resume="new",
        ),
        Option(
            "memory_budget",
            "bytes",
            None,
            "Memory the in-core scheme may use per process, e.g. 8G or 512M "
            "(default: half the available memory, shared by the ranks on a node).",
            parse=parse_bytes,
        ),
        Option(
            "file_locking",
            bool,
            None,
            "Open the data without HDF5 file locks (NFS, Lustre; same as HDF5_USE_FILE_LOCKING=FALSE).",
            flag="--no-file-locking",
            inverted=True,
            nullable=True,
        ),
        Option(
            "log",
            "path",
            None,
            "Write one JSON object per iteration to this file (JSON lines; appended on --resume).",
        ),
        *DATA.options,
        *VALIDATION.options,
        Option(
            "warm_start",
            str,
            "auto",
            "Coarse-to-fine warm start: auto (above 25 rows per parameter: samples of 5 rows "
            "per parameter, x10 per stage below a tenth of the data; up to it, none), none (the "
            "notes' run) or sample sizes such as 20000,200000.  Each stage runs L-BFGS on whole "
            "chunks spread over the file and hands its weights to the next; the last stage is the "
            "full data with --max-iter (full-data iterations) and the tolerances.",
            parse=parse_warm_start,
            stored="info/warm_start/schedule",
            on_resume="new",  # the stages run so far must agree (training/warmstart.py checks)
        ),
        Option(
            "keep_state",
            bool,
            False,
            "Keep the L-BFGS state in the finished model, so that --resume can continue it "
            "later (checkpoints always hold it; a finished model without it is much smaller).",
        ),
        QUIET,
        FORCE,
        DEBUG,
    ),
)

# --- gradcheck ---------------------------------------------------------------------------

GRADCHECK_THRESHOLD = 1e-9

GRADCHECK = OptionSet(
    "gradcheck",
    (
        Option(
            "data",
            "path",
            None,
            "Check on the first --rows rows of this patch file (default: a small random problem).",
            library=False,  # the library's first argument
        ),
        Option("rows", int, 20, "Rows to use.", low=1),
        Option("hidden", int, 5, "Hidden units.", low=1),
        Option("n_visible", int, 16, "Inputs of the random problem.", flag="--visible", low=1),
        Option("decoder", str, "sigmoid", "Output layer.", choices=DECODERS),
        ACTIVATION,
        Option("block_rows", int, None, "Rows per streamed block (default: a third of --rows).", low=1),
        # At most 1: a larger step measures nothing about the gradient (and overflows).
        Option("epsilon", float, 1e-4, "Central-difference step.", low=0, low_open=True, high=1),
        _seed("Seed of the point and the random data."),
        Option(
            "rho",
            float,
            0.1,
            "Target mean activation.",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
            cli=False,
        ),
        Option("beta", float, 3.0, "Weight of the sparsity penalty.", low=0, cli=False),
        Option("lam", float, 1e-3, "Weight decay.", low=0, cli=False),
        *DATA.options,
        QUIET,
        DEBUG,
    ),
)

# --- extract -----------------------------------------------------------------------------

DEFAULT_NUM_PATCHES = 10_000
DEFAULT_ZCA_EPSILON = 0.1

EXTRACT = OptionSet(
    "extract",
    (
        Option("output", "path", "patches.h5", "Patch file to write (HDF5).", short="-o", library=False),
        Option(
            "patch_size",
            "size",
            "8",
            "Patch size: N for NxN, or HEIGHTxWIDTH such as 12x8.",
            parse=parse_size,
            metavar="SIZE",
        ),
        Option(
            "num_patches",
            int,
            None,
            "Random patches to cut: an image chosen uniformly, then a position uniformly "
            f"(the notes' sampleIMAGES).  [default: {DEFAULT_NUM_PATCHES} unless --stride is given]",
            low=1,
        ),
        Option(
            "stride",
            "size",
            None,
            "Instead of random patches, every patch on a grid with this step (S or SYxSX); "
            "e.g. whole MNIST digits with --patch-size 28 --stride 28.",
            parse=parse_size,
            metavar="SIZE",
        ),
        Option(
            "color", str, "gray", "gray (ITU-R BT.601 luma) or rgb (3 channels per pixel).", choices=COLORS
        ),
        Option(
            "normalize",
            str,
            "ufldl",
            "ufldl: per-patch mean removed, clipped at 3 sigma, mapped to [0.1, 0.9] (the notes); "
            "zscore: per-pixel mean and std; zca: ZCA whitening; unit: pixel/255; none: raw values.",
            choices=NORMALIZATIONS,
        ),
        Option(
            "zca_epsilon",
            float,
            DEFAULT_ZCA_EPSILON,
            "Regulariser of ZCA whitening, for pixel values in [0, 1].",
            low=0,
            low_open=True,
        ),
        # At most MAX_SEED: extract stores the seed in the file as a signed 64-bit attribute.
        _seed("Seed of the random patch positions; the same seed gives the same patches.", high=MAX_SEED),
        Option("chunk_rows", int, None, "Rows per HDF5 chunk.  [default: about 1 MiB of rows]", low=1),
        Option(
            "compression",
            str,
            "none",
            "HDF5 compression of /patches; gzip reads slower than training consumes data.",
            choices=COMPRESSIONS,
        ),
        # Float16 storage (issue 24): half the bytes per pass; decoded per block when read.
        Option(
            "storage",
            str,
            "float32",
            "Type of the stored patches: float16 halves the bytes every pass reads (about 3 "
            "significant digits, values up to 65504); train and encode convert each block as they "
            "read it.",
            choices=STORAGE_TYPES,
        ),
        Option(
            "variable",
            str,
            None,
            "Array to read from .mat and .npz files (needed when they hold more than one).",
        ),
        Option(
            "raw_shape",
            "size",
            None,
            "Read files of no known type (in folders: no suffix, .raw, .bin, .dat) as raw pixels "
            "without a header: HEIGHTxWIDTH per image, images back to back (Olshausen's: 512x512).",
            parse=parse_size,
            metavar="SIZE",
            nullable=True,
        ),
        Option(
            "raw_dtype",
            str,
            "float32-be",
            "The value type of raw files (with --raw-shape); -be/-le: big/little-endian.",
            choices=RAW_DTYPE_NAMES,
        ),
        Option(
            "normalize_like",
            "path",
            None,
            "Apply the normalisation stored in this earlier patch file (ufldl sigma, z-score "
            "statistics, ZCA mean and matrix) instead of fitting a new one.",
            nullable=True,
        ),
        Option(
            "skip_bad",
            bool,
            False,
            "Skip a source that cannot be read, with one warning per file, instead of failing; "
            "skipped files are counted in the summary and listed in the file.",
        ),
        Option(
            "vectors",
            "path",
            None,
            "FILE.npy or FILE.h5:DATASET holding an (m, n) array: write its rows as they are "
            "(patch shape (n,), no normalisation) instead of cutting patches from images.",
            nullable=True,
        ),
        *AUDIO.options,
        FORCE,
        QUIET,
        DEBUG,
    ),
)

# --- encode ------------------------------------------------------------------------------

ENCODE = OptionSet(
    "encode",
    (
        Option(
            "output",
            "path",
            None,
            "HDF5 file to write: /features (rows, hidden), chunked like the input.",
            short="-o",
            library=False,
            required=True,
        ),
        Option(
            "reconstruct",
            bool,
            False,
            "Also write the decoder's output a3 as /reconstruction (rows, inputs).",
        ),
        Option(
            "block_rows",
            int,
            None,
            "Rows read and encoded at a time; memory grows with it, never with the file.  "
            "[default: whole HDF5 chunks, about 8 MiB of rows]",
            low=1,
        ),
        Option(
            "dtype",
            str,
            "float32",
            "Type the encoder computes in and the outputs are stored as.",
            choices=DTYPES,
        ),
        *DATA.options,
        Option(
            "activation",
            str,
            None,
            "Hidden units of the model (sigmoid or tanh); refused if the model file says otherwise "
            "[default: the model's].",
            choices=ACTIVATIONS,
            nullable=True,
        ),
        FORCE,
        QUIET,
        DEBUG,
    ),
)

# --- visualize ---------------------------------------------------------------------------

VISUALIZE = OptionSet(
    "visualize",
    (
        Option(
            "output",
            "path",
            None,
            "PNG of the features: one tile per hidden unit, the input that activates it most.",
            short="-o",
        ),
        Option(
            "cols",
            int,
            None,
            "Tiles per row of the grid.  [default: ceil(sqrt(hidden units)), a near-square grid]",
            low=1,
            metavar="N",
        ),
        Option(
            "scale",
            int,
            4,
            "Enlarge the features PNG by repeating each pixel K times in each direction.",
            low=1,
            high=MAX_SCALE,
            metavar="K",
        ),
        Option(
            "sort",
            str,
            "none",
            "Order of the tiles: as stored, by mean activation rho_hat (largest first), "
            "or by the norm of the unit's weights (largest first).",
            choices=SORT_ORDERS,
        ),
        Option(
            "patch_shape",
            "shape",
            None,
            "Shape to draw each unit's weights in, such as 8x8 or 8x8x3.  [default: the shape "
            "stored in the model; without one, a square gray patch when the input size is a perfect "
            "square, otherwise an error]",
            parse=parse_patch_shape,
            metavar="HxW[xC]",
        ),
        Option(
            "curves",
            "path",
            None,
            "Also write a PNG of J and its three terms against the iteration (log axis), "
            "with the gradient norm below.",
        ),
        Option(
            "activations",
            "path",
            None,
            "Also write a PNG histogram of the final mean activations rho_hat, target rho marked.",
        ),
        Option(
            "space",
            str,
            None,
            "Draw the features in the input's space (W1·ZCAWhite for ZCA-whitened training "
            "data, as the notes do) or in the whitened space the model sees.  [default: input]",
            choices=("input", "whitened"),
            nullable=True,
        ),
        Option(
            "reconstructions",
            "path",
            None,
            "Patch file: -o then draws some of its patches beside their reconstructions "
            "(un-normalised for display where the normalisation allows it) instead of the features.",
            nullable=True,
        ),
        Option("pairs", int, 16, "Patches drawn with --reconstructions.", low=1),
        Option("seed", int, 0, "Seed choosing the patches of --reconstructions.", low=0, high=MAX_SEED),
        *VISUALIZE_SIGNALS.options,
        FORCE,
        QUIET,
        DEBUG,
    ),
)

# --- info --------------------------------------------------------------------------------

INFO = OptionSet(
    "info",
    (
        Option("as_json", bool, False, "Print the summary as one JSON object.", flag="--json", library=False),
        *DATA.options,
        # issue 26: the host instead of a file (no FILE then).
        Option(
            "host",
            bool,
            False,
            "Describe this host instead of a file: CPU, vector width, BLAS, versions, and the "
            "BLAS/tiles calibrations measured here (products='auto').",
            library=False,
        ),
        DEBUG,
    ),
)

# --- demo --------------------------------------------------------------------------------

DEMO = OptionSet(
    "demo",
    (
        Option(
            "output_dir",
            "path",
            "streamae-demo",
            "Folder for patches.h5, model.h5, features.png and curves.png.",
            short="-o",
        ),
        Option("num_patches", int, DEFAULT_NUM_PATCHES, "Patches to extract.", low=1),
        # At least 1: the demo plots the training curves, which need one iteration.
        Option("max_iter", int, 400, "L-BFGS iterations.", low=1),
        QUIET,
        FORCE,
        DEBUG,
    ),
)

# --- export ------------------------------------------------------------------------------

EXPORT_FORMATS = ("npz", "mat", "npy-dir")

EXPORT = OptionSet(
    "export",
    (
        Option(
            "output",
            "path",
            None,
            "weights.npz, weights.mat or a folder name (npy-dir).",
            short="-o",
            library=False,  # the library's second positional argument
            required=True,
        ),
        Option(
            "format",
            str,
            None,
            "npz, mat (with theta in the MATLAB starter code's order) or npy-dir (a folder of "
            ".npy files); default: from the output's name (.npz, .mat, else a folder).",
            choices=EXPORT_FORMATS,
            nullable=True,
        ),
        FORCE,
        QUIET,
        DEBUG,
    ),
)

SAMPLE_DATA = OptionSet(
    "data",
    (
        Option(
            "output",
            "path",
            ".",
            "Folder in which each named sample's folder is made (photos/, mnist/, audio/).",
            short="-o",
        ),
        Option("force", bool, False, "Replace sample files already in the output folder.", short="-f"),
        DEBUG,
    ),
)

COMMANDS = {
    s.command: s for s in (TRAIN, GRADCHECK, EXTRACT, ENCODE, VISUALIZE, INFO, DEMO, EXPORT, SAMPLE_DATA)
}


# --- frozen option values for the library ------------------------------------------------


class Options:
    """The checked values of one command's library options, frozen.

    ``TrainOptions(hidden=50)`` checks every value against :data:`TRAIN` (a
    :class:`UsageError` naming the parameter if one is wrong) and fills in the defaults;
    read them as attributes (``options.hidden``); :meth:`replace` makes a changed copy.
    """

    spec: OptionSet

    def __init__(self, **values: object) -> None:
        object.__setattr__(self, "_values", self.spec.validate(values))

    def __getattr__(self, name: str) -> object:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen; use .replace({name}=...)")

    def replace(self, **changes: object) -> Options:
        """A copy with ``changes`` applied (and checked)."""
        return type(self)(**{**self._values, **changes})

    def as_dict(self) -> dict[str, object]:
        """Parameter name → value."""
        return dict(self._values)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._values.items(), key=lambda item: item[0]))))

    def __repr__(self) -> str:
        changed = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if v != self.spec[k].default)
        return f"{type(self).__name__}({changed})"

    @classmethod
    def build(cls, options: Options | None, values: Mapping[str, object]) -> Options:
        """``options`` (default: all defaults) with the keyword ``values`` applied."""
        if options is None:
            return cls(**values)
        if not isinstance(options, cls):
            raise UsageError(
                f"options must be a {cls.__name__}, got {type(options).__name__}.", parameter="options"
            )
        return options.replace(**values) if values else options


class TrainOptions(Options):
    """The options of :func:`streamae.train`."""

    spec = TRAIN


class GradcheckOptions(Options):
    """The options of :func:`streamae.gradcheck`."""

    spec = GRADCHECK


class ExtractOptions(Options):
    """The options of :func:`streamae.extract`."""

    spec = EXTRACT


class EncodeOptions(Options):
    """The options of :func:`streamae.encode`."""

    spec = ENCODE


class VisualizeOptions(Options):
    """The options of the ``visualize`` command's drawing (:func:`streamae.render_features`)."""

    spec = VISUALIZE


class ExportOptions(Options):
    """The options of :func:`streamae.export_weights`."""

    spec = EXPORT
