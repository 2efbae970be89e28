"""Talk to Kaggle: download the data, push a kernel, wait for a version, pull its outputs, submit.

The only module that imports `kaggle` / `kagglesdk`, and only when a `KaggleClient` is made: `import kaggle`
authenticates at import time. Credentials come from the places the `kaggle` package reads
(`KAGGLE_API_TOKEN`, `~/.kaggle/access_token`, `kaggle.json` in `$KAGGLE_CONFIG_DIR` or `~/.kaggle`,
`KAGGLE_USERNAME` + `KAGGLE_KEY`); their values are never printed or written anywhere.

Retries (tenacity): calls that only read, and uploads/downloads of the same bytes, are retried on 429
(honouring `Retry-After`), 5xx and dropped connections; calls that create something (a kernel version, a
submission) only on 429, which Kaggle answers before acting. Every download goes to a `.part` file, is
resumed with a Range request after a cut, checked against its announced size and renamed into place last.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tqdm import tqdm

from iwc.data.competition import MD_JSON, SAMPLE_CSV, TEST_JSON, TRAIN_JSON
from iwc.errors import IwcError
from iwc.extras import MAX_OUTPUT_FILES
from iwc.host.logtext import is_progress, meaningful
from iwc.io import atomic_write, child_path, is_plain_name, replacing_folder, write_json
from iwc.layout import COMPETITION_SLUG, RESIZED_DATASET, RESIZED_MARKER

CREDENTIAL_HELP = ("put your Kaggle API token in $KAGGLE_API_TOKEN or ~/.kaggle/access_token (or a kaggle.json in "
                   "$KAGGLE_CONFIG_DIR or ~/.kaggle, or set $KAGGLE_USERNAME and $KAGGLE_KEY); create one at "
                   "https://www.kaggle.com/settings, section API")
CONFIG_KEYS = ("username", "key")  # what a legacy kaggle.json holds
KAGGLE_JSON_HELP = ('it must hold {"username": "<your Kaggle user name>", "key": "<your API key>"} (download it '
                    "at https://www.kaggle.com/settings, section API), or delete it and set $KAGGLE_API_TOKEN")
METADATA_FILES = (TRAIN_JSON, TEST_JSON, MD_JSON, SAMPLE_CSV)
FAILED = ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
ATTEMPTS = 6  # tries per call before giving up
MAX_BACKOFF_S = 30.0
TIMEOUT_S = 300  # per HTTP read
URL_RENEWALS = 5  # times an expired download link is asked for anew
TAIL_LINES = 30  # log lines quoted when a kernel fails
OUTPUT_LISTING_LIMIT = 500  # `kernels output` lists at most this many files of a version
COMPLETE_MARKER = ".iwc-complete.json"  # written last into an unpacked archive's folder
POLL_ENV = "IWC_KAGGLE_POLL_S"  # seconds between status polls, fixed (unset: 5 s, growing to 60 s)


class _Expired(Exception):
    """A signed download URL answered 403: ask for a fresh one."""


class SubmissionRejected(IwcError):
    """Kaggle scored a submission as ERROR: it does not count as submitted."""


class _Cut(Exception):
    """A download ended before its announced size: resume it."""


Located = tuple[str, "requests.Response | None"]  # a file URL, and maybe a response already streaming it


@dataclass(frozen=True)
class OutputFile:
    name: str  # relative to the kernel's /kaggle/working
    url: str


def kernel_label(kernel: str, version: int | None) -> str:
    return f"{kernel} version {version}" if version else kernel


def poll_from_env() -> float | None:
    """`$IWC_KAGGLE_POLL_S` as seconds (None when unset); a value that is not a number in (0, 600] is an error."""
    text = os.environ.get(POLL_ENV, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 600:
        raise IwcError(f"{POLL_ENV}={text!r}: give the seconds between Kaggle status polls, a number above 0 and "
                       "at most 600, or unset it (5 s, growing to 60 s)")
    return seconds


class KaggleClient:
    """An authenticated Kaggle API client; `owner` is the credential's user name.

    `progress` shows download bars; `poll_s` is the first wait between status polls, growing by half
    each time up to `max_poll_s`. Not given, it is 5 s, or every wait is `$IWC_KAGGLE_POLL_S` when that is set
    (the sandbox sets it: it answers at once, so long waits only cost time).
    """

    def __init__(self, progress: bool = True, poll_s: float | None = None, max_poll_s: float = 60.0) -> None:
        if poll_s is None:
            fixed = poll_from_env()
            poll_s, max_poll_s = (fixed, fixed) if fixed else (5.0, max_poll_s)
        self.progress, self.poll_s, self.max_poll_s = progress, poll_s, max_poll_s
        self.owner, self._auth, self._source = _authenticate()

    # ----------------------------------------------------------------------------------------- plumbing

    def _sdk(self) -> Any:
        from kagglesdk import KaggleClient as SdkClient

        return SdkClient(username=self.owner, password=self._auth.get("key"), api_token=self._auth.get("token"))

    def _call(self, what: str, call: Callable[[Any], Any], *, repeatable: bool = True) -> Any:
        """`call(sdk_client)`, retried as `repeatable` allows; any final failure becomes one `IwcError` line."""
        def once() -> Any:
            with self._sdk() as sdk:
                return call(sdk)
        try:
            return _retrying(what, repeatable)(once)
        except requests.HTTPError as e:
            raise self._http_error(what, e) from None
        except requests.RequestException as e:
            raise IwcError(f"could not reach Kaggle to {what} ({type(e).__name__}): check the connection "
                           "and run the command again") from None

    def _http_error(self, what: str, e: requests.HTTPError) -> IwcError:
        code = _status_code(e)
        if code == 401:
            return IwcError(f"Kaggle rejected the credential from {self._source} (401) when trying to {what}: "
                            f"check it or make a new one; {CREDENTIAL_HELP}")
        if code == 403:
            return IwcError(f"Kaggle refused to {what} (403: {_reason(e)}): the credential of {self.owner!r} "
                            f"lacks access (accept the rules at https://www.kaggle.com/c/{COMPETITION_SLUG}/rules; "
                            "a kernel must belong to you)")
        return IwcError(f"Kaggle answered {code} to {what}: {_reason(e)}")

    # ------------------------------------------------------------------------------------------ kernels

    def push(self, folder: Path) -> int:
        """Push the kernel in `folder` (script + kernel-metadata.json) as a new version; returns its number."""
        from kagglesdk.kernels.types.kernels_api_service import ApiSaveKernelRequest

        folder = Path(folder)
        meta = read_kernel_metadata(folder)
        kernel = meta["id"]
        if kernel.split("/")[0] != self.owner:
            raise IwcError(f"{folder / 'kernel-metadata.json'}: id {kernel!r} does not belong to {self.owner!r}, the "
                           f"Kaggle credential's user: regenerate it with `invoke kernels.build --owner {self.owner}`")
        request = ApiSaveKernelRequest()
        request.slug = kernel
        request.new_title = meta["title"]
        request.text = (folder / meta["code_file"]).read_text(encoding="utf-8")
        request.language = meta["language"]
        request.kernel_type = meta["kernel_type"]
        request.is_private = bool(meta.get("is_private", True))
        request.enable_gpu = bool(meta.get("enable_gpu", False))
        request.enable_tpu = False
        request.enable_internet = bool(meta.get("enable_internet", False))
        request.dataset_data_sources = meta.get("dataset_sources", [])
        request.competition_data_sources = meta.get("competition_sources", [])
        request.kernel_data_sources = meta.get("kernel_sources", [])
        request.docker_image_pinning_type = meta.get("docker_image_pinning_type")
        request.machine_shape = meta.get("machine_shape")
        response = self._call(f"push {kernel}", lambda sdk: sdk.kernels.kernels_api_client.save_kernel(request),
                              repeatable=False)
        invalid = [*response.invalid_dataset_sources, *response.invalid_competition_sources,
                   *response.invalid_kernel_sources]
        if response.error or invalid or not response.version_number:
            reason = response.error or (f"unknown sources {invalid}" if invalid else "no version number in the answer")
            raise IwcError(f"Kaggle refused the push of {kernel}: {reason}")
        return int(response.version_number)

    def status(self, kernel: str, version: int | None) -> tuple[str, str]:
        """(status name, failure message) of `kernel` at `version` (None: the latest)."""
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

        request = ApiGetKernelSessionStatusRequest()
        request.user_name, request.kernel_slug = _split_kernel(kernel)
        if version:
            request.version_label = f"v{version}"
        response = self._call(f"get the status of {kernel_label(kernel, version)}",
                              lambda sdk: sdk.kernels.kernels_api_client.get_kernel_session_status(request))
        return response.status.name, response.failure_message

    def wait(self, kernel: str, version: int, deadline_s: float, resume: str = "") -> None:
        """Poll `kernel` at `version` until it completes, printing each status change.

        Raises `IwcError` (with the log's tail) when it ends in ERROR or is cancelled, when `deadline_s` passes,
        or on Ctrl-C; none of these cancels the kernel. `resume` says how to wait again ("run `...`").
        """
        label = kernel_label(kernel, version)
        resume = resume or f"run `iwc kaggle status {kernel} --version {version} --wait`"
        start, delay, last = time.monotonic(), self.poll_s, None
        try:
            while True:
                status, failure = self.status(kernel, version)
                elapsed = time.monotonic() - start
                if status != last:
                    print(f"[{kernel} v{version}] {status} ({_minutes(elapsed)})", flush=True)
                    last = status
                if status == "COMPLETE":
                    return
                if status in FAILED:
                    tail = self.log_tail(kernel, version)
                    failure = "" if is_progress(failure or "") else failure  # a bar's fragment says nothing
                    raise IwcError(f"{label} ended {status}" + (f": {failure}" if failure else "")
                                   + (". Last lines of its log:\n" + "\n".join(tail) if tail else ""))
                if elapsed + delay > deadline_s:
                    raise IwcError(f"{label} is still {status} after {_minutes(elapsed)} (deadline "
                                   f"{_minutes(deadline_s)}); it keeps running on Kaggle: to wait again, {resume}")
                time.sleep(delay)
                delay = min(delay * 1.5, self.max_poll_s)
        except KeyboardInterrupt:
            raise IwcError(f"stopped waiting for {label}; it keeps running on Kaggle (not cancelled): "
                           f"to wait again, {resume}") from None

    def log_tail(self, kernel: str, version: int | None, lines: int = TAIL_LINES) -> list[str]:
        """The last `lines` meaningful lines of the version's log, progress bars left out ([] when it has none)."""
        _, _, log = self._list_outputs_page(kernel, version, None)
        return meaningful(log_lines(log))[-lines:]

    def outputs(self, kernel: str, version: int | None) -> tuple[list[OutputFile], str]:
        """Every output file of the version (all pages) and its log text."""
        files, log, token = [], "", None
        while True:
            page, token, page_log = self._list_outputs_page(kernel, version, token)
            files += page
            log = log or page_log
            if not token:
                return files, log

    def _list_outputs_page(self, kernel: str, version: int | None,
                           token: str | None) -> tuple[list[OutputFile], str | None, str]:
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        request = ApiListKernelSessionOutputRequest()
        request.user_name, request.kernel_slug = _split_kernel(kernel)
        if version:
            request.version_label = f"v{version}"
        request.page_size = 100
        if token:
            request.page_token = token
        response = self._call(f"list the outputs of {kernel_label(kernel, version)}",
                              lambda sdk: sdk.kernels.kernels_api_client.list_kernel_session_output(request))
        files = [OutputFile(f.file_name, f.url) for f in response.files or []]
        return files, response.next_page_token or None, response.log or ""

    def pull(self, kernel: str, version: int | None, dest: Path) -> tuple[list[str], str]:
        """Download every output file of the version into `dest` (replaced); returns their names and the log.

        Files land in a new sibling folder first (`iwc.io.replacing_folder`), which replaces `dest` only when all
        are complete: an interrupted pull leaves `dest` as it was. A URL that expired (403) is replaced by a new
        listing's.
        """
        dest = Path(dest)
        label = kernel_label(kernel, version)
        files, log = self.outputs(kernel, version)
        if not files:
            raise IwcError(f"{label} has no output files: check that it finished (`iwc kaggle status {kernel}`)")
        if len(files) >= OUTPUT_LISTING_LIMIT:
            raise IwcError(f"{label} lists {len(files)} output files, as many as Kaggle lists of a version: the "
                           f"rest cannot be pulled; an iwc kernel writes at most {MAX_OUTPUT_FILES} (iwc.extras): "
                           "pack what it writes in numbers into one archive, then push it again")
        urls = {f.name: f.url for f in files}

        def locate(name: str) -> Callable[[], Located]:
            def fresh() -> Located:
                url = urls.pop(name, None)  # the listed URL first, then a new listing's
                if url is None:
                    url = {f.name: f.url for f in self.outputs(kernel, version)[0]}.get(name)
                if url is None:
                    raise IwcError(f"{label}: output {name!r} disappeared from the listing; pull again")
                return url, None
            return fresh

        with replacing_folder(dest) as partial:
            for f in files:
                self._fetch(locate(f.name), partial / _safe_relative(f.name, label), f"{label}: {f.name}")
        return [f.name for f in files], log

    # ---------------------------------------------------------------------------------------- downloads

    def download_competition(self, data_root: Path, images: bool = False,
                             names: tuple[str, ...] = METADATA_FILES) -> Path:
        """Download the competition's files `names` (default: the metadata; with `images`, everything) into
        `<data_root>/<competition slug>/`; files present with the listed size are kept. Returns the folder."""
        from kagglesdk.competitions.types.competition_api_service import (
            ApiDownloadDataFileRequest,
            ApiDownloadDataFilesRequest,
        )

        folder = Path(data_root) / COMPETITION_SLUG
        sizes = self.competition_files()
        for name in names:
            target = folder / name
            if name not in sizes:
                raise IwcError(f"competition {COMPETITION_SLUG!r} lists no file {name!r}; is it the right competition?")
            if target.is_file() and target.stat().st_size == sizes[name]:
                print(f"{target}: present ({sizes[name]:,} bytes), kept")
                continue
            request = ApiDownloadDataFileRequest()
            request.competition_name, request.file_name = COMPETITION_SLUG, name
            part = _downloads(data_root) / name
            self._fetch(self._redirect(f"download {name}", lambda sdk, r=request:
                                       sdk.competitions.competition_api_client.download_data_file(r)), part, name)
            _unwrap_into(part, target, name)
            if sizes[name] and target.stat().st_size != sizes[name]:
                target.unlink()
                raise IwcError(f"{name}: downloaded {target.stat().st_size if target.exists() else 0} bytes, Kaggle "
                               f"lists {sizes[name]}: run the download again")
        if images:
            if all((folder / d).is_dir() for d in ("train", "test")) and (folder / COMPLETE_MARKER).is_file():
                print(f"{folder}: images present, kept")
            else:
                request = ApiDownloadDataFilesRequest()
                request.competition_name = COMPETITION_SLUG
                archive = _downloads(data_root) / f"{COMPETITION_SLUG}.zip"
                self._fetch(self._redirect("download the competition's images", lambda sdk:
                                           sdk.competitions.competition_api_client.download_data_files(request)),
                            archive, f"{COMPETITION_SLUG}.zip")
                _unpack(archive, folder, keep=set(METADATA_FILES))
        return folder

    def competition_files(self) -> dict[str, int]:
        """`{file name: size in bytes}` of every competition file (all pages)."""
        from kagglesdk.competitions.types.competition_api_service import ApiListDataFilesRequest

        sizes, token = {}, None
        while True:
            request = ApiListDataFilesRequest()
            request.competition_name = COMPETITION_SLUG
            request.page_size = 200
            if token:
                request.page_token = token
            response = self._call(f"list the files of competition {COMPETITION_SLUG}",
                                  lambda sdk, r=request: sdk.competitions.competition_api_client.list_data_files(r))
            sizes.update({f.name: int(f.total_bytes or 0) for f in response.files or []})
            token = response.next_page_token
            if not token:
                return sizes

    def download_dataset(self, data_root: Path, dataset: str = RESIZED_DATASET) -> Path:
        """Download and unpack `dataset` into `<data_root>/<slug>/`, unless already there, complete."""
        from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

        owner, slug = dataset.split("/")
        folder = Path(data_root) / slug
        if _unpacked_intact(folder):
            print(f"{folder}: present and complete, kept")
            return folder
        request = ApiDownloadDatasetRequest()
        request.owner_slug, request.dataset_slug = owner, slug
        archive = _downloads(data_root) / f"{slug}.zip"
        self._fetch(self._redirect(f"download dataset {dataset}",
                                   lambda sdk: sdk.datasets.dataset_api_client.download_dataset(request)),
                    archive, f"{slug}.zip")
        _unpack(archive, folder)
        if not (folder / RESIZED_MARKER).is_dir() and dataset == RESIZED_DATASET:
            raise IwcError(f"{dataset} unpacked into {folder} without a {RESIZED_MARKER}/ folder: not the dataset "
                           "the reader expects")
        return folder

    def _redirect(self, what: str, call: Callable[[Any], requests.Response]) -> Callable[[], Located]:
        """A function giving a fresh file URL, and the open response: Kaggle's download call redirects to it."""
        def located(sdk: Any) -> Located:
            response = call(sdk)
            return response.url, response

        return lambda: self._call(what, located)

    def _fetch(self, locate: Callable[[], Located], out: Path, label: str) -> None:
        """Download the file `locate()` points at to `out`, asking for a new URL when one expires."""
        for _ in range(URL_RENEWALS):
            try:
                self._download(*locate(), out, label)
                return
            except _Expired:
                print(f"{label}: the download link expired; asking for a new one", flush=True)
        raise IwcError(f"{label}: the download link expired {URL_RENEWALS} times in a row; run the command again")

    def _download(self, url: str, opened: requests.Response | None, out: Path, label: str) -> None:
        """GET `url` into `out` via `out.part`, resuming after a cut; size-checked; retried where transient.

        `opened`: a response already streaming the whole file, used when there is nothing to resume."""
        part = out.with_name(out.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        pending = [opened] if opened is not None else []

        def once() -> None:
            have = part.stat().st_size if part.exists() else 0
            first = pending.pop() if pending else None
            if first is not None and (have or first.status_code != 200):
                first.close()
                first = None
            headers = {"Range": f"bytes={have}-"} if have else {}
            with first or requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as response:
                if response.status_code == 403:
                    raise _Expired(label)
                if response.status_code == 416:  # the part is longer than the file: start afresh
                    part.unlink()
                    raise _Cut(f"{label}: the partial file did not match")
                response.raise_for_status()
                total = _total_size(response)
                mode = "ab" if response.status_code == 206 else "wb"
                done = have if mode == "ab" else 0
                with open(part, mode) as f, tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=label,
                                                 disable=None if self.progress else True, leave=False,
                                                 file=sys.stdout) as bar:
                    for chunk in response.iter_content(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
            size = part.stat().st_size
            if total is not None and size != total:
                if size > total:
                    part.unlink()
                raise _Cut(f"{label}: {size:,} of {total:,} bytes")

        try:
            _retrying(f"download {label}", True)(once)
        except requests.HTTPError as e:
            raise self._http_error(f"download {label}", e) from None
        except (requests.RequestException, _Cut) as e:
            raise IwcError(f"{label}: the download kept failing ({e}); run the command again to resume it") from None
        os.replace(part, out)

    # --------------------------------------------------------------------------------------- submission

    def check_submission_access(self) -> None:
        """Fail now, in one `IwcError` line, when this credential cannot submit: Kaggle answers the listing of
        one's submissions with 403 until the competition's rules are accepted."""
        from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

        request = ApiListSubmissionsRequest()
        request.competition_name = COMPETITION_SLUG
        self._call(f"list your submissions to {COMPETITION_SLUG}",
                   lambda sdk: sdk.competitions.competition_api_client.list_submissions(request))

    def create_submission(self, csv: Path, message: str) -> int:
        """Upload `csv` as a submission with `message`; returns its ref once Kaggle has accepted it (not scored)."""
        from kagglesdk.competitions.types.competition_api_service import (
            ApiCreateSubmissionRequest,
            ApiStartSubmissionUploadRequest,
        )

        csv = Path(csv)
        start = ApiStartSubmissionUploadRequest()
        start.competition_name, start.file_name = COMPETITION_SLUG, csv.name
        start.content_length, start.last_modified_epoch_seconds = csv.stat().st_size, int(csv.stat().st_mtime)
        upload = self._call("start the submission upload",
                            lambda sdk: sdk.competitions.competition_api_client.start_submission_upload(start))
        self._put(upload.create_url, csv)
        create = ApiCreateSubmissionRequest()
        create.competition_name, create.blob_file_tokens = COMPETITION_SLUG, upload.token
        create.submission_description = message
        created = self._call("create the submission",
                             lambda sdk: sdk.competitions.competition_api_client.create_submission(create),
                             repeatable=False)
        if not created.ref:
            raise IwcError(f"Kaggle refused the submission of {csv}: {created.message or 'no reason given'}")
        print(f"submitted {csv} as submission {created.ref}: {created.message or 'waiting for the score'}", flush=True)
        return int(created.ref)

    def wait_score(self, ref: int, csv: Path, deadline_s: float = 1800) -> str:
        """Wait until Kaggle scores submission `ref` (of `csv`); returns the public score. Rejected: `IwcError`."""
        from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionRequest

        get = ApiGetSubmissionRequest()
        get.ref = ref
        begin, delay = time.monotonic(), self.poll_s
        while True:
            submission = self._call(f"get submission {ref}",
                                    lambda sdk: sdk.competitions.competition_api_client.get_submission(get))
            status = submission.status.name
            if status == "COMPLETE":
                return submission.public_score or ""
            if status == "ERROR":
                raise SubmissionRejected(f"Kaggle rejected submission {ref} of {csv}: "
                                         f"{submission.error_description or 'no reason given'}")
            if time.monotonic() - begin + delay > deadline_s:
                raise IwcError(f"submission {ref} is still {status} after {_minutes(deadline_s)}: see "
                               f"https://www.kaggle.com/c/{COMPETITION_SLUG}/submissions for its score")
            time.sleep(delay)
            delay = min(delay * 1.5, self.max_poll_s)

    def _put(self, url: str, path: Path) -> None:
        def once() -> None:
            with open(path, "rb") as f:
                requests.put(url, data=f, timeout=TIMEOUT_S).raise_for_status()
        try:
            _retrying(f"upload {path.name}", True)(once)
        except requests.HTTPError as e:
            raise self._http_error(f"upload {path.name}", e) from None
        except requests.RequestException as e:
            raise IwcError(f"could not upload {path} ({type(e).__name__}); run the command again") from None


# --------------------------------------------------------------------------------------------- helpers

def read_kernel_metadata(folder: Path) -> dict[str, Any]:
    """The `kernel-metadata.json` of a kernel folder, checked for the fields a push needs."""
    path = Path(folder) / "kernel-metadata.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IwcError(f"{path}: cannot read the kernel metadata ({type(e).__name__}): build the kernels first "
                       "(`invoke kernels.build --owner <you>`)") from None
    missing = [k for k in ("id", "title", "code_file", "language", "kernel_type") if not meta.get(k)]
    if missing or not isinstance(meta.get("id"), str) or meta["id"].count("/") != 1:
        raise IwcError(f"{path}: missing or malformed {missing or ['id']}: regenerate it with `invoke kernels.build`")
    if not child_path(folder, meta["code_file"], f"{path}: code_file").is_file():
        raise IwcError(f"{path}: code_file {meta['code_file']!r} is not in {folder}: regenerate the kernel")
    return meta


def log_lines(log: str) -> list[str]:
    """A kernel log as lines: Kaggle's JSON list of `{"stream_name", "time", "data"}` records, or plain text."""
    try:
        records = json.loads(log)
        text = "".join(r.get("data", "") for r in records if isinstance(r, dict))
    except (ValueError, TypeError, AttributeError):
        text = log
    # A progress bar redraws with "\r": keep what the line finally showed.
    return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")] if text else []


def _authenticate() -> tuple[str, dict[str, str], str]:
    """(user name, {"token" | "key": secret}, where the credential came from), or one `IwcError` line."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        try:
            from kagglesdk.kaggle_env import get_access_token_from_env

            _, token_source = get_access_token_from_env()
            config = config_file()
            check_config_file(config, has_token=bool(token_source))  # before `import kaggle` reads it
            from kaggle.api.kaggle_api_extended import KaggleApi  # `import kaggle` authenticates: quietly
        except ImportError as e:
            raise IwcError(f"the `kaggle` package is not installed ({e}): run `pip install -e .`") from None
        api = KaggleApi()
        # The class reads these at import; a process may have set them since (as the sandbox tests do).
        api.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []
        api.config_dir, api.config = str(config.parent), str(config)
        try:
            api.authenticate()
            ok = bool(api.config_values.get("username"))
        except SystemExit:
            ok = False
        except requests.RequestException as e:
            raise IwcError(f"could not reach Kaggle to check the credential ({type(e).__name__}): check the "
                           "connection and run the command again") from None
    if token_source:
        source = "$KAGGLE_API_TOKEN" if token_source == "KAGGLE_API_TOKEN" else "~/.kaggle/access_token"
    elif os.environ.get("KAGGLE_KEY"):
        source = "$KAGGLE_USERNAME/$KAGGLE_KEY"
    else:
        source = str(config)
    if not ok:
        if token_source or os.environ.get("KAGGLE_KEY") or config.is_file():
            raise IwcError(f"Kaggle rejected the credential from {source}: check it or make a new one; "
                           f"{CREDENTIAL_HELP}")
        raise IwcError(f"no Kaggle credential found: {CREDENTIAL_HELP}")
    values = api.config_values
    secret = {"token": values["token"]} if values.get("token") else {"key": values.get("key", "")}
    return values["username"], secret, source


def config_file() -> Path:
    """The `kaggle.json` the kaggle package reads now: in $KAGGLE_CONFIG_DIR, else ~/.kaggle (on Linux, when that
    folder does not exist, $XDG_CONFIG_HOME/kaggle or ~/.config/kaggle)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    folder = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not folder.exists():
        folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return folder / "kaggle.json"


def check_config_file(path: Path, has_token: bool) -> None:
    """Refuse, in one `IwcError` line naming `path`, a `kaggle.json` that the kaggle package would crash on or
    silently ignore: not readable, not JSON, not an object, a username/key that is no text, or (with no token and
    no $KAGGLE_USERNAME/$KAGGLE_KEY to make up for it) a username or key missing. An absent file is fine."""
    if not path.exists():
        return
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise IwcError(f"{path}: cannot read it as JSON ({type(e).__name__}): {KAGGLE_JSON_HELP}") from None
    if not isinstance(values, dict):
        kind = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(type(values), "a number")
        raise IwcError(f"{path} holds {kind}, not a JSON object: {KAGGLE_JSON_HELP}")  # never its content
    bad = [k for k in CONFIG_KEYS if k in values and not (isinstance(values[k], str) and values[k].strip())]
    if bad:
        raise IwcError(f"{path}: " + " and ".join(f'"{k}"' for k in bad)
                       + f" must be non-empty text: {KAGGLE_JSON_HELP}")
    missing = [k for k in CONFIG_KEYS if k not in values and not os.environ.get(f"KAGGLE_{k.upper()}")]
    if missing and not has_token:
        raise IwcError(f"{path} has no " + " and no ".join(f'"{k}"' for k in missing) + f": {KAGGLE_JSON_HELP}")


def _retrying(what: str, repeatable: bool) -> Retrying:
    """tenacity policy: repeatable calls retry transient failures, the others only a 429 refusal."""
    def before_sleep(state: RetryCallState) -> None:
        print(f"  {what}: {_describe(state.outcome.exception())}; retrying in {state.next_action.sleep:.0f} s "
              f"(try {state.attempt_number + 1} of {ATTEMPTS})", flush=True)
    return Retrying(retry=retry_if_exception(_transient if repeatable else _refused), wait=_wait,
                    stop=stop_after_attempt(ATTEMPTS), before_sleep=before_sleep, reraise=True)


def _transient(e: BaseException) -> bool:
    if isinstance(e, _Cut | requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError):
        return True
    return isinstance(e, requests.HTTPError) and _status_code(e) in (429, 500, 502, 503, 504)


def _refused(e: BaseException) -> bool:
    return isinstance(e, requests.HTTPError) and _status_code(e) == 429


def _wait(state: RetryCallState) -> float:
    e = state.outcome.exception()
    response = getattr(e, "response", None)
    after = response.headers.get("Retry-After") if response is not None else None
    if after:
        with contextlib.suppress(ValueError):
            return min(float(after), 600.0)
    return min(MAX_BACKOFF_S, 2.0 ** (state.attempt_number - 1))


def _describe(e: BaseException | None) -> str:
    if isinstance(e, requests.HTTPError):
        return f"{_status_code(e)} {_reason(e)}"
    return f"{type(e).__name__}: {e}" if isinstance(e, _Cut) else type(e).__name__


def _status_code(e: requests.HTTPError) -> int | None:
    return e.response.status_code if e.response is not None else None


def _reason(e: requests.HTTPError) -> str:
    """The server's message, without any URL query string (signed URLs carry signatures)."""
    text = str(e.args[0]) if e.args else ""
    return " ".join(w.split("?")[0] if "://" in w else w for w in text.split())[:300] or "no message"


def _total_size(response: requests.Response) -> int | None:
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _split_kernel(kernel: str) -> tuple[str, str]:
    owner, _, slug = kernel.partition("/")
    if not owner or not slug or "/" in slug:
        raise IwcError(f"kernel {kernel!r} is not `owner/slug`")
    return owner, slug


def _safe_relative(name: str, label: str) -> Path:
    """A server-given file name (`a/b.txt`: subfolders allowed) as a relative path that stays below its folder."""
    parts = PurePosixPath(name).parts
    if not parts or parts[0] == "/" or not all(map(is_plain_name, parts)):
        raise IwcError(f"{label}: output file name {name!r} points outside the output folder; not downloaded")
    return Path(*parts)


def _downloads(data_root: Path) -> Path:
    return Path(data_root) / ".downloads"


def _unwrap_into(downloaded: Path, target: Path, name: str) -> None:
    """Move a downloaded file to `target`, first unzipping it when Kaggle wrapped it in a zip."""
    if name.endswith(".zip") or not zipfile.is_zipfile(downloaded):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(downloaded, target)
        return
    with zipfile.ZipFile(downloaded) as z:
        members = [m for m in z.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise IwcError(f"{name}: Kaggle sent a zip of {len(members)} files, expected 1; report it")
        with z.open(members[0]) as src, atomic_write(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    downloaded.unlink()


def _unpack(archive: Path, folder: Path, keep: set[str] = frozenset()) -> None:
    """Unzip `archive` into `folder` atomically (`iwc.io.replacing_folder`, marker written last); the archive is
    deleted after. What `folder` held beside the archive's files (e.g. the metadata) is copied in, and top-level
    names in `keep` that `folder` already holds are kept as they are: copied, not moved, so that a failure on the
    way leaves `folder` whole (a few metadata files, small next to the images)."""
    with replacing_folder(folder) as new:
        with zipfile.ZipFile(archive) as z:
            names = [m for m in z.namelist() if not m.endswith("/")]
            for m in names:
                _safe_relative(m, archive.name)
            for m in tqdm(names, desc=f"unzip {archive.name}", unit="file", leave=False, file=sys.stdout,
                          disable=None):
                z.extract(m, new)
        write_json(new / COMPLETE_MARKER, {"archive": archive.name, "files": len(names)})
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            target = new / entry.name
            if entry.name in keep and target.is_file():
                target.unlink()
            if not target.exists():
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
    archive.unlink()


def _unpacked_intact(folder: Path) -> bool:
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        expected = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        return False
    return sum(len(files) for _, _, files in os.walk(folder)) - 1 == expected


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
