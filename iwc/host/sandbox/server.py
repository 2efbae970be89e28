"""The Kaggle sandbox: a local stand-in for Kaggle on loopback that the real, unmodified `kaggle` client talks to.

`Sandbox(data_root, workdir, owner)` serves, over HTTP on 127.0.0.1 (an ephemeral port):
- the competition `iwildcam-2020-fgvc7` = `<data_root>/iwildcam-2020-fgvc7/` (files, zip download, submissions
  scored as categorization accuracy against `<data_root>/ground_truth/test_labels.csv`);
- the dataset `qitvision/iwildcam2020-256` = `<data_root>/iwildcam2020-256/` (plus any `datasets=` given);
- kernels: a push stores the source and runs it for real (`iwc.host.sandbox.kernels`); its working dir is served
  as its outputs.
The client reaches it with `sb.env` (`KAGGLE_API_ENVIRONMENT=LOCALHOST`, `HTTP_PROXY` = the sandbox, a made-up
credential). `sb.inject(fault, times, match, **params)` arms a fault (`iwc.host.sandbox.faults.FAULTS`).
`python -m iwc.host.sandbox` (`iwc.host.sandbox.cli`, `invoke kaggle.sandbox`) serves it in the foreground.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from iwc.errors import IwcError
from iwc.host.kaggle_client import OUTPUT_LISTING_LIMIT, POLL_ENV
from iwc.host.sandbox.faults import Faults
from iwc.host.sandbox.http import ApiError, Link, Redirect, SandboxServer, basic_credentials
from iwc.host.sandbox.kernels import FINISHED, KernelStore, Version
from iwc.io import atomic_write, read_json_object, write_text
from iwc.layout import COMPETITION_SLUG, RESIZED_DATASET

CREDENTIAL_VARS = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")
PAGE_SIZE = 20  # Kaggle's default page size
DAILY_SUBMISSIONS = 5
STORED = (".jpg", ".jpeg", ".png", ".zip")  # compressed already: zipped without deflate
WORKDIR_MARKER = ".iwc-kaggle-sandbox"
STATE_DIRS = ("kernels", "zips", "uploads", "config")
SANDBOX_POLL_S = "0.5"  # what a client here waits between status polls (`POLL_ENV`)

Handler = Callable[[dict[str, Any], str], "dict[str, Any] | Redirect"]


class Sandbox:
    """A Kaggle stand-in on loopback; a context manager (`with Sandbox(...) as sb:`) that starts and stops it.

    `data_root` is laid out like `iwc.host.synth.write_demo`'s output; `workdir` receives everything the sandbox
    writes (zips, uploads, kernel runs, the client config dir). `token` / `key` default to made-up values.
    """

    def __init__(self, data_root: Path, workdir: Path, owner: str = "tester", token: str | None = None,
                 key: str | None = None, datasets: Mapping[str, Path] | None = None, port: int = 0) -> None:
        self.data_root = Path(data_root)
        self.workdir = Path(workdir).resolve()
        self.owner = owner
        self.token = token or "sandbox-token-" + secrets.token_hex(12)
        self.key = key or "sandbox-key-" + secrets.token_hex(12)
        self.competition = COMPETITION_SLUG
        self.competition_dir = self.data_root / COMPETITION_SLUG
        self.datasets = {RESIZED_DATASET: self.data_root / RESIZED_DATASET.split("/")[1], **(datasets or {})}
        if not (self.competition_dir / "sample_submission.csv").is_file():
            raise IwcError(f"{self.competition_dir} holds no competition (no sample_submission.csv): "
                           "write the synthetic one with `iwc demo-data` or pass another data root")
        self.faults = Faults()
        self.kernels = KernelStore(self.workdir / "kernels", self.faults)
        self.calls: list[str] = []  # API methods called, in order
        self._port = port
        self._server: SandboxServer | None = None
        self._links: dict[str, Link] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._submissions: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._zip_lock = threading.Lock()
        self._api: dict[str, Handler] = {
            "IntrospectToken": self._introspect,
            "ListDataFiles": self._list_data_files, "DownloadDataFiles": self._download_data_files,
            "DownloadDataFile": self._download_data_file, "StartSubmissionUpload": self._start_upload,
            "CreateSubmission": self._create_submission, "GetSubmission": self._get_submission,
            "ListSubmissions": self._list_submissions, "GetSubmissionLimits": self._submission_limits,
            "GetDatasetMetadata": self._dataset_metadata, "DownloadDataset": self._download_dataset,
            "GetDatasetStatus": self._dataset_status,
            "SaveKernel": self._save_kernel, "GetKernelSessionStatus": self._kernel_status,
            "ListKernelSessionOutput": self._kernel_output, "GetKernel": self._get_kernel,
        }

    # --- lifecycle and what a client needs -------------------------------------------------------------------

    def start(self) -> Sandbox:
        self._claim_workdir()
        try:
            self._server = SandboxServer(self, self._port)
        except OSError as e:
            raise IwcError(f"the Kaggle sandbox cannot listen on 127.0.0.1:{self._port} ({e.strerror}): "
                           "choose another port, or 0 for any free one") from None
        threading.Thread(target=self._server.serve_forever, daemon=True, name="kaggle sandbox").start()
        return self

    def _claim_workdir(self) -> None:
        """Make `workdir` this session's: empty, or one an earlier sandbox left (its state is removed)."""
        marker = self.workdir / WORKDIR_MARKER
        if self.workdir.is_dir() and any(self.workdir.iterdir()) and not marker.is_file():
            raise IwcError(f"sandbox workdir {self.workdir} holds other files: choose an empty or new folder")
        for name in STATE_DIRS:  # an earlier session's kernels and zips would pass for this one's
            shutil.rmtree(self.workdir / name, ignore_errors=True)  # symlinked inputs are unlinked, not followed
        (self.workdir / "config").mkdir(parents=True)
        write_text(marker, "a Kaggle sandbox's workdir: cleared at each start\n")

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.kernels.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._server:
            raise IwcError("the Kaggle sandbox is not running: start it first (`with Sandbox(...) as sb:`)")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def client_env(self, auth: str = "token") -> dict[str, str]:
        """Environment variables that send the real client here: `auth` "token" (bearer) or "legacy" (basic); iwc's
        client polls a kernel's status every `SANDBOX_POLL_S` seconds (a sandbox answers at once)."""
        if auth not in ("token", "legacy"):
            raise IwcError(f"auth must be 'token' or 'legacy', not {auth!r}")
        credential = ({"KAGGLE_API_TOKEN": self.token} if auth == "token"
                      else {"KAGGLE_USERNAME": self.owner, "KAGGLE_KEY": self.key})
        proxies = {name: self.url for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")}
        return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", **proxies, "NO_PROXY": "", "no_proxy": "",
                "KAGGLE_CONFIG_DIR": str(self.workdir / "config"), POLL_ENV: SANDBOX_POLL_S, **credential}

    @property
    def env(self) -> dict[str, str]:
        return self.client_env("token")

    def process_env(self, auth: str = "token", base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A whole environment for a client process: `base` (default os.environ) without any Kaggle credential
        of its own, plus `client_env(auth)`."""
        base = os.environ if base is None else base
        return {**{k: v for k, v in base.items() if k not in CREDENTIAL_VARS}, **self.client_env(auth)}

    def inject(self, fault: str, times: int = 1, match: str = "", **params: Any) -> None:
        """Arm `fault` (a name of `FAULTS`) for the next `times` events whose subject contains `match`."""
        self.faults.inject(fault, times, match, **params)

    @property
    def fired(self) -> dict[str, int]:
        return dict(self.faults.fired)

    @property
    def submissions(self) -> list[dict[str, Any]]:
        """Every submission so far (oldest first): ref, file_name, description, status, public_score, error."""
        with self._lock:
            return [{k: v for k, v in s.items() if k != "polled"} for s in self._submissions]

    # --- the HTTP backend -------------------------------------------------------------------------------------

    def authenticate(self, authorization: str) -> str | None:
        """The user an `Authorization` header proves, or None."""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(value.strip(), self.token):
            return self.owner
        basic = basic_credentials(authorization)
        if basic and basic[0] == self.owner and secrets.compare_digest(basic[1], self.key):
            return self.owner
        return None

    def api(self, method: str, body: dict[str, Any], user: str | None) -> dict[str, Any] | Redirect:
        with self._lock:
            self.calls.append(method)
        handler = self._api.get(method)
        if handler is None:
            raise ApiError(404, f"the Kaggle sandbox does not serve {method}")
        if user is None and method != "IntrospectToken":
            raise ApiError(401, "Unauthenticated: the sandbox accepts only the credential it made up")
        return handler(body, user or "")

    def open_link(self, token: str) -> tuple[Link, bool]:
        """The file behind a signed URL and whether to cut its download short; expired/unknown -> ApiError 403."""
        with self._lock:
            link = self._links.get(token)
        if link is None or link.expired:
            raise ApiError(403, "Request has expired or the signature does not match")
        if link.kind == "output" and self.faults.take("expired_url", link.name) is not None:
            link.expired = True
            raise ApiError(403, "Request has expired")
        return link, self.faults.take("short_download", link.name) is not None

    def receive_upload(self, token: str, data: bytes) -> bool:
        with self._lock:
            upload = self._uploads.get(token)
            if upload is None or "path" in upload:
                return False
            path = self.workdir / "uploads" / token
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            upload["path"] = path
        return True

    def _link(self, path: Path, name: str, kind: str = "data") -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._links[token] = Link(path, name, kind)
        return f"{self.url}/files/{token}/{quote(Path(name).name)}"

    # --- competitions -----------------------------------------------------------------------------------------

    def _check_competition(self, body: dict[str, Any]) -> None:
        name = body.get("competitionName", "")
        if name != self.competition:
            raise ApiError(404, f"Competition {name!r} not found (the sandbox serves {self.competition!r})")
        refused = self.faults.take("rules_not_accepted", name)
        if refused is not None:
            raise ApiError(403, refused["message"])

    def _list_data_files(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        self._check_competition(body)
        files = sorted(p for p in self.competition_dir.rglob("*") if p.is_file())
        page, token = _page(files, body)
        listed = []
        for path in page:
            name = path.relative_to(self.competition_dir).as_posix()
            stat = path.stat()
            listed.append({"ref": name, "name": name, "totalBytes": stat.st_size,
                           "creationDate": _iso(stat.st_mtime)})
        return {"files": listed, **({"nextPageToken": token} if token else {})}

    def _download_data_files(self, body: dict[str, Any], user: str) -> Redirect:
        self._check_competition(body)
        return Redirect(self._link(self._zip(self.competition_dir, f"{self.competition}.zip"),
                                   f"{self.competition}.zip"))

    def _download_data_file(self, body: dict[str, Any], user: str) -> Redirect:
        self._check_competition(body)
        name = body.get("fileName", "")
        path = (self.competition_dir / name).resolve()
        if not name or not path.is_file() or not path.is_relative_to(self.competition_dir.resolve()):
            raise ApiError(404, f"Competition file {name!r} not found")
        return Redirect(self._link(path, name))

    def _start_upload(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        self._check_competition(body)
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._uploads[token] = {"file_name": body.get("fileName", "submission.csv")}
        return {"token": token, "createUrl": f"{self.url}/upload/{token}"}

    def _create_submission(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        self._check_competition(body)
        with self._lock:
            upload = self._uploads.pop(body.get("blobFileTokens", ""), None)
        if not upload or "path" not in upload:
            raise ApiError(400, "blobFileTokens does not name a completed upload")
        rejected = self.faults.take("submission_rejected", upload["file_name"])
        error = rejected["message"] if rejected is not None else ""
        score = ""
        if not error:
            score, error = score_submission(upload["path"], self.competition_dir / "sample_submission.csv",
                                            self.data_root / "ground_truth" / "test_labels.csv")
        with self._lock:
            ref = 1_000_001 + len(self._submissions)
            self._submissions.append({
                "ref": ref, "file_name": upload["file_name"], "description": body.get("submissionDescription", ""),
                "date": _iso(datetime.now(UTC).timestamp()), "size": upload["path"].stat().st_size,
                "status": "ERROR" if error else "COMPLETE", "public_score": score, "error": error, "polled": 0})
        return {"message": f"Successfully submitted to {self.competition}", "ref": ref}

    def _get_submission(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        with self._lock:
            found = [s for s in self._submissions if s["ref"] == int(body.get("ref") or 0)]
            if not found:
                raise ApiError(404, f"Submission {body.get('ref')} not found")
            found[0]["polled"] += 1
            return _submission_json(found[0], user)

    def _list_submissions(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        self._check_competition(body)
        with self._lock:
            for s in self._submissions:
                s["polled"] += 1
            return {"submissions": [_submission_json(s, user) for s in reversed(self._submissions)]}

    def _submission_limits(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        """Counts as Kaggle reports them; the sandbox reports the daily limit but does not enforce it."""
        self._check_competition(body)
        with self._lock:
            made = len(self._submissions)
        return {"numToday": made, "numTotal": made, "numAllowedNow": max(DAILY_SUBMISSIONS - made, 0)}

    # --- datasets ---------------------------------------------------------------------------------------------

    def _dataset(self, body: dict[str, Any]) -> tuple[str, Path]:
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        folder = self.datasets.get(ref)
        if folder is None or not Path(folder).is_dir():
            raise ApiError(404, f"Dataset {ref!r} not found")
        return ref, Path(folder)

    def _dataset_metadata(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        ref, _ = self._dataset(body)
        owner, slug = ref.split("/")
        return {"info": {"datasetSlug": slug, "ownerUser": owner, "title": slug, "isPrivate": False,
                         "licenses": [{"name": "CC0-1.0"}], "subtitle": "served by the iwc Kaggle sandbox"}}

    def _download_dataset(self, body: dict[str, Any], user: str) -> Redirect:
        ref, folder = self._dataset(body)
        name = ref.replace("/", "__") + ".zip"
        return Redirect(self._link(self._zip(folder, name), f"{ref.split('/')[1]}.zip"))

    def _dataset_status(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        self._dataset(body)
        return {"status": "READY"}

    def _zip(self, folder: Path, name: str) -> Path:
        """`folder`'s files at the top level of `<workdir>/zips/<name>`, built once per sandbox."""
        path = self.workdir / "zips" / name
        with self._zip_lock:
            if not path.is_file():
                with atomic_write(path, "wb") as f, zipfile.ZipFile(f, "w") as archive:
                    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                        stored = file.suffix.lower() in STORED
                        archive.write(file, file.relative_to(folder).as_posix(),
                                      zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        return path

    # --- kernels ----------------------------------------------------------------------------------------------

    def _save_kernel(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        owner, _, slug = str(body.get("slug", "")).partition("/")
        if owner != user or not re.fullmatch(r"[a-z0-9-]{5,50}", slug):
            return {"error": f"Kernel id {body.get('slug')!r} is not yours or not a valid slug: "
                             f"use '{user}/<slug of 5-50 lowercase letters, digits, hyphens>'"}
        if (body.get("language"), body.get("kernelType")) != ("python", "script"):
            return {"error": "the sandbox runs only python scripts (language 'python', kernel_type 'script')"}
        injected = self.faults.take("push_error", slug)
        if injected is not None:
            return {"error": injected["message"]}
        mounts, invalid = self._mounts(body)
        version = self.kernels.push(owner, slug, body, mounts)
        return {"ref": f"/code/{owner}/{slug}", "url": f"{self.url}/code/{owner}/{slug}",
                "versionNumber": version.number, **{k: v for k, v in invalid.items() if v}}

    def _mounts(self, body: dict[str, Any]) -> tuple[dict[str, Path], dict[str, list[str]]]:
        """Input mounts of a push (mount name -> folder) and the sources it named that do not exist."""
        mounts: dict[str, Path] = {}
        invalid: dict[str, list[str]] = {"invalidCompetitionSources": [], "invalidDatasetSources": [],
                                         "invalidKernelSources": []}
        for name in body.get("competitionDataSources") or []:
            if name == self.competition:
                mounts[f"competitions/{name}"] = self.competition_dir
            else:
                invalid["invalidCompetitionSources"].append(name)
        for ref in body.get("datasetDataSources") or []:
            if ref in self.datasets:
                mounts[f"datasets/{ref}"] = Path(self.datasets[ref])
            else:
                invalid["invalidDatasetSources"].append(ref)
        for ref in body.get("kernelDataSources") or []:
            owner, _, slug = ref.partition("/")
            if not self.kernels.exists(owner, slug):
                invalid["invalidKernelSources"].append(ref)
            elif done := self.kernels.latest_complete(owner, slug):
                mounts[f"notebooks/{ref}"] = done.working
        return mounts, invalid

    def _version(self, body: dict[str, Any]) -> Version:
        owner, slug, label = body.get("userName", ""), body.get("kernelSlug", ""), body.get("versionLabel", "")
        version = self.kernels.find(owner, slug, label)
        if version is None:
            what = f"version {label!r} of " if label else ""
            raise ApiError(404, f"Not found: {what}kernel {owner}/{slug} (version labels read 'v<N>')")
        return version

    def _kernel_status(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        version = self._version(body)
        return {"status": version.status, **({"failureMessage": version.failure} if version.failure else {})}

    def _kernel_output(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        limited = self.faults.take("rate_limit", body.get("kernelSlug", ""))
        if limited is not None:
            raise ApiError(429, "Too many requests", {"Retry-After": f"{limited['retry_after']:g}"})
        version = self._version(body)
        if version.status not in FINISHED:
            return {"files": []}
        files = sorted(p for p in version.working.rglob("*") if p.is_file())[:OUTPUT_LISTING_LIMIT]  # as Kaggle
        page, token = _page(files, body)
        listed = []
        for path in page:
            name = path.relative_to(version.working).as_posix()
            listed.append({"fileName": name, "url": self._link(path, name, "output")})
        return {"files": listed, "log": version.log_text(), **({"nextPageToken": token} if token else {})}

    def _get_kernel(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        version = self._version(body)
        request = version.request
        metadata = {"ref": f"{version.owner}/{version.slug}", "slug": version.slug, "author": version.owner,
                    "title": request.get("newTitle") or version.slug, "language": "python",
                    "kernelType": "script", "currentVersionNumber": version.number}
        for key in ("isPrivate", "enableGpu", "enableInternet", "datasetDataSources", "kernelDataSources",
                    "competitionDataSources", "machineShape"):
            if key in request:
                metadata[key] = request[key]
        return {"metadata": metadata, "blob": {"source": request.get("text", ""), "language": "python",
                                               "kernelType": "script", "slug": version.slug}}

    def _introspect(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        if secrets.compare_digest(str(body.get("token", "")), self.token):
            return {"active": True, "username": self.owner}
        return {"active": False}


def score_submission(path: Path, sample_csv: Path, truth_csv: Path) -> tuple[str, str]:
    """(public score, "") for a valid submission, ("", what is wrong) otherwise.

    The score is categorization accuracy over the sample submission's Ids against the true labels, written
    as Kaggle shows it ("0.84000"). Checks header, Ids and integer categories as Kaggle's validator does.
    """
    from iwc.submission import read_csv_strings, validate

    try:
        submission = read_csv_strings(path)
    except IwcError as e:
        return "", str(e)
    sample = read_csv_strings(sample_csv)
    truth = read_csv_strings(truth_csv).set_index("Id")["Category"]
    categories = read_json_object(sample_csv.parent / "iwildcam2020_train_annotations.json").get("categories", [])
    known = {int(c["id"]) for c in categories} | {int(c) for c in truth}
    problems = validate(submission, sample, sorted(known))
    if problems:
        return "", "Submission is invalid: " + "; ".join(problems)
    predicted = submission.set_index("Id")["Category"].astype(int)
    expected = truth.loc[sample["Id"]].astype(int)
    accuracy = float((predicted.loc[expected.index].to_numpy() == expected.to_numpy()).mean())
    return f"{accuracy:.5f}", ""


def _page(items: list[Path], body: dict[str, Any]) -> tuple[list[Path], str]:
    """One page of `items` by `pageSize` / `pageToken` (an offset), and the next page's token ("" at the end)."""
    size = int(body.get("pageSize") or PAGE_SIZE)
    token = str(body.get("pageToken") or "0")
    start = int(token) if token.isdigit() else 0
    end = start + max(size, 1)
    return items[start:end], str(end) if end < len(items) else ""


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _submission_json(s: dict[str, Any], user: str) -> dict[str, Any]:
    """A submission as Kaggle shows it: PENDING when read the first time (`polled` counts reads), then scored."""
    status = s["status"] if s["polled"] > 1 else "PENDING"
    answer = {"ref": s["ref"], "fileName": s["file_name"], "description": s["description"], "date": s["date"],
              "totalBytes": s["size"], "status": status, "submittedBy": user, "teamName": user}
    if status == "COMPLETE":
        answer["publicScore"] = s["public_score"]
    if status == "ERROR":
        answer["errorDescription"] = s["error"]
    return answer
