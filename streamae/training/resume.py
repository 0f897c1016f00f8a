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
from streamae.options import TRAIN, resumable, setting, stored_settings_in
from streamae.text import printable


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

    Each resumable option is read where its spec says it is stored; settings the file
    does not record (files written before they were stored) are left out, so the
    caller's value or the default applies.  Reads no arrays but W1's shape.
    """
    from streamae.io.hdf5 import decode_attribute, open_hdf5

    with open_hdf5(Path(path)) as handle:
        attrs = {key: decode_attribute(value) for key, value in handle.attrs.items()}
        w1 = handle.get("W1")
        hidden = int(w1.shape[0]) if w1 is not None and len(w1.shape) == 2 else None
    sections = {"attrs": attrs, "info": _json(attrs.get("info")), "data": _json(attrs.get("data"))}
    stored = stored_settings_in(TRAIN, sections)
    if hidden is not None:
        stored["hidden"] = hidden  # the weights themselves say it
    info = sections["info"]
    if info.get("memory") is not None and "lbfgs_pairs" not in stored:
        stored["lbfgs_pairs"] = info["memory"]  # the L-BFGS pairs' old name
    return stored


def _json(text: object) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
    # Settings that travel with a checkpoint (declared with ``on_resume`` in options.py); a
    # fresh run takes their defaults from the spec.
    for name, default in ((option.name, option.default) for option in resumable(TRAIN)):
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
        if TRAIN[name].on_resume == "same":
            raise UsageError(
                f"{path}: cannot resume: it was trained with {setting(name, before, _shown(before))}, not "
                f"{_shown(value)}; leave {name} out to continue with the stored value, or train afresh "
                "without resuming.",
                parameter=name,
            )
        if TRAIN[name].on_resume == "unused":
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
