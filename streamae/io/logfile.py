"""The JSON-lines log of a training run: opened safely, write failures said in one sentence.

The log is the one output written as the run goes (a line per iteration), so it cannot be
atomic; it follows the other output rules instead (checked like every output before the
run, appended to only on resume).  It is opened without blocking and refused unless it
is a regular file, and a full disk becomes the usual one-sentence :class:`StorageError`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from streamae.errors import StorageError, UsageError
from streamae.io.inputs import file_kind

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class JsonLinesLog:
    """An open log file: :meth:`write` adds one JSON object per line and flushes it."""

    def __init__(self, path: str | os.PathLike, *, append: bool) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        flags |= os.O_APPEND if append else 0
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as error:
            raise self._error(error) from error
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise UsageError(
                    f"{self.path}: is {file_kind(mode)}, not a regular file; give the log a file name."
                )
            if not append:
                os.ftruncate(fd, 0)
            os.set_blocking(fd, True)
        except OSError as error:
            os.close(fd)
            raise self._error(error) from error
        except BaseException:
            os.close(fd)
            raise
        self._file = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        """Append ``record`` as one line (JSON escapes every control character)."""
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as error:
            raise self._error(error) from error

    def close(self) -> None:
        """Close the file; a failure to flush the last line is reported like a write."""
        try:
            self._file.close()
        except OSError as error:
            raise self._error(error) from error

    def _error(self, error: OSError) -> StorageError:
        if error.errno in _DISK_FULL:
            return StorageError(
                f"{self.path}: the disk is full (writing the log into {self.path.parent}); free "
                "space or write the log elsewhere."
            )
        return StorageError(
            f"{self.path}: writing the log failed ({error.strerror or error}); check the disk and the path."
        )
