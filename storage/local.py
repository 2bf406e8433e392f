"""Local files: size-limited reads, atomic writes, safe output folders, and confinement of
relative paths."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import platform
import re
import secrets
import stat
import time
from pathlib import Path

from config.text import printable
from storage.errors import InputError, UnsafeFolder

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


# Temp names: this host's tag, this process's token and a counter, created with O_EXCL.
# Unique across threads, processes and hosts sharing a folder, and cheaper than mkstemp's
# random names (a no-work job's manifest write is on the queue benchmark's hot path). The
# host tag and pid let a later writer tell a dead writer's leftovers from a live one's.
HOST_TAG = hashlib.blake2s(platform.node().encode(), digest_size=3).hexdigest()
_TMP_TOKEN = f"{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}"
_tmp_seq = itertools.count()
# .<name>.<host>-<pid>-<token>-<n>.tmp; names from before the host tag lack "<host>-".
_TMP_NAME = re.compile(r"\..+\.(?:([0-9a-f]{6})-)?(\d+)-([0-9a-f]{8})-\d+\.tmp")
STALE_TEMP_S = 60.0  # a temp file untouched this long is a dead writer's, wherever it ran


def _write_temp(folder: str, name: str, data: bytes) -> str:
    """A fsynced temp file holding ``data`` beside ``folder/name``; its path."""
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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _fsync_folder(folder: str) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` so readers see the old file or the whole new one, never a part.

    Temp file in the same folder, fsync, rename over, fsync the folder.
    """
    folder, name = os.path.split(os.fspath(path))
    tmp = _write_temp(folder, name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS}  # what link() says there


def write_new(path: Path | str, data: bytes) -> None:
    """Write ``data`` whole, only if nothing is at ``path``: FileExistsError otherwise.

    The local If-None-Match: the temp file is hard-linked to the name, which the kernel
    refuses if the name exists (a file, a folder, even a dangling symbolic link), so two
    writers cannot both create it and nothing is replaced between a check and a write.
    """
    folder, name = os.path.split(os.fspath(path))
    tmp = _write_temp(folder, name, data)
    try:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # A filesystem without hard links (vfat, some network mounts): check, then
            # rename; two writers racing within that gap can both succeed there.
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "File exists", os.fspath(path)) from None
            os.rename(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_folder(folder)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def ensure_real_folder(root: Path | str, folder: Path | str) -> bool:
    """Make ``folder`` a real directory inside ``root``, creating what is missing; True
    when this call created it (so it is empty).

    Every part of ``folder`` below ``root`` must be a directory, not a symbolic link:
    otherwise writes into it could land anywhere (a planted ``outbox/1 -> /elsewhere``).
    The walk creates each part and then opens it relative to its parent with O_NOFOLLOW,
    so a link planted at any moment is refused, never followed; ``root`` itself is the
    admin's choice and may be a link. Raises UnsafeFolder naming what is in the way, or
    the OSError of the root itself (unreachable, read-only, replaced by a file: storage
    trouble, not the job's).
    """
    base, target = os.fspath(root).rstrip("/") or "/", os.fspath(folder).rstrip("/")
    rel = os.path.relpath(target, base)
    parts = rel.split(os.sep)
    if target != os.path.normpath(target) or rel == "." or ".." in parts:
        raise UnsafeFolder(f"outputs folder {folder} is not inside the outputs root {root}")
    try:
        fd = os.open(base, _DIR)
    except FileNotFoundError:
        os.makedirs(base, exist_ok=True)
        fd = os.open(base, _DIR)
    created, where = False, base
    try:
        for part in parts:
            where = os.path.join(where, part)
            try:
                os.mkdir(part, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            try:
                sub = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                what = _what_is(part, fd)
                at = f"is {what}" if where == target else f"is under {where}, {what}"
                raise UnsafeFolder(
                    f"outputs folder {target} {at}; nothing is written there: "
                    "move it away, then retry the job"
                ) from None
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)
    return created


def _what_is(name: str, dir_fd: int) -> str:
    """What ``name`` is, for an error message: 'a symbolic link (to ...)', 'a file'."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        return f"a symbolic link (to {os.readlink(name, dir_fd=dir_fd)})"
    return "a file, not a folder" if stat.S_ISREG(st.st_mode) else "not a folder"


def remove_stale_temps(folder: Path | str, *, max_age_s: float = STALE_TEMP_S) -> list[str]:
    """Remove the temp files writers killed mid-write (``kill -9``, a crash) left in
    ``folder``, so a retry leaves a clean folder; the names removed.

    A temp file is stale when its writer was on this host and its pid is gone, or when
    it was not touched for ``max_age_s`` (a writer on another host sharing the folder).
    This process's own temp files are never touched.
    """
    removed: list[str] = []
    now = time.time()
    with os.scandir(folder) as entries:
        for entry in entries:
            m = _TMP_NAME.fullmatch(entry.name)
            if m is None or f"{m[1]}-{m[2]}-{m[3]}" == _TMP_TOKEN:
                continue
            try:
                dead = m[1] == HOST_TAG and not _alive(int(m[2]))
                if dead or now - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                    os.unlink(entry.path)
                    removed.append(entry.name)
            except FileNotFoundError:  # its writer finished (or another cleaner was first)
                continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # an earlier process that had this pid: dead, since we have it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
