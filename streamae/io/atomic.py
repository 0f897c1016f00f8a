"""Atomic creation of output files: a reader sees the old file or the new one, never a torn one.

Every output streamae writes goes through :func:`atomic_output`: the content is written to
a hidden temporary file beside the target, flushed to disk, and renamed into place.  If
the writer fails or is killed, the target is untouched; a temporary left by a killed run
is removed by the next run that writes the same target.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from streamae.errors import OutputExistsError, StorageError, StreamaeError, UsageError
from streamae.io.inputs import file_kind
from streamae.options import setting
from streamae.text import printable

if TYPE_CHECKING:  # h5py is imported when a file is written, not with this module
    import h5py

TEMP_SUFFIX = ".streamae-tmp"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# File names longer than this many bytes are refused where the system does not say
# (POSIX's NAME_MAX on every common Linux and macOS file system).
DEFAULT_NAME_MAX = 255
DEFAULT_PATH_MAX = 4096
# Room a temporary name needs besides the target's name: "." + "." + pid + TEMP_SUFFIX.
_PID_DIGITS = 10
_HASH_CHARS = 16


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` accepts."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def _temporary_stem(target: Path) -> str:
    """The part of the temporary names of ``target`` that comes from its name.

    The target's name itself when the temporary still fits the file system's NAME_MAX;
    otherwise its start and a hash of the whole name, so every temporary name fits.
    """
    name = target.name
    room = name_max(target.parent if str(target.parent) else Path(".")) - 2 - _PID_DIGITS - len(TEMP_SUFFIX)
    encoded = os.fsencode(name)
    if len(encoded) <= room:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:_HASH_CHARS]
    head = encoded[: max(0, room - _HASH_CHARS - 1)]
    return os.fsdecode(head.decode("utf-8", "ignore").encode("utf-8")) + "~" + digest


def temporary_path_for(target: Path) -> Path:
    """The hidden temporary path beside ``target`` that this process writes into."""
    return target.with_name(f".{_temporary_stem(target)}.{os.getpid()}{TEMP_SUFFIX}")


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of what ``path`` names itself (a link is not followed)."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _check_name_length(path: Path, parent: Path) -> None:
    """Refuse a name the file system cannot hold, before any work."""
    limit = name_max(parent)
    length = len(os.fsencode(path.name))
    if length > limit:
        raise UsageError(
            f"{printable(path, 120)}: the file name is {length} bytes long, more than the {limit} "
            "the file system allows; choose a shorter name."
        )
    full = len(os.fsencode(str(path.absolute())))
    if full >= DEFAULT_PATH_MAX:
        raise UsageError(
            f"{printable(path, 120)}: the path is {full} bytes long, more than the system allows; "
            "choose a shorter path."
        )


def _check_kind(path: Path) -> None:
    """Refuse an existing output that is not a regular file (FIFO, device, socket), forced or not."""
    try:
        mode = os.stat(path).st_mode  # follows a link: what would be written through it
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UsageError(
                f"{printable(path, 120)}: is a symbolic link that loops (it leads back to itself); "
                "remove the link or choose another output path."
            ) from None
        return  # absent (or unreachable: the checks that follow say why)
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    if os.path.realpath(path) == os.devnull:
        raise UsageError(
            f"{path}: is the null device; streamae writes its outputs only to regular files, so "
            "give a file name (in a temporary folder, to throw the output away)."
        )
    raise UsageError(
        f"{path}: is {file_kind(mode)}, not a regular file; streamae writes only regular files "
        "and never replaces anything else, even with --force: choose another output path."
    )


def check_output_path(
    target: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Refuse an output path that cannot or must not be written, before any work starts.

    Raises :class:`UsageError` for a directory, a missing parent folder, a name too long
    for the file system, an existing path that is not a regular file (a FIFO, a device
    such as /dev/null, a socket: refused even with ``force``), or a path that is (or
    links to) one of ``inputs``; :class:`OutputExistsError` for an existing file without
    ``force``.
    """
    path = Path(target)
    parent = path.parent if str(path.parent) else Path(".")
    _check_name_length(path, parent)  # first: a path too long makes every other check fail
    _check_kind(path)
    if path.is_dir():
        raise UsageError(f"{path}: the output path is a directory; give a file name inside it.")
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
            f"{path}: the output path is a symbolic link; pass {setting('force', True)} to replace the link."
        )
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass {setting('force', True)} to replace it.")
    return path


def _resolved(path: Path) -> Path:
    """``path`` resolved, or made absolute where it cannot be (a link loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _same_file(first: Path, second: Path) -> bool:
    """True when both paths exist and are the same file (device and inode): hard links too."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def check_distinct_outputs(named: dict[str, str | os.PathLike | None]) -> None:
    """Refuse two outputs of one command that are the same file (one would be lost).

    ``named`` maps a parameter name (``"output"``, ``"log"``) to its path or None.
    Compared by resolved path and by device and inode (hard links).
    """
    given = [(name, Path(value)) for name, value in named.items() if value is not None]
    for index, (name, path) in enumerate(given):
        for other_name, other in given[index + 1 :]:
            if _resolved(path) == _resolved(other) or _same_file(path, other):
                raise UsageError(
                    f"{path}: given as both the {name} and the {other_name} file, so one would "
                    "overwrite the other; choose two different paths.",
                    parameter=other_name,
                )


class OutputClaim:
    """An output checked at the start of a run, and what was at its path then.

    A run that writes ``path`` several times (checkpoints, then the model) passes its
    claim to every :func:`atomic_output`: just before the final rename the path must
    still hold what the run saw (or its own previous write), so a file that appeared or
    changed meanwhile is never clobbered.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = _identity(path)

    def check_unchanged(self) -> None:
        """Raise :class:`OutputExistsError` if something else wrote ``path`` since the claim."""
        if _identity(self.path) != self.identity:
            what = "appeared" if self.identity is None else "was changed by someone else"
            raise OutputExistsError(
                f"{self.path}: the file {what} while this run was working, so it was left as it "
                "is and this run's output was not written; remove or rename it, then run again."
            )

    def written(self) -> None:
        """Our own write is now at the path: later writes may replace it."""
        self.identity = _identity(self.path)


def claim_output(
    target: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()
) -> OutputClaim:
    """:func:`check_output_path`, then remember what is at the path (see :class:`OutputClaim`)."""
    return OutputClaim(check_output_path(target, force=force, inputs=inputs))


def remove_stale_temporaries(target: Path) -> None:
    """Remove temporaries of ``target`` left by killed runs (their process is gone)."""
    prefix = f".{_temporary_stem(target)}."
    folder = target.parent if str(target.parent) else Path(".")
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        stale = folder / name
        pid_text = name[len(prefix) : -len(TEMP_SUFFIX)]
        aside = pid_text.endswith(".old")  # an old folder moved aside (no atomic swap here)
        pid_text = pid_text.removesuffix(".old")
        if not pid_text.isdigit():
            continue  # another target's temporary (".weights." also starts ".weights.npz.")
        if _process_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        if aside and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.rename(stale, target)  # killed between the two renames: put it back
                continue
        _remove_entry(stale)


def _remove_entry(path: Path) -> None:
    """Remove a file, a link or a folder tree of ours (a stale temporary); errors ignored."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


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
    target: str | os.PathLike,
    *,
    force: bool,
    inputs: Iterable[str | os.PathLike] = (),
    claim: OutputClaim | None = None,
) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it onto ``target``.

    The checks of :func:`check_output_path` run first (or ran when ``claim`` was made).
    Just before the rename the target must still be what the claim saw: a file that
    appeared meanwhile is never replaced (a hard link makes that atomic when the target
    was absent).  On any exception (or a signal that raises) the temporary is removed
    and ``target`` is left as it was.
    """
    if claim is None:
        claim = claim_output(target, force=force, inputs=inputs)
    else:
        check_output_path(target, force=True, inputs=inputs)
    path = claim.path
    remove_stale_temporaries(path)
    temporary = temporary_path_for(path)
    with _removed_on_failure(temporary, path, _discard):
        yield temporary
        fsync_path(temporary)
        claim.check_unchanged()
        _install(temporary, path, absent=claim.identity is None)
        claim.written()
        fsync_path(path.parent if str(path.parent) else Path("."))


@contextlib.contextmanager
def _removed_on_failure(temporary: Path, path: Path, remove: Callable[[Path], None]) -> Iterator[None]:
    """Run the block; on any exception (a signal's included) ``remove(temporary)`` and
    re-raise it, an ``OSError`` as the storage error that names ``path``."""
    try:
        yield
    except StreamaeError:
        remove(temporary)
        raise
    except OSError as error:
        remove(temporary)
        raise storage_error(error, path) from error
    except BaseException:
        remove(temporary)
        raise


def _install(temporary: Path, path: Path, *, absent: bool) -> None:
    """Rename ``temporary`` onto ``path``; when ``path`` should be absent, never clobber it."""
    if absent:
        try:
            os.link(temporary, path)  # fails if the path appeared since the last check
        except FileExistsError:
            raise OutputExistsError(
                f"{path}: the file appeared while this run was working, so it was left as it is "
                "and this run's output was not written; remove or rename it, then run again."
            ) from None
        except OSError:
            pass  # no hard links here (some network or FAT file systems): rename below
        else:
            temporary.unlink()
            return
    os.replace(temporary, path)


def _discard(temporary: Path) -> None:
    with contextlib.suppress(OSError):
        temporary.unlink()


# --------------------------------------------------------------------------- folder outputs

# The file every folder output holds: the names streamae wrote into it, one per line.  A
# folder is replaced (with force) only when it holds nothing but the files its marker lists,
# so a folder of the user's own files is never emptied.
FOLDER_MARKER = ".streamae-folder"
# Folders written before the marker existed: only .npy files and this summary.
_LEGACY_NAMES = ("hyperparameters.json",)
# renameat2(2) flags (Linux >= 3.15): refuse to replace, or swap two paths atomically.
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """renameat2(source, target, flags); False where the system lacks it (then fall back)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded
        call = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    result = call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), ctypes.c_uint(flags))
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(target))


def _foreign_entry(folder: Path) -> str | None:
    """The name of an entry of ``folder`` that streamae did not write there, or None."""
    try:
        entries = list(os.scandir(folder))
    except OSError as error:
        return f"(unreadable: {error.strerror})"
    names = {entry.name for entry in entries}
    listed: set[str] = set()
    if FOLDER_MARKER in names:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            listed = set((folder / FOLDER_MARKER).read_text().split("\n")) | {FOLDER_MARKER}
    for entry in sorted(entries, key=lambda e: e.name):
        ours = entry.name in listed or (
            not listed and (entry.name.endswith(".npy") or entry.name in _LEGACY_NAMES)
        )
        if not ours or not entry.is_file(follow_symlinks=False):
            return entry.name
    return None


def _check_folder_inputs(path: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse a folder output that is, or holds, one of ``inputs``."""
    candidates = {path.absolute(), path.resolve()}
    for source in inputs:
        source_path = Path(source)
        if not source_path.exists():
            continue
        resolved = source_path.resolve()
        for folder in candidates:
            if resolved == folder or folder in resolved.parents:
                raise UsageError(
                    f"{printable(path, 120)}: the output folder would replace the input "
                    f"{printable(source_path, 120)}; choose another output path."
                )


def check_folder_output(
    target: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Refuse a folder output path that cannot or must not be written, before any work.

    The rules of :func:`check_output_path`, for a folder: never the input or a folder holding
    it, never a FIFO or device, never a link or an existing path without ``force``, and even
    with ``force`` never a folder holding files streamae did not write there (``.`` included).
    """
    path = Path(target)
    if path.name in ("", ".", ".."):
        raise UsageError(
            f"{printable(path, 120)}: names a folder by '.' or '..'; give the name of the folder "
            "to create, such as weights."
        )
    parent = path.parent if str(path.parent) else Path(".")
    _check_name_length(path, parent)
    _check_kind(path)
    if not parent.is_dir():
        raise UsageError(
            f"{printable(path, 120)}: the folder {printable(parent, 120)} does not exist; create it "
            "or choose another output path."
        )
    if not os.access(parent, os.W_OK):
        raise UsageError(
            f"{printable(path, 120)}: the folder {printable(parent, 120)} is not writable; choose "
            "another output path."
        )
    _check_folder_inputs(path, inputs)
    if path.is_symlink():
        if not force:
            raise OutputExistsError(
                f"{printable(path, 120)}: the output path is a symbolic link; pass "
                f"{setting('force', True)} to replace the link (what it points to is left alone)."
            )
        return path
    if path.exists() and not force:
        raise OutputExistsError(
            f"{printable(path, 120)} exists; pass {setting('force', True)} to replace it."
        )
    if path.is_dir():
        foreign = _foreign_entry(path)
        if foreign is not None:
            raise UsageError(
                f"{printable(path, 120)}: the folder holds {printable(foreign, 80)!r}, which streamae "
                f"did not write, so it is not replaced even with {setting('force', True)}; remove the "
                "folder or choose another output path."
            )
    return path


@contextlib.contextmanager
def atomic_folder_output(
    target: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Iterator[Path]:
    """Yield a new temporary folder to fill; on success it replaces ``target`` in one step.

    The checks of :func:`check_folder_output` run first.  The folder is built under a hidden
    temporary name beside the target (removed on any failure, and by the next run after a
    kill), every file is flushed, a marker lists the files, and the folder is renamed into
    place: with ``renameat2`` an absent target is never clobbered by one that appeared
    meanwhile and an existing one is swapped in a single step, so a kill at any moment leaves
    the old folder or the new one at the path, never neither.
    """
    path = check_folder_output(target, force=force, inputs=inputs)
    identity = _identity(path)
    remove_stale_temporaries(path)
    temporary = temporary_path_for(path)
    _remove_entry(temporary)
    with _removed_on_failure(temporary, path, _remove_entry):
        temporary.mkdir()
        yield temporary
        _seal_folder(temporary)
        if _identity(path) != identity:
            what = "appeared" if identity is None else "was changed by someone else"
            raise OutputExistsError(
                f"{printable(path, 120)}: the path {what} while this run was working, so it was left "
                "as it is and this run's output was not written; remove or rename it, then run again."
            )
        _install_folder(temporary, path, absent=identity is None)
        fsync_path(path.parent if str(path.parent) else Path("."))
    _remove_entry(temporary)  # after a swap: the old folder (or link, or file)


def _seal_folder(folder: Path) -> None:
    """Write the marker listing ``folder``'s files, and flush every file and the folder."""
    names = sorted(entry.name for entry in os.scandir(folder) if entry.name != FOLDER_MARKER)
    (folder / FOLDER_MARKER).write_text("\n".join(names) + "\n")
    for name in [*names, FOLDER_MARKER]:
        fsync_path(folder / name)
    fsync_path(folder)


def _install_folder(temporary: Path, path: Path, *, absent: bool) -> None:
    """Move the finished folder onto ``path``: never clobbering when absent, swapping when not."""
    if absent:
        try:
            if _renameat2(temporary, path, _RENAME_NOREPLACE):
                return
        except FileExistsError:
            pass
        except OSError as error:
            if error.errno != errno.EEXIST:
                raise
        if os.path.lexists(path):
            raise OutputExistsError(
                f"{printable(path, 120)}: the path appeared while this run was working, so it was "
                "left as it is and this run's output was not written; remove or rename it, then "
                "run again."
            )
        os.rename(temporary, path)
        return
    if _renameat2(temporary, path, _RENAME_EXCHANGE):
        return  # the temporary name now holds the old entry; the caller removes it
    # No atomic swap here: move the old entry aside under a temporary name, then rename.
    aside = path.with_name(f".{_temporary_stem(path)}.{os.getpid()}.old{TEMP_SUFFIX}")
    os.rename(path, aside)
    try:
        os.rename(temporary, path)
    except OSError:
        os.rename(aside, path)
        raise
    _remove_entry(aside)
