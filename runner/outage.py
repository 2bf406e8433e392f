"""An outage of the outputs' storage: a full or read-only disk, a lost mount, S3 failing.

It is the storage's trouble, not the job's: the job goes back to the queue without
using an attempt, and the runner claims nothing until a probe (a small write) passes,
probing less often the longer the outage lasts. Logged once when it starts and once
when it ends.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass

from storage import objects
from storage.errors import TransientError

log = logging.getLogger("gen3d.runner")

PROBE_FIRST_S = 0.5  # first wait between probes of outputs that cannot be written ...
PROBE_MAX_S = 30.0  # ... doubling up to this

# Errors of the outputs' storage that pass once an admin or the network fixes it: a
# read-only or full disk, a lost mount or NFS server, permissions being repaired, the
# outputs folder replaced by something else for a while.
OUTAGE_ERRNOS = frozenset({
    errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOTDIR, errno.EACCES,
    errno.EPERM, errno.ESTALE, errno.ENOTCONN,
})  # fmt: skip


class OutputsUnavailable(Exception):
    """Writing the outputs failed because of the storage (read-only, full, unreachable),
    not the job: the job goes back to the queue without using an attempt."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc``, raised while writing outputs, is the storage's passing trouble
    (these errnos locally; what botocore's retries left of an S3 outage) rather than a
    permanent refusal (``StorageError``) or a bug."""
    if isinstance(exc, TransientError):
        return True
    return isinstance(exc, OSError) and exc.errno in OUTAGE_ERRNOS


@dataclass
class _Outage:
    error: str  # the reason given to each job handed back
    since: float  # time.monotonic()
    delay: float  # until the next probe; doubles up to PROBE_MAX_S


class StorageOutage:
    """Whether the outputs at ``root`` are out, noticed by a job's write and ended by a
    probe that passes."""

    def __init__(self, root: str, stop: threading.Event) -> None:
        self.root = root
        self.stop = stop  # a probe's wait ends early when the runner is stopped
        self._now: _Outage | None = None
        self._last: tuple[float, float] | None = None  # (when the last one ended, its delay)

    @property
    def error(self) -> str | None:
        """The reason the outputs cannot be written now (None: they can)."""
        return self._now.error if self._now else None

    def noticed(self, exc: BaseException) -> OutputsUnavailable:
        """Note that the outputs' storage is out (logged once per outage); the job's
        error, which hands it back."""
        reason = f"{type(exc).__name__}: {exc}"
        error = f"outputs unavailable: {reason}"
        if self._now is None:
            now, delay = time.monotonic(), PROBE_FIRST_S
            if self._last and now - self._last[0] < PROBE_MAX_S:
                # Back so soon: the probe's small write passes where a job's does not (a
                # nearly full disk). Keep lengthening the pause rather than rerun batches.
                delay = min(self._last[1] * 2, PROBE_MAX_S)
            self._now = _Outage(error, now, delay)
            log.warning("outputs at %s cannot be written (%s); handing jobs back without "
                        "using an attempt, and claiming none until they can",
                        self.root, reason)  # fmt: skip
        return OutputsUnavailable(error)

    def over(self) -> bool:
        """Probe the outputs while they are out, waiting longer after each failed probe;
        True once they take writes again (at once when there is no outage)."""
        out = self._now
        if out is None:
            return True
        try:
            objects.probe(self.root)
        except Exception as exc:  # noqa: BLE001 - an outage, or the job's error will say
            if is_outage(exc):
                self.stop.wait(out.delay)
                out.delay = min(out.delay * 2, PROBE_MAX_S)
                return False
            log.warning("probing the outputs at %s: %s", self.root, exc)
        log.warning("outputs at %s can be written again after %.1f s; claiming jobs again",
                    self.root, time.monotonic() - out.since)  # fmt: skip
        self._now, self._last = None, (time.monotonic(), out.delay)
        return True
