"""Stopping cleanly on SIGTERM, SIGINT and SIGUSR1 (SLURM's ``--signal``).

A handler only sets a flag; the trainer looks at it between blocks and evaluations
and unwinds to the last completed iteration, writes a checkpoint and raises
:class:`~streamae.errors.Interrupted` (exit code 3).  Nothing is done inside the
handler itself: it may run in the middle of an HDF5 call or an L-BFGS update.

A second Ctrl-C (SIGINT) is the user's "stop now": it raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised inside an iteration to abandon it; the trainer turns it into a checkpoint."""


class StopFlag:
    """Whether a stop was asked for, and by which signal."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signal_name is not None

    def request(self, name: str) -> None:
        """Ask the run to stop (what the handler does; tests call it directly)."""
        if self.signal_name is None:
            self.signal_name = name

    def _handle(self, number: int, frame: object) -> None:
        if number == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.request(signal.Signals(number).name)


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, signals: tuple = STOP_SIGNALS) -> Iterator[StopFlag]:
    """Install ``flag``'s handler for ``signals`` for the duration; restore the old ones.

    Outside the main thread (where Python cannot install handlers) nothing is installed
    and the flag only changes when :meth:`StopFlag.request` is called.
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {number: signal.getsignal(number) for number in signals}
    try:
        for number in signals:
            signal.signal(number, flag._handle)
        yield flag
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
