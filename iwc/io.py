"""Atomic file and folder writes, and content hashes.

Everything iwc writes goes through `atomic_write` (temp file in the same folder, then rename), so an
interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from iwc.errors import IwcError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# What a plain file name may not hold or be: data (an image id, a crop id) becomes a file name only if it
# names a file directly inside its folder. The readers apply the same rule to whole columns.
NOT_IN_NAME = "/\\\x00"  # separators (POSIX and Windows) and NUL
NOT_A_NAME = ("", ".", "..")

_UMASK = os.umask(0)
os.umask(_UMASK)


def is_plain_name(name: object) -> bool:
    """Whether `name` is a string naming a file directly inside a folder: not '', '.' or '..', no '/', '\\'
    or NUL (so neither absolute nor reaching into another folder)."""
    return isinstance(name, str) and name not in NOT_A_NAME and not any(c in name for c in NOT_IN_NAME)


def child_path(folder: str | os.PathLike, name: str, what: str) -> Path:
    """`folder / name` for a plain file name (`is_plain_name`); else an IwcError naming `what` (where the
    name came from, e.g. "image id 'x' (train annotations)"). A path built from data goes through here."""
    if not is_plain_name(name):
        raise IwcError(f"{what}: {name!r} is not a plain file name (it must not be empty, '.' or '..', nor "
                       "hold '/', '\\' or NUL); fix the data it came from")
    return Path(folder) / name


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside `path`; on success rename it over `path`, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


MAX_NAME_BYTES = 200  # leaves room under the usual 255-byte limit for `.<name>.assembling-XXXXXXXX` beside it


def folder_name_problem(name: str, what: str) -> str | None:
    """Why `name` (given as `what`, e.g. `--run`) cannot be one plain folder name inside another folder, as one
    sentence naming it; None when it can. Refused: empty, `.` or `..`, a path separator, NUL or another control
    character, more than `MAX_NAME_BYTES` bytes (the file system's limit, less room for temp folders beside it)."""
    size = len(os.fsencode(name))
    bad = sorted({c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127})
    if name in ("", ".", ".."):
        why = "it names no folder of its own"
    elif bad:
        why = f"it holds {', '.join(repr(c) for c in bad)}"
    elif size > MAX_NAME_BYTES:
        why = f"it is {size} bytes long (at most {MAX_NAME_BYTES})"
    else:
        return None
    shown = repr(name) if len(name) <= 40 else f"{name[:40]!r}..."
    return f"{what} = {shown} must be a plain folder name, not a path: {why}"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON, atomically (stable bytes for stable content)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from `path`; {} when the file is absent, unreadable or not an object (e.g. a state
    file left by an earlier run, which is then treated as no state)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` atomically (UTF-8, no newline translation)."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Lay out `fig` and write it as a PNG, atomically, with stable bytes: matplotlib's version stamp
    (`Software`) left out, so the same figure gives the same file."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    write_bytes(path, buf.getvalue())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of an object's canonical JSON form (key-sorted, compact)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@contextlib.contextmanager
def replacing_folder(out: str | os.PathLike) -> Iterator[Path]:
    """A new, empty folder beside `out` for the block to fill; when the block succeeds, it replaces `out`.

    Leftovers of a process killed mid-way are cleared first (a swap cut short between its two renames puts
    the previous folder back).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out.parent.glob(f".{out.name}.replaced-*")):
        if out.exists():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(stale, out)
    for stale in out.parent.glob(f".{out.name}.assembling-*"):
        shutil.rmtree(stale, ignore_errors=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.assembling-", dir=out.parent))
    try:
        yield new
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(new, out)
        except OSError:
            if old.exists():
                os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)
