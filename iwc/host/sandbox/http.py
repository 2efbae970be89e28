"""HTTP side of the Kaggle sandbox: parse a request, check the credential, answer as Kaggle's servers do.

- `POST /api/v1/<pkg>.<Service>/<Method>` with a JSON body: `server.sandbox.api(method, body, user)` answers a dict
  (200 JSON), a `Redirect` (302) or raises `ApiError` (a JSON error body `{"code", "message"}`).
- `GET /files/<sig>/<name>`: a signed file URL (no credential), with ETag, Last-Modified and Range support.
- `PUT /upload/<token>`: a submission file's bytes.

The request line may be absolute-form (the client reaches the sandbox as its HTTP proxy): routes use only the
URL's path. Nothing is logged: headers carry credentials.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 16


class ApiError(Exception):
    """An API call answered with an HTTP error: `status`, a message, and extra headers (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class Redirect:
    """A 302 to a file URL the sandbox serves (how Kaggle answers a download call)."""

    url: str


@dataclass
class Link:
    """What a signed file URL serves. `kind` is "data" (competition / dataset files) or "output"."""

    path: Path
    name: str
    kind: str
    expired: bool = False


class SandboxApi(Protocol):
    """What the handler needs from the sandbox."""

    def authenticate(self, authorization: str) -> str | None: ...
    def api(self, method: str, body: dict[str, Any], user: str | None) -> dict[str, Any] | Redirect: ...
    def open_link(self, token: str) -> tuple[Link, bool]: ...
    def receive_upload(self, token: str, data: bytes) -> bool: ...


class SandboxServer(ThreadingHTTPServer):
    """A threaded HTTP server on loopback that hands every request to `sandbox`."""

    daemon_threads = True

    def __init__(self, sandbox: SandboxApi, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.sandbox = sandbox


class _Handler(BaseHTTPRequestHandler):
    server: SandboxServer
    server_version = "iwc-kaggle-sandbox"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a request log would be noise in test output and could carry credentials."""

    def do_POST(self) -> None:
        match = re.fullmatch(r"/api/v1/(?:[\w-]+\.)?(\w+)/(\w+)", urlsplit(self.path).path)
        if not match:
            return self._json(404, {"code": 404, "message": f"no API at {urlsplit(self.path).path}"})
        try:
            body = json.loads(self._body() or b"{}")
        except ValueError:
            return self._json(400, {"code": 400, "message": "the request body is not JSON"})
        sandbox = self.server.sandbox
        method = match.group(2)
        user = sandbox.authenticate(self.headers.get("Authorization", ""))
        try:
            answer = sandbox.api(method, body if isinstance(body, dict) else {}, user)
        except ApiError as e:
            return self._json(e.status, {"code": e.status, "message": str(e)}, e.headers)
        if isinstance(answer, Redirect):
            self.send_response(302)
            self.send_header("Location", answer.url)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._json(200, answer)

    def do_PUT(self) -> None:
        parts = urlsplit(self.path).path.split("/")
        ok = len(parts) == 3 and parts[1] == "upload" and self.server.sandbox.receive_upload(parts[2], self._body())
        self._json(200 if ok else 404, {} if ok else {"code": 404, "message": "unknown or used upload URL"})

    def do_GET(self) -> None:
        parts = urlsplit(self.path).path.split("/")
        if len(parts) < 4 or parts[1] != "files":
            return self._json(404, {"code": 404, "message": "not found"})
        try:
            link, cut_short = self.server.sandbox.open_link(unquote(parts[2]))
        except ApiError as e:
            return self._json(e.status, {"code": e.status, "message": str(e)})
        return self._send_file(link.path, cut_short)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_file(self, path: Path, cut_short: bool) -> None:
        """Serve `path` (206 for a `Range: bytes=N-` whose If-Range matches); `cut_short` sends half the bytes."""
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
        if wanted and self.headers.get("If-Range", etag) in (etag, email.utils.formatdate(stat.st_mtime, usegmt=True)):
            start = int(wanted.group(1))
            if start >= stat.st_size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{stat.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        length = stat.st_size - start
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{stat.st_size - 1}/{stat.st_size}")
        self.send_header("Content-Type", "application/zip" if path.suffix == ".zip" else "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        remaining = length // 2 if cut_short else length
        with open(path, "rb") as f:
            f.seek(start)
            while remaining > 0 and (block := f.read(min(CHUNK, remaining))):
                self.wfile.write(block)
                remaining -= len(block)
        self.close_connection = True


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """(user, key) from an HTTP Basic `Authorization` header, or None."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, key = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, key) if sep else None
