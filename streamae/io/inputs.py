"""Input files: refuse what is not a regular file before anything opens it.

Opening a FIFO blocks until a writer appears (forever, for a user who typed the wrong
name), a device can stream without end, and a socket cannot be opened at all.  Every
reader calls :func:`check_regular_input` first; :func:`open_regular` opens without
blocking and checks the opened descriptor again, so a FIFO swapped in between the check
and the open is refused too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from streamae.errors import InputFileError, MissingInputError
from streamae.text import printable

# What each stat.S_IS* test names, in the order they are tried.
_FILE_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words ("a FIFO (named pipe)", "a directory", ...)."""
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def check_regular_input(path: str | os.PathLike, what: str = "a file") -> Path:
    """Return ``path`` if it is (or links to) an existing regular file; raise otherwise.

    Raises :class:`MissingInputError` for a missing path and :class:`InputFileError`
    for a directory, FIFO, device or socket, naming ``what`` the command expected.
    Nothing is opened.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MissingInputError(f"{printable(path, None)}: no such file; check the path.") from None
    except OSError as error:
        raise InputFileError(
            f"{printable(path, 300)}: cannot be read ({error.strerror}); check the path and its permissions."
        ) from None
    if stat.S_ISREG(mode):
        return path
    if stat.S_ISDIR(mode):
        raise InputFileError(f"{printable(path, None)}: is a directory, not {what}; give a file.")
    raise InputFileError(
        f"{printable(path, None)}: is {file_kind(mode)}, not a regular file; give {what} "
        "stored on disk (streamae never reads pipes, devices or sockets)."
    )


def open_regular(path: str | os.PathLike, what: str = "a file") -> BinaryIO:
    """Open a regular file for binary reading without ever blocking on a FIFO."""
    path = check_regular_input(path, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputFileError(
                f"{printable(path, None)}: is {file_kind(mode)}, not a regular file; give {what} "
                "stored on disk."
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
