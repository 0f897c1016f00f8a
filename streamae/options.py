"""Every option of every command, declared once: name, type, range or choices, default, help.

The library validates keyword arguments with these specs (:meth:`OptionSet.validate`)
and its messages name the *parameter* ("hidden must be an integer ≥ 1, got 0"); the
command line builds its click options from the same specs and maps a parameter name to
its flag (``lam`` → ``--lambda``) when it reports an error.  Adding an option means
adding one :class:`Option` here plus the code that uses the value.

This module imports nothing heavy (no NumPy, Numba or h5py), so ``streamae --help``
stays cheap to build from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streamae.errors import UsageError

# The largest seed any command takes: NumPy's generators take any non-negative integer,
# but the seed is stored as an HDF5 int64 attribute.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Option:
    """One parameter of one command.

    ``name`` is the library's keyword (``lam``); ``flag`` the command line's spelling
    when it differs from ``--`` + name with ``_`` → ``-`` (``--lambda``).  ``kind`` is
    ``int``, ``float``, ``str``, ``bool`` (a flag) or ``"path"``.  ``low``/``high``
    bound numbers (``low_open``/``high_open``: the bound itself is excluded);
    ``choices`` lists the allowed strings.  ``nullable``: ``None`` is allowed and means
    what ``help`` says.  ``unit`` names the unit of a number (``"bytes"``, ``"minutes"``)
    for help texts and messages.  ``cli=False`` keeps an option library-only.
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

    @property
    def cli_flag(self) -> str:
        """The command line's flag, such as ``--max-iter``."""
        return self.flag or "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        """The allowed values in words: "an integer ≥ 1", "one of sigmoid, linear"."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        noun = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}.get(
            self.kind, "a path"
        )
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '≥'} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '≤'} {self.high:g}")
        return noun + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value: object) -> object:
        """``value`` converted to this option's type; a :class:`UsageError` naming the parameter if not."""
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise UsageError(f"{self.name} must be {self.describe_range()}, got None.", parameter=self.name)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{self.name} must be True or False, got {value!r}.", parameter=self.name)
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise self._bad(value)
            value = int(value)
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
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

    def defaults(self) -> dict[str, object]:
        """Every option's default, by parameter name."""
        return {option.name: option.default for option in self.options}

    def validate(self, values: Mapping[str, object]) -> dict[str, object]:
        """``values`` (parameter name → value) checked and completed with the defaults.

        Raises :class:`UsageError` naming the parameter for an unknown name or a value
        outside the option's type, range or choices.
        """
        unknown = sorted(set(values) - set(self._by_name))
        if unknown:
            raise UsageError(
                f"{self.command} takes no parameter {unknown[0]!r}; "
                f"its parameters are {', '.join(self._by_name)}.",
                parameter=unknown[0],
            )
        checked = self.defaults()
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


# --- train -------------------------------------------------------------------------------

DECODERS = ("sigmoid", "linear")
DTYPES = ("float32", "float64")
SCHEMES = ("auto", "two-pass", "single-pass", "in-core")
DEFAULT_CHECKPOINT_EVERY = 10

TRAIN = OptionSet(
    "train",
    (
        Option("hidden", int, 25, "Hidden units s2.", low=1),
        Option(
            "rho",
            float,
            0.01,
            "Target mean activation ρ, in (0, 1).",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        ),
        Option("beta", float, 3.0, "Weight β of the sparsity penalty.", low=0),
        Option("lam", float, 1e-4, "Weight decay λ.", flag="--lambda", low=0),
        Option("max_iter", int, 400, "L-BFGS iterations at most.", low=0),
        Option(
            "decoder",
            str,
            "sigmoid",
            "Output layer: sigmoid (data in [0, 1]) or linear (any real data).",
            choices=DECODERS,
        ),
        Option(
            "dtype",
            str,
            "float32",
            "Compute type of the kernels; sums and the optimizer are always float64.",
            choices=DTYPES,
        ),
        # ... the remaining train options (chunk_rows, threads, seed, grad_tol, progress_tol,
        # lbfgs_pairs, resume, checkpoint_every, checkpoint_minutes, scheme, memory_budget,
        # file_locking, log) are declared here the same way.
    ),
)

# Train options added with issue 14 (the lead merges them into TRAIN).
TRAIN_MORE = OptionSet(
    "train",
    (
        Option(
            "keep_state",
            bool,
            False,
            "Keep the L-BFGS state in the finished model, so that --resume can continue it "
            "later (checkpoints always hold it; a finished model without it is much smaller).",
        ),
    ),
)

# --- export ------------------------------------------------------------------------------

EXPORT_FORMATS = ("npz", "mat", "npy-dir")

EXPORT = OptionSet(
    "export",
    (
        Option(
            "format",
            str,
            None,
            "npz, mat (with theta in the MATLAB starter code's order) or npy-dir (a folder of "
            ".npy files); default: from the output's name (.npz, .mat, else a folder).",
            choices=EXPORT_FORMATS,
            nullable=True,
        ),
    ),
)

# Visualize options added with issue 14 (the lead merges them into the visualize set).
VISUALIZE_MORE = OptionSet(
    "visualize",
    (
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
    ),
)

# Extract options added with issue 14 (the lead merges them into the extract set).
EXTRACT_MORE = OptionSet(
    "extract",
    (
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
    ),
)
