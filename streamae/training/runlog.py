"""The run header: one record that says what ran, where and on what, to reproduce a run from its log.

It is the first line a run prints and the first record of its ``log`` (JSON lines): the
streamae version, the host, the command line, every setting in effect, the data
fingerprint, the threads and the MPI ranks.  Every log record carries a wall-clock
timestamp (:func:`timestamp`), so a batch log can be lined up with the scheduler's.
"""

from __future__ import annotations

import datetime
import shlex
import socket
import sys

from streamae._version import __version__
from streamae.text import printable


def timestamp() -> str:
    """The wall-clock time now, ISO 8601 in UTC to the millisecond (``2026-11-30T03:27:52.123+00:00``)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line, quoted so that it can be pasted into a shell."""
    return shlex.join(sys.argv if argv is None else argv)


def run_header(*, settings: dict, data: dict, threads: int, ranks: int, command: str | None = None) -> dict:
    """The header record of a run (JSON-ready); ``settings`` maps parameter name → value."""
    return {
        "event": "start",
        "time": timestamp(),
        "streamae_version": __version__,
        "host": socket.gethostname(),
        "command": command_line() if command is None else command,
        "settings": dict(settings),
        "data": dict(data),
        "threads": int(threads),
        "ranks": int(ranks),
    }


def format_header(header: dict) -> str:
    """The header as the first line a run prints."""
    settings = " ".join(f"{name}={_plain(value)}" for name, value in header["settings"].items())
    data = header["data"]
    shape = "x".join(str(v) for v in data.get("shape") or [])
    return (
        f"streamae {header['streamae_version']} on {_plain(header['host'])} at {header['time']}: "
        f"{_plain(header['command'])}; settings {settings}; data {_plain(data.get('path'))} "
        f"({shape} {_plain(data.get('dtype'))}); {header['threads']} threads, {header['ranks']} MPI "
        f"rank{'s' if header['ranks'] != 1 else ''}"
        + (f"; warm start: {header['warm_start']}" if header.get("warm_start") else "")
        + (f"; tolerance: {header['tolerance']}" if header.get("tolerance") else "")
    )


def _plain(value: object, limit: int = 300) -> str:
    """A value fit for one line: control characters marked, bounded (paths come from files)."""
    return printable(value, limit, mark="?")
