"""Docker images made on this machine when no image registry is reachable (`invoke docker.base`).

`build_base()` -> the tag of a base image for docker/Dockerfile: a minimal Debian made with debootstrap from
the mirror this machine's apt uses, imported with `docker import` (`debian_image()`), then
docker/base.Dockerfile adds a venv with torch + torchvision. Both are cached by a tag derived from their
inputs: a second call builds nothing. `docker_build(argv, context)` runs a `docker build` with this
machine's pip configuration (`pip_settings()`): local index folders are served on loopback for the build,
which runs with `--network host`, and the CA bundle pip uses goes into the base image.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlparse

from iwc.errors import IwcError

PROJECT_DIR = Path(__file__).resolve().parents[2]
BASE_DOCKERFILE = Path("docker/base.Dockerfile")
SUITE = "bookworm"  # Debian 12: Python 3.11, the Python of the lock and of Kaggle's images
PACKAGES = ("python3", "python3-venv", "passwd", "ca-certificates")
TORCH, TORCHVISION = "2.14.1", "0.29.1"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PIP_KEYS = ("index-url", "extra-index-url", "find-links")  # -> build args PIP_INDEX_URL, ...
CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def debian_tag() -> str:
    """`iwc-debian:<suite>-<hash of the suite and packages>`."""
    return f"iwc-debian:{SUITE}-{_digest(SUITE, 'minbase', *PACKAGES)}"


def base_tag(project: Path = PROJECT_DIR) -> str:
    """`iwc-base:<suite>-torch<version>-<hash of the Debian tag, base.Dockerfile and the versions>`."""
    text = (project / BASE_DOCKERFILE).read_text(encoding="utf-8")
    return f"iwc-base:{SUITE}-torch{TORCH}-{_digest(debian_tag(), text, TORCH, TORCHVISION)}"


def image_exists(tag: str) -> bool:
    """Whether the engine holds image `tag`."""
    return not subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for `SUITE` (deb822 `.sources` or `sources.list`)."""
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "security" not in fields.get("URIs", ""):
                return fields.get("URIs", DEFAULT_MIRROR).split()[0]
    listing = sources / "sources.list"
    text = listing.read_text(encoding="utf-8", errors="replace") if listing.is_file() else ""
    found = re.search(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M)
    return found.group(1) if found else DEFAULT_MIRROR


def debian_image(mirror: str = "") -> str:
    """Tag of the minimal Debian image, made with debootstrap and imported when the engine lacks it."""
    tag = debian_tag()
    if image_exists(tag):
        return tag
    if os.geteuid() != 0:
        raise IwcError("making the Debian base needs root (debootstrap): run `sudo invoke docker.base`")
    if not shutil.which("debootstrap"):
        raise IwcError("debootstrap is not installed: `apt-get install debootstrap`, then rerun `invoke docker.base`")
    mirror = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="iwc-debootstrap-") as tmp:
        root = Path(tmp) / "root"
        print(f"debootstrap {SUITE} from {mirror} ...", file=sys.stderr, flush=True)
        _check([["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror]],
               "debootstrap")
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        _check([["tar", "--numeric-owner", "-C", str(root), "-c", "."], ["docker", "import", "-", tag]],
               "docker import")
    return tag


def _check(commands: list[list[str]], what: str) -> None:
    """Run `commands` as a pipeline; raises `IwcError` with the failing one's last line."""
    procs, feed = [], None
    for cmd in commands:
        proc = subprocess.Popen(cmd, stdin=feed, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if feed is not None:
            feed.close()
        feed = proc.stdout
        procs.append(proc)
    procs[-1].stdout.read()
    for proc in procs:
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        if proc.wait():
            raise IwcError(f"{what} failed (exit code {proc.returncode}): {(err or ['no message'])[-1]}")


def build_base(mirror: str = "", project: Path = PROJECT_DIR) -> str:
    """Tag of the base image (`base_tag()`), built when the engine lacks it: Debian, then torch + torchvision."""
    tag = base_tag(project)
    if image_exists(tag):
        print(f"base image {tag}: cached", file=sys.stderr, flush=True)
        return tag
    debian = debian_image(mirror)
    with tempfile.TemporaryDirectory(prefix="iwc-base-") as context:
        shutil.copyfile(ca_bundle(), Path(context) / "ca-bundle.crt")
        shutil.copyfile(project / BASE_DOCKERFILE, Path(context) / "Dockerfile")
        docker_build(["docker", "build", "--file", str(Path(context) / "Dockerfile"), "--tag", tag,
                      "--build-arg", f"DEBIAN={debian}", "--build-arg", f"TORCH={TORCH}",
                      "--build-arg", f"TORCHVISION={TORCHVISION}"], context)
    return tag


def ca_bundle() -> Path:
    """The CA bundle pip uses here (its `cert` setting, else the usual environment variables or system file)."""
    settings = pip_settings()
    for candidate in (settings.get("cert"), os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE"),
                      *CA_FILES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise IwcError("no CA bundle found for pip: set PIP_CERT to your CA bundle file, then rerun")


def pip_settings() -> dict[str, str]:
    """This machine's pip settings (`pip config list`: environment over site over user over global files)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                          check=False)
    found: dict[str, tuple[bool, str]] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^(:env:|[\w-]+)\.([\w-]+)='(.*)'$", line)
        if match:
            origin, key, value = match.groups()
            if origin == ":env:" or not found.get(key, (False, ""))[0]:
                found[key] = (origin == ":env:", value)
    return {key: value for key, (_, value) in found.items()}


@contextmanager
def served_pip_settings() -> Iterator[list[str]]:
    """`--build-arg PIP_...=...` for this machine's pip settings, a local folder in them served on 127.0.0.1
    while the context lasts (an index folder with its parent, so its `../../files` links resolve)."""
    settings = pip_settings()
    with tempfile.TemporaryDirectory(prefix="iwc-pip-") as tmp:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=tmp))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port, count = server.server_address[1], 0

        def url(item: str, index: bool) -> str:
            nonlocal count
            local = Path(unquote(urlparse(item).path) if item.startswith("file:") else item)
            if not local.is_absolute() or not local.exists():
                return item
            (Path(tmp) / str(count)).symlink_to(local.parent if index else local, target_is_directory=True)
            count += 1
            return f"http://127.0.0.1:{port}/{count - 1}" + (f"/{local.name}/" if index else "/")

        try:
            yield [word for key in PIP_KEYS if settings.get(key)
                   for word in ("--build-arg", f"PIP_{key.upper().replace('-', '_')}="
                                + " ".join(url(item, key != "find-links") for item in settings[key].split()))]
        finally:
            server.shutdown()
            server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def docker_build(argv: list[str], context: str | Path) -> None:
    """Run `argv` (a `docker build` without its context) with `--network host` and this machine's pip
    settings, then the build `context`; raises `IwcError` when the build fails."""
    with served_pip_settings() as pip_args:
        done = subprocess.run([*argv, "--network", "host", *pip_args, str(context)], stdout=sys.stderr, check=False)
    if done.returncode:
        raise IwcError(f"`docker build` failed (exit code {done.returncode}): the lines above say why")
