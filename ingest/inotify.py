"""Linux inotify, read directly: the inbox watcher's event source where the kernel has it.

watchdog pairs every IN_MOVED_FROM with its IN_MOVED_TO by scanning the queue of
events it has not delivered yet, once or twice per rename, and its consumer sleeps
half a second whenever an unpaired IN_MOVED_FROM is at the head of that queue; in a
burst of renames the queue grows and the scans grow with it (``bench.ingest_burst``
found its threads using as much CPU as the whole ingest). The watcher needs none of
that: a file is worth a look when it is closed after writing, renamed in (from
anywhere) or created (a hard link); a new folder needs a watch; an overflow needs a
rescan. So this reads those events straight from the kernel, in the watcher's own
thread, and watches no dot-folder (``.accepted``/``.rejected`` see a move per file).

The constants and the event layout are the kernel's ABI (``<sys/inotify.h>``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
from dataclasses import dataclass

log = logging.getLogger("gen3d.ingest")

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

WATCH_MASK = (
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF
    | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK
)  # fmt: skip
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


@dataclass(frozen=True)
class Event:
    """What the watcher acts on: ``kind`` is "ready" (closed after writing, or renamed
    in), "created" (a new name that may still be being written), "folder" (a new
    folder, now watched, whose files predate its watch) or "rescan" (events were lost,
    or a watched folder moved)."""

    kind: str
    path: str = ""


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        lib.inotify_init1  # noqa: B018 - present only where the kernel has inotify
    except (OSError, AttributeError):
        return None
    return lib


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


class Inotify:
    """Watches a folder tree (dot-folders skipped) and turns kernel events into
    ``Event``s. Not thread-safe: one reader, the watcher's thread."""

    def __init__(self, root: str) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "inotify is not available here")
        self.root = root
        fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        self._dirs: dict[int, str] = {}  # watch descriptor -> folder
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self.watch_tree(root)

    def watch_tree(self, top: str) -> None:
        """Watch ``top`` and every folder below it that is not a dot-folder."""
        for dirpath, dirnames, _ in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            self._watch(dirpath)

    def _watch(self, folder: str) -> None:
        assert _LIBC is not None
        wd = _LIBC.inotify_add_watch(self.fd, os.fsencode(folder), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):  # gone (or replaced) meanwhile
                return
            raise OSError(err, f"cannot watch {folder}: {os.strerror(err)}")
        self._dirs[wd] = folder

    def wake(self) -> None:
        """Make a ``read`` waiting in another thread return at once."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def read(self, timeout_s: float) -> list[Event]:
        """Events that arrived, waiting at most ``timeout_s`` for the first."""
        ready = self._poll.poll(max(int(timeout_s * 1000), 0))
        if any(fd == self._wake_r for fd, _ in ready):
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return events
            events += self._parse(data)

    def _parse(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        at = 0
        while at + _HEADER.size <= len(data):
            wd, mask, _cookie, size = _HEADER.unpack_from(data, at)
            raw = data[at + _HEADER.size : at + _HEADER.size + size].rstrip(b"\0")
            at += _HEADER.size + size
            if mask & IN_Q_OVERFLOW:
                out.append(Event("rescan"))
                continue
            folder = self._dirs.get(wd)
            if mask & IN_IGNORED:  # the folder is gone; the kernel dropped its watch
                self._dirs.pop(wd, None)
                continue
            if folder is None:
                continue
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                # A watched folder moved or vanished: the paths known for it (and below
                # it) are stale. Forget them; the rescan this asks for watches the tree
                # again where it is now.
                if folder == self.root:
                    log.warning("the inbox %s itself was moved or deleted", folder)
                self._forget_below(folder)
                out.append(Event("rescan"))
                continue
            name = os.fsdecode(raw)
            path = os.path.join(folder, name)
            if mask & IN_ISDIR:
                if not name.startswith(".") and mask & (IN_CREATE | IN_MOVED_TO):
                    self.watch_tree(path)
                    out.append(Event("folder", path))
                continue
            if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                out.append(Event("ready", path))
            elif mask & IN_CREATE:
                out.append(Event("created", path))
        return out

    def _forget_below(self, folder: str) -> None:
        assert _LIBC is not None
        prefix = folder.rstrip("/") + "/"
        for wd, path in list(self._dirs.items()):
            if path == folder or path.startswith(prefix):
                _LIBC.inotify_rm_watch(self.fd, wd)
                self._dirs.pop(wd, None)

    def close(self) -> None:
        for fd in (self.fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
