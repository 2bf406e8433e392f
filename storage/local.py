"""Local files: size-limited reads, atomic writes, and confinement of relative paths."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from pathlib import Path

from storage.errors import InputError


def read_limited(path: Path, limit: int, *, what: str = "file") -> bytes:
    """Read a regular file of at most ``limit`` bytes, or raise InputError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise InputError(f"{what} cannot be read: {path}: {exc.strerror}") from None
    if path.is_dir():
        raise InputError(f"{what} is a directory, not a file: {path}")
    if st.st_size > limit:
        raise InputError(f"{what} is {st.st_size:,} bytes; the limit is {limit:,}: {path}")
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # grew while we read it
        raise InputError(f"{what} is over the limit of {limit:,} bytes: {path}")
    return data


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
    that lead out of ``base`` are refused (the job file may not reach elsewhere)."""
    if not relative or not relative.strip():
        raise InputError(f"{what} is empty")
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith("~"):
        raise InputError(f"{what} {relative!r} is absolute; give a path relative to the job file")
    root = base.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        raise InputError(f"{what} {relative!r} points outside the job file's folder")
    return target
