"""The one exception type for failures a user can act on, and the disk failures that count as one.

The CLI prints an `IwcError` as one message, without a traceback, and exits non-zero.
"""

from __future__ import annotations

import errno

# A full disk, an exhausted quota, a read-only file system: the user fixes these, not the code.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class IwcError(Exception):
    """Expected failure: the message says what is wrong and what to do about it."""


def disk_error(e: OSError) -> IwcError | None:
    """`e` as an `IwcError` naming the file when it is a disk the user must fix (`DISK_ERRNOS`), else None."""
    if e.errno not in DISK_ERRNOS:
        return None
    where = f"cannot write {e.filename}" if e.filename else "cannot write"
    return IwcError(f"{where}: {e.strerror} ({errno.errorcode[e.errno]}): free space on that disk (or choose "
                    "a writable folder), then run again; finished stages are kept")
