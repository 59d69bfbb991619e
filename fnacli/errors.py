"""The one exception type that means "the user gave us something wrong" (exit code 2)."""


class UserError(Exception):
    """Bad usage or bad input. The CLI prints ``str(err)`` as one line and exits 2."""
