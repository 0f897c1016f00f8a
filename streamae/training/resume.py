"""Settings of a resumed run: what the caller gave, completed from the checkpoint.

On resume every setting the caller leaves out (None) is the one the checkpoint was
trained with, so ``streamae train DATA -o MODEL --resume`` continues exactly as the run
it continues.  A setting the caller gives must agree with the checkpoint when changing
it would change the objective (the hyperparameters, the compute dtype); where changing it
is meaningful (the stop rules, the scheme, the block size) the new value is applied and
a note says so.  Without resume, a setting left out takes its default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from streamae.errors import UsageError
from streamae.options import TRAIN
from streamae.text import printable

# Settings that travel with a checkpoint; a fresh run takes their defaults from the spec.
RESUMABLE = (
    "hidden",
    "rho",
    "beta",
    "lam",
    "decoder",
    "activation",
    "dtype",
    "max_iter",
    "seed",
    "grad_tol",
    "progress_tol",
    "tolerance",
    "tolerance_window",
    "scheme",
    "chunk_rows",
    "lbfgs_pairs",
    "dataset",
)
DEFAULTS: dict[str, object] = {name: TRAIN[name].default for name in RESUMABLE}
# Changing these changes the objective or the optimizer: a resumed run must keep them.
FIXED = ("hidden", "rho", "beta", "lam", "decoder", "activation", "dtype", "lbfgs_pairs", "dataset")
# The seed only chose the initial weights: a resumed run does not use it.
UNUSED_ON_RESUME = ("seed",)


@dataclass
class Settings:
    """The settings in effect (parameter name → value) and notes on how they were chosen."""

    values: dict[str, object]
    notes: list[str] = field(default_factory=list)
    from_checkpoint: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> object:
        return self.values[name]


def stored_settings(path: str | os.PathLike) -> dict[str, object]:
    """The settings a model file (checkpoint) was trained with, read from its attributes only.

    Settings the file does not record (files written before they were stored) are left
    out, so the caller's value or the default applies.  Reads no arrays but W1's shape.
    """
    from streamae.io.hdf5 import decode_attribute, open_hdf5

    with open_hdf5(Path(path)) as handle:
        attrs = {key: decode_attribute(value) for key, value in handle.attrs.items()}
        w1 = handle.get("W1")
        hidden = int(w1.shape[0]) if w1 is not None and len(w1.shape) == 2 else None
    stored: dict[str, object] = {}
    if hidden is not None:
        stored["hidden"] = hidden
    for attribute, name in (
        ("rho", "rho"),
        ("beta", "beta"),
        ("lambda", "lam"),
        ("decoder", "decoder"),
        ("activation", "activation"),
    ):
        if attribute in attrs:
            stored[name] = attrs[attribute]
    try:
        data = json.loads(attrs.get("data", "{}"))
    except (TypeError, ValueError):
        data = {}
    if isinstance(data, dict) and isinstance(data.get("dataset"), str):
        stored["dataset"] = data["dataset"]
    try:
        info = json.loads(attrs.get("info", "{}"))
    except (TypeError, ValueError):
        info = {}
    if isinstance(info, dict):
        for name in (
            "dtype",
            "seed",
            "max_iter",
            "grad_tol",
            "progress_tol",
            "tolerance",
            "tolerance_window",
            "scheme",
            "lbfgs_pairs",
        ):
            if name in info and info[name] is not None:
                stored[name] = info[name]
        # The rows per read as asked (the read policy chooses again when none was asked, so
        # the ranks' shares stay those of the run continued).
        if info.get("asked_chunk_rows") is not None:
            stored["chunk_rows"] = info["asked_chunk_rows"]
        if "memory" in info and info["memory"] is not None and "lbfgs_pairs" not in stored:
            stored["lbfgs_pairs"] = info["memory"]  # the L-BFGS pairs' old name
    return stored


def resolve_settings(
    given: dict[str, object], stored: dict[str, object] | None, path: object = None
) -> Settings:
    """The settings in effect: ``given`` (None = not given) completed from ``stored`` or the defaults.

    ``stored`` is the checkpoint's settings on resume, else None.  Raises
    :class:`UsageError` naming the parameter when a given value contradicts the
    checkpoint where that cannot be changed.
    """
    values: dict[str, object] = {}
    notes: list[str] = []
    from_checkpoint: list[str] = []
    for name, default in DEFAULTS.items():
        value = given.get(name)
        before = None if stored is None else stored.get(name)
        if value is None:
            if before is not None:
                values[name] = before
                from_checkpoint.append(name)
            else:
                values[name] = default
            continue
        values[name] = value
        if before is None or _same(before, value):
            continue
        if name in FIXED:
            raise UsageError(
                f"{path}: cannot resume: it was trained with {name}={_shown(before)}, not {_shown(value)}; "
                f"leave {name} out to continue with the stored value, or train afresh without resuming.",
                parameter=name,
            )
        if name in UNUSED_ON_RESUME:
            notes.append(f"{name} {_shown(value)} is not used: the run continues from its checkpoint")
        else:
            notes.append(
                f"{name} {_shown(value)} applies from now on (the checkpoint's run used {_shown(before)})"
            )
    return Settings(values=values, notes=notes, from_checkpoint=from_checkpoint)


def _same(before: object, now: object) -> bool:
    if isinstance(before, int | float) and isinstance(now, int | float) and not isinstance(before, bool):
        return float(before) == float(now)
    return before == now


def _shown(value: object, limit: int = 60) -> str:
    """A stored value fit to quote: control characters marked, bounded."""
    return printable(value, limit, mark="?")
