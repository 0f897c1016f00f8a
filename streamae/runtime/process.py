"""The one call that prepares this process for streamae's kernels: :func:`configure`.

Importing streamae changes nothing in the process.  What the kernels need is set by
:func:`configure`, which the command line calls before any command that computes, and
which ``train``, ``encode``, ``objective``, ``gradcheck``, ``extract`` and ``run_demo`` call
at their start when the user has not.  It is idempotent: the first call does the work and
every later call returns the same :class:`Configuration`.  It sets, in order:

1. Numba's thread variables: a ``NUMBA_NUM_THREADS`` that is not a usable number is set
   aside (removed, and the sentence saying what was wrong kept for the command to raise;
   see :mod:`streamae.runtime.threads`).
2. ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: Numba's OpenMP threads and
   OpenBLAS's threads both spin while waiting for work, and on a 2-core node they take
   turns with each other's spinning (one evaluation measured 250 ms against 8.6 ms).  The
   OpenMP runtime reads it when it starts, at the first parallel kernel or
   ``numba.set_num_threads``; configure runs before either.
3. Full-width vectors on AVX-512 hosts (:func:`streamae.runtime.cpu.prefer_full_width`):
   ``NUMBA_CPU_FEATURES`` with ``-prefer-256-bit`` appended, unless the user set
   ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES``.  Numba fixes its code generator's CPU
   features when its first ``@njit`` function is *defined*, not compiled: importing any of
   streamae's compute modules (or another Numba library) does it.  The public entry
   points therefore configure before they import those modules (``streamae.train`` and
   its siblings are resolved lazily, see ``streamae/__init__``).  If the code generator
   was set up already, configure leaves the features alone (changing the variable then
   would only reach child processes) and says so in :attr:`Configuration.notes`: the
   kernels then run at the width LLVM chooses for the host (256 bits on Intel's AVX-512
   cores, 512 on AMD Zen 4), with the same results.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field

from streamae.runtime.cpu import FEATURE_VARIABLES, NO_NARROW_PREFERENCE, prefer_full_width
from streamae.runtime.threads import set_aside_bad_thread_settings, thread_problem_found

WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


@dataclass(frozen=True)
class Configuration:
    """What :func:`configure` did: the variables it set, the ones it removed, and notes."""

    set: dict[str, str] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One readable line per change or note (for ``streamae info --host``)."""
        out = [f"set {name}={_shown(value)}" for name, value in self.set.items()]
        out += [f"removed {name}" for name in self.removed]
        out += list(self.notes)
        return out or ["nothing to set: the user's settings kept"]


def _shown(value: str) -> str:
    """A variable's value for a reader: the host's long feature list is named, not printed."""
    if value.endswith("," + NO_NARROW_PREFERENCE) and len(value) > 80:
        return f"<this CPU's features>,{NO_NARROW_PREFERENCE}"
    return value


_lock = threading.Lock()
_done: list[Configuration] = []


def configured() -> Configuration | None:
    """The configuration made in this process, or None before :func:`configure`."""
    return _done[0] if _done else None


def configure(*, full_width: bool = True) -> Configuration:
    """Prepare this process for streamae's kernels (idempotent); returns what it set.

    ``full_width=False`` leaves Numba's CPU features as they are (LLVM's choice for the
    host).  Only the first call acts; later calls return its :class:`Configuration`.
    """
    with _lock:
        if not _done:
            _done.append(_configure(full_width))
        return _done[0]


def _configure(full_width: bool) -> Configuration:
    environ = os.environ
    before = {name: environ.get(name) for name in ("NUMBA_NUM_THREADS", "NUMBA_DEFAULT_NUM_THREADS")}
    set_aside_bad_thread_settings()
    removed = tuple(name for name, value in before.items() if value is not None and name not in environ)
    notes = []
    if removed:
        notes.append(f"ignored: {thread_problem_found()}")
    changed: dict[str, str] = {}
    name, value = WAIT_POLICY
    if name not in environ:
        environ[name] = value
        changed[name] = value
    users = [n for n in FEATURE_VARIABLES if environ.get(n)]
    if users:
        notes.append("kept the user's " + ", ".join(f"{n}={environ[n]}" for n in users))
    elif not full_width:
        notes.append("full-width vectors not asked for: LLVM's choice for this CPU kept")
    elif numba_codegen_ready():
        notes.append(
            "Numba's code generator was set up before configure() (a Numba function was "
            "defined in this process already), so its CPU features stay as they are; call "
            "streamae.runtime.configure() before importing streamae's compute modules for "
            "full-width vectors"
        )
    elif prefer_full_width(environ):
        changed["NUMBA_CPU_FEATURES"] = environ["NUMBA_CPU_FEATURES"]
    return Configuration(set=changed, removed=removed, notes=tuple(notes))


def numba_codegen_ready() -> bool:
    """Whether Numba's CPU code generator exists already (its CPU features are then fixed).

    Numba creates it, reading ``numba.core.config.CPU_FEATURES``, when the first ``@njit``
    dispatcher is made (registry.cpu_target's cached ``_toplevel_target_context``).
    """
    registry = sys.modules.get("numba.core.registry")
    if registry is None:
        return False
    target = getattr(registry, "cpu_target", None)
    return target is not None and "_toplevel_target_context" in vars(target)


def _reset_for_tests() -> None:
    """Forget the configuration made (tests only: the process itself is not restored)."""
    with _lock:
        _done.clear()
