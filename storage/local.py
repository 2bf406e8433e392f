"""Local files: size-limited reads, atomic writes, and confinement of relative paths."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import secrets
import stat
from pathlib import Path

from config.text import printable
from storage.errors import InputError

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)  # fmt: skip


def read_limited(path: Path | str, limit: int, *, what: str = "file") -> bytes:
    """Read a regular file of at most ``limit`` bytes, or raise InputError.

    Only a regular file is read: the file is opened without blocking (a FIFO with no
    writer would otherwise hang the reader for ever) and without following a symbolic
    link as its last component, and checked with ``fstat`` on the open descriptor, so
    what is checked is what is read.
    """
    shown = printable(os.fspath(path))
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {shown}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                f"{what} is a symbolic link, which is not followed here: {shown}"
            ) from None
        raise InputError(f"{what} cannot be read: {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
            raise InputError(f"{what} is {kind}, not a regular file: {shown}")
        if st.st_size > limit:
            raise InputError(f"{what} is {st.st_size:,} bytes; the limit is {limit:,}: {shown}")
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(limit + 1 - got, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise InputError(f"{what} cannot be read: {shown}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if got > limit:  # grew while we read it
        raise InputError(f"{what} is over the limit of {limit:,} bytes: {shown}")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def identity(path: Path | str) -> str:
    """A stand-in content hash for a file that cannot be read (too large, not a regular
    file, a link out of bounds): its inode, size and change time, from ``lstat`` alone,
    so that nothing behind a link is opened and a rescan of the same file agrees."""
    st = os.lstat(path)
    key = f"lstat:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}"
    return hashlib.sha256(key.encode()).hexdigest()


# Temp names: this process's token and a counter, created with O_EXCL. Unique across
# threads, processes and hosts sharing a folder, and cheaper than mkstemp's random names
# (a no-work job's manifest write is on the queue benchmark's hot path).
_TMP_TOKEN = f"{os.getpid()}-{secrets.token_hex(4)}"
_tmp_seq = itertools.count()


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` so readers see the old file or the whole new one, never a part.

    Temp file in the same folder, fsync, rename over, fsync the folder.
    """
    target = os.fspath(path)
    folder, name = os.path.split(target)
    try:  # a job's folder: its parent exists but for the first write (cheaper than makedirs)
        os.mkdir(folder)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{_TMP_TOKEN}-{next(_tmp_seq)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def confined(base: Path, relative: str, *, what: str = "path") -> Path:
    """Resolve ``relative`` inside ``base``; absolute paths, '..' escapes and symlinks
    that lead out of ``base`` are refused (the job file may not reach elsewhere).

    Whatever the name holds (a NUL byte, a component too long for the file system, a
    symlink loop) is the input's fault and raises InputError, never OSError.
    """
    if not relative or not relative.strip():
        raise InputError(f"{what} is empty")
    if "\x00" in relative:
        raise InputError(f"{what} {relative!r} holds a NUL byte")
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith("~"):
        raise InputError(f"{what} {relative!r} is absolute; give a path relative to the job file")
    try:
        root = base.resolve()
        target = (root / rel).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "a symlink loop"
        raise InputError(f"{what} {relative!r} cannot be looked up: {reason}") from None
    if not target.is_relative_to(root):
        raise InputError(f"{what} {relative!r} points outside the job file's folder")
    return target


def inside(root: Path, path: Path, *, what: str) -> Path:
    """``path`` with every link resolved, which must lie inside ``root`` (also resolved):
    a job file in the inbox that is a link to elsewhere is refused before it is read."""
    try:
        real_root, real = root.resolve(), path.resolve(strict=True)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "a symlink loop"
        raise InputError(f"{what} cannot be looked up: {printable(str(path))}: {reason}") from None
    if not real.is_relative_to(real_root):
        raise InputError(
            f"{what} is a link to {printable(str(real))}, outside {printable(str(real_root))};"
            " it was not read"
        )
    return real
