"""The kinds of failure every stage has to tell apart: the job's own input, the
environment (worth retrying), and storage that refuses for good."""


class InputError(ValueError):
    """The job's own input is at fault (bad picture, no foreground, ...).

    Permanent: retrying cannot help, so the job fails at once with this message.
    """


class TransientError(RuntimeError):
    """The environment is at fault (I/O hiccup, busy device); worth retrying."""


class StorageError(Exception):
    """A permanent storage failure (no such bucket, access denied): retrying won't help."""


class UnsafeFolder(StorageError):
    """A folder that must not be written into: not a real directory inside the outputs
    root (a symbolic link, a file), or one holding another job's results. Writing there
    could land anywhere or overwrite what is not ours, so nothing is written."""
