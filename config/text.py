"""Text from strangers made safe for a terminal and a log.

Job names, file names and the reasons built from them are written by whoever drops a
file. Raw, a control character in them forges a log line (a newline), recolours or
clears the terminal (an ANSI escape), or reorders what an admin reads (a bidirectional
override). ``printable`` escapes those, and only those: any other character, accented
or not, stays as written.
"""

from __future__ import annotations

import logging

# C0 controls, DEL, C1 controls, and the bidirectional embeddings, overrides and isolates.
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def printable(text: str) -> str:
    """``text`` with control and bidi-override characters written as escapes (\\n, \\x1b,
    \\u202e); lone surrogates (undecodable bytes of a file name) as \\udcNN."""
    out = text.translate(_ESCAPES)
    if out.isascii() or out.isprintable():  # the common cases, without a scan per character
        return out
    return "".join(c if not 0xD800 <= ord(c) <= 0xDFFF else f"\\u{ord(c):04x}" for c in out)


def exception_line(exc: BaseException, doing: str = "") -> str:
    """``doing: ExcType: its first line``, printable and at most 500 characters: what a
    log line or a stored reason says of an exception."""
    lines = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return printable(f"{doing}: {what}" if doing else what)[:500]


def source_name(uri: str) -> str:
    """A job file's name for a log line: the file name of a local one, the whole URI of
    a bucket object."""
    return printable(uri if uri.startswith("s3://") else uri.rsplit("/", 1)[-1])


class SafeFormatter(logging.Formatter):
    """A formatter whose every line is printable: the message, and each line of a
    traceback on its own (the lines stay lines; what is in them is escaped)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record))

    def formatException(self, ei: object) -> str:  # noqa: N802 - logging's name
        text = super().formatException(ei)  # type: ignore[arg-type]
        return "\n".join(printable(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return "\n".join(printable(line) for line in stack_info.split("\n"))
