"""The two kinds of failure every stage has to tell apart."""


class InputError(ValueError):
    """The job's own input is at fault (bad picture, no foreground, ...).

    Permanent: retrying cannot help, so the job fails at once with this message.
    """


class TransientError(RuntimeError):
    """The environment is at fault (I/O hiccup, busy device); worth retrying."""
