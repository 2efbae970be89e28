"""The one exception type for failures a user can act on.

The CLI prints an `IwcError` as one message, without a traceback, and exits non-zero.
"""


class IwcError(Exception):
    """Expected failure: the message says what is wrong and what to do about it."""
