"""Atomic creation of output files: a reader sees the old file or the new one, never a torn one.

Every output streamae writes goes through :func:`atomic_output`: the content is written to
a hidden temporary file beside the target, flushed to disk, and renamed into place.  If
the writer fails or is killed, the target is untouched; a temporary left by a killed run
is removed by the next run that writes the same target.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from streamae.errors import OutputExistsError, StorageError, StreamaeError, UsageError

if TYPE_CHECKING:  # h5py is imported when a file is written, not with this module
    import h5py

TEMP_SUFFIX = ".streamae-tmp"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def temporary_path_for(target: Path) -> Path:
    """The hidden temporary path beside ``target`` that this process writes into."""
    return target.with_name(f".{target.name}.{os.getpid()}{TEMP_SUFFIX}")


def check_output_path(
    target: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Refuse an output path that cannot or must not be written, before any work starts.

    Raises :class:`UsageError` for a directory, a missing parent folder, or a path that
    is (or links to) one of ``inputs``; :class:`OutputExistsError` for an existing file
    without ``force``.
    """
    path = Path(target)
    if path.is_dir():
        raise UsageError(f"{path}: the output path is a directory; give a file name inside it.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(
            f"{path}: the folder {parent} does not exist; create it or choose another output path."
        )
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{path}: the folder {parent} is not writable; choose another output path.")
    resolved = path.resolve()
    for source in inputs:
        source_path = Path(source)
        if source_path.exists() and resolved == source_path.resolve():
            raise UsageError(
                f"{path}: the output would overwrite the input {source_path}; choose another output path."
            )
    if path.is_symlink() and not force:
        raise OutputExistsError(
            f"{path}: the output path is a symbolic link; pass force=True to replace the link."
        )
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass force=True to replace it.")
    return path


def remove_stale_temporaries(target: Path) -> None:
    """Remove temporaries of ``target`` left by killed runs (their process is gone)."""
    for stale in target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}"):
        pid_text = stale.name[len(target.name) + 2 : -len(TEMP_SUFFIX)]
        if pid_text.isdigit() and _process_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        with contextlib.suppress(OSError):
            stale.unlink()


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (killed, not yet reaped) counts as dead.

    A killed MPI rank can stay a zombie for a while when its launcher died with it (in a
    container whose init does not reap): its temporaries are stale all the same.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # not Linux, or gone meanwhile: trust kill()
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory entry) to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(error: OSError, path: Path) -> StorageError:
    """Turn an OS-level write failure into a one-sentence :class:`StorageError`."""
    if getattr(error, "errno", None) in _DISK_FULL or "No space left" in str(error):
        return StorageError(
            f"{path}: the disk is full (writing into {path.parent}); free space or write "
            "elsewhere. The previous file, if any, is untouched."
        )
    return StorageError(
        f"{path}: writing failed ({_first_line(error)}); check the disk and write again. The "
        "previous file, if any, is untouched."
    )


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The start of an error's text: HDF5's messages run over several lines."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _WriteGuard:
    """The file HDF5 writes through (h5py's ``fileobj`` driver), never reporting a failure to it.

    When a write fails inside HDF5 (a full disk, a file-size limit), HDF5 keeps the unwritten
    data in its caches, fails again on every later close and flush, and finally crashes the
    interpreter with a segmentation fault.  So HDF5 must never see a failed write: the first
    :class:`OSError` is recorded, that write and every later one are dropped (the temporary
    is discarded anyway), and the error is raised by :func:`hdf5_output` once HDF5 has
    closed the file cleanly.  Writers check :func:`check_written` between blocks so a
    long run stops soon after the disk fills.
    """

    def __init__(self, path: Path) -> None:
        self._raw = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed by hdf5_output
        self.error: OSError | None = None

    def _record(self, error: OSError) -> None:
        if self.error is None:
            self.error = error

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    written = self._raw.write(view[done:])
                    if not written:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += written
            except OSError as error:
                self._record(error)
        return len(view)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        count = self._raw.readinto(view) or 0
        view[count:] = bytes(len(view) - count)  # past the end (or a dropped write): zeros
        return len(view)

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def truncate(self, size: int | None = None) -> int:
        try:
            return self._raw.truncate(size)
        except OSError as error:
            self._record(error)
            return self._raw.tell() if size is None else size

    def flush(self) -> None:
        """Nothing is buffered here (unbuffered raw file)."""

    def close(self) -> None:
        self._raw.close()


# The guard of every HDF5 file being written, by the id of its h5py.File.
_GUARDS: dict[int, _WriteGuard] = {}


def check_written(handle: h5py.File) -> None:
    """Raise the write error of a file from :func:`hdf5_output`, if one happened so far."""
    guard = _GUARDS.get(id(handle))
    if guard is not None and guard.error is not None:
        raise guard.error


@contextlib.contextmanager
def hdf5_output(temporary: Path, **options: object) -> Iterator[h5py.File]:
    """A new HDF5 file at ``temporary`` for writing, whose write failures cannot crash HDF5.

    Writes go through a :class:`_WriteGuard`; a failed write comes out, after HDF5 has
    closed the file, as the :class:`OSError` the system reported (ENOSPC, EFBIG, ...),
    which :func:`atomic_output` turns into a one-sentence message.
    """
    import h5py

    guard = _WriteGuard(Path(temporary))
    try:
        handle = h5py.File(guard, "w", **options)
        _GUARDS[id(handle)] = guard
        try:
            yield handle
        finally:
            _GUARDS.pop(id(handle), None)
            handle.close()
    finally:
        guard.close()
    if guard.error is not None:
        raise guard.error


@contextlib.contextmanager
def atomic_output(
    target: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it onto ``target``.

    The checks of :func:`check_output_path` run first.  On any exception (or a signal
    that raises) the temporary is removed and ``target`` is left as it was.
    """
    path = check_output_path(target, force=force, inputs=inputs)
    remove_stale_temporaries(path)
    temporary = temporary_path_for(path)
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(path.parent if str(path.parent) else Path("."))
    except StreamaeError:
        _discard(temporary)
        raise
    except OSError as error:
        _discard(temporary)
        raise storage_error(error, path) from error
    except BaseException:
        _discard(temporary)
        raise


def _discard(temporary: Path) -> None:
    with contextlib.suppress(OSError):
        temporary.unlink()
