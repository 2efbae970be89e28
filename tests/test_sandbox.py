"""The Kaggle sandbox, driven by the REAL `kaggle` client (CLI or KaggleApi) in subprocesses over loopback."""

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from iwc.errors import IwcError
from iwc.host.sandbox.cli import main
from iwc.host.sandbox.faults import Faults, parse_fault
from iwc.host.sandbox.server import Sandbox

COMPETITION = "iwildcam-2020-fgvc7"
DATASET = "qitvision/iwildcam2020-256"

WRITER = """\
import os, sys
from pathlib import Path
root = Path(os.environ["IWC_INPUT_ROOT"])
print("mounted:", sorted(p.relative_to(root).as_posix() for p in root.glob("*/*/*")))
print("credential vars:", sorted(k for k in os.environ if k.startswith("KAGGLE_") and k != "KAGGLE_KERNEL_RUN_TYPE"))
out = Path(os.environ["IWC_WORKING_DIR"])
(out / "sub").mkdir()
(out / "sub" / "b.txt").write_text("inner")
(out / "a.csv").write_text("x\\n1\\n")
print("wrote outputs", file=sys.stderr)
"""

READER = """\
import os
from pathlib import Path
root = Path(os.environ["IWC_INPUT_ROOT"]) / "notebooks" / "tester" / "sandbox-writer"
text = (root / "a.csv").read_text()
(Path(os.environ["IWC_WORKING_DIR"]) / "copied.csv").write_text(text)
"""

FAILING = """\
print("about to fail")
raise SystemExit(3)
"""


@pytest.fixture(scope="module")
def sb(small_demo, tmp_path_factory):
    with Sandbox(small_demo.root, tmp_path_factory.mktemp("sandbox"), owner="tester") as sandbox:
        yield sandbox


@pytest.fixture
def home(tmp_path) -> Path:
    """An empty HOME: the client finds no credential file of the real user."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def kaggle(sb: Sandbox, home: Path, *args: str, auth: str = "token", **overrides: str):
    """Run the real `kaggle` CLI against the sandbox."""
    env = {**sb.process_env(auth), "HOME": str(home), **overrides}
    return subprocess.run([sys.executable, "-m", "kaggle", *args], env=env, cwd=home, capture_output=True,
                          text=True, timeout=120)


def client(sb: Sandbox, home: Path, code: str, **overrides: str) -> dict:
    """Run `code` with `api` = the real, authenticated KaggleApi; it prints one JSON object, returned here."""
    script = "import json, sys\nfrom kaggle import api\nfrom requests import HTTPError\n" + textwrap.dedent(code)
    env = {**sb.process_env(), "HOME": str(home), **overrides}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=home, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def push(sb: Sandbox, home: Path, slug: str, code: str, **metadata) -> subprocess.CompletedProcess:
    folder = home / slug
    folder.mkdir()
    (folder / "run.py").write_text(code)
    meta = {"id": f"tester/{slug}", "title": slug.replace("-", " "), "code_file": "run.py", "language": "python",
            "kernel_type": "script", "is_private": True, "enable_gpu": False, "enable_internet": False,
            "competition_sources": [COMPETITION], "dataset_sources": [DATASET], "kernel_sources": [], **metadata}
    (folder / "kernel-metadata.json").write_text(json.dumps(meta))
    return kaggle(sb, home, "kernels", "push", "-p", str(folder))


def wait(sb: Sandbox, slug: str, number: int, timeout: float = 60) -> str:
    """The final status of version `number` of tester/`slug`, polled in-process."""
    deadline = time.monotonic() + timeout
    while (version := sb.kernels.find("tester", slug, f"v{number}")) is None or version.status not in (
            "COMPLETE", "ERROR"):
        assert time.monotonic() < deadline, f"{slug} v{number} still {version and version.status}"
        time.sleep(0.1)
    return version.status


def test_cli_lists_and_downloads_the_competition(sb, home, small_demo):
    comp = small_demo.root / COMPETITION
    listed = kaggle(sb, home, "competitions", "files", COMPETITION, "--page-size", "3", "--csv")
    assert listed.returncode == 0, listed.stderr
    assert "Next Page Token = 3" in listed.stdout
    assert "iwildcam2020_megadetector_results.json" in listed.stdout

    done = kaggle(sb, home, "competitions", "download", COMPETITION, "-p", "all")
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(home / "all" / f"{COMPETITION}.zip") as archive:
        names = set(archive.namelist())
        assert names == {p.relative_to(comp).as_posix() for p in comp.rglob("*") if p.is_file()}
        assert archive.read("sample_submission.csv") == (comp / "sample_submission.csv").read_bytes()

    done = kaggle(sb, home, "competitions", "download", COMPETITION, "-f", "iwildcam2020_test_information.json",
                  "-p", "one")
    assert done.returncode == 0, done.stderr
    assert (home / "one" / "iwildcam2020_test_information.json").read_bytes() == (
        comp / "iwildcam2020_test_information.json").read_bytes()

    missing = kaggle(sb, home, "competitions", "files", "another-competition")
    assert missing.returncode != 0
    assert "not found" in missing.stderr


def test_dataset_download_unzips_the_resized_layout(sb, home, small_demo):
    done = kaggle(sb, home, "datasets", "download", DATASET, "-p", "ds", "--unzip")
    assert done.returncode == 0, done.stderr
    source = small_demo.root / "iwildcam2020-256" / "256_images"
    got = home / "ds" / "256_images"
    assert sorted(p.relative_to(got) for p in got.rglob("*.jpg")) == sorted(
        p.relative_to(source) for p in source.rglob("*.jpg"))
    some = next(source.rglob("*.jpg"))
    assert (got / some.relative_to(source)).read_bytes() == some.read_bytes()


def test_pushed_kernel_runs_for_real_and_its_outputs_download_page_by_page(sb, home):
    pushed = push(sb, home, "sandbox-writer", WRITER)
    assert pushed.returncode == 0, pushed.stderr
    assert "Kernel version 1 successfully pushed" in pushed.stdout
    assert wait(sb, "sandbox-writer", 1) == "COMPLETE"
    status = kaggle(sb, home, "kernels", "status", "tester/sandbox-writer/1")
    assert "COMPLETE" in status.stdout, status.stderr

    out = kaggle(sb, home, "kernels", "output", "tester/sandbox-writer", "-p", "out", "--page-size", "1")
    assert out.returncode == 0, out.stderr
    assert (home / "out" / "a.csv").read_text() == "x\n1\n"
    assert (home / "out" / "sub" / "b.txt").read_text() == "inner"
    log = json.loads((home / "out" / "sandbox-writer.log").read_text())
    text = "".join(entry["data"] for entry in log)
    assert {entry["stream_name"] for entry in log} == {"stdout", "stderr"}
    assert f"competitions/{COMPETITION}" in text and "datasets/qitvision/iwildcam2020-256" in text
    assert "credential vars: []" in text  # the kernel never sees the client's credential
    assert sb.token not in text

    pulled = kaggle(sb, home, "kernels", "pull", "tester/sandbox-writer", "-p", "src")
    assert pulled.returncode == 0, pulled.stderr
    assert (home / "src" / "sandbox-writer.py").read_text() == WRITER


def test_kernel_sources_mount_the_latest_complete_output_and_versions_count_up(sb, home):
    if sb.kernels.find("tester", "sandbox-writer") is None:
        push(sb, home, "sandbox-writer", WRITER)
    first = sb.kernels.find("tester", "sandbox-writer").number
    wait(sb, "sandbox-writer", first)
    pushed = push(sb, home, "sandbox-reader", READER, kernel_sources=["tester/sandbox-writer"])
    assert "Kernel version 1 successfully pushed" in pushed.stdout, pushed.stdout + pushed.stderr
    assert wait(sb, "sandbox-reader", 1) == "COMPLETE"
    assert (sb.kernels.find("tester", "sandbox-reader").working / "copied.csv").read_text() == "x\n1\n"

    again = kaggle(sb, home, "kernels", "push", "-p", str(home / "sandbox-reader"))
    assert "Kernel version 2 successfully pushed" in again.stdout, again.stdout + again.stderr
    wait(sb, "sandbox-reader", 2)


def test_failing_kernel_ends_in_error_with_its_log(sb, home):
    push(sb, home, "sandbox-failing", FAILING)
    assert wait(sb, "sandbox-failing", 1) == "ERROR"
    got = client(sb, home, """
        status = api.kernels_status("tester/sandbox-failing/1")
        files, _ = api.kernels_output("tester/sandbox-failing", "out")
        print(json.dumps({"status": status.status.name, "failure": status.failure_message,
                          "log": open(files[-1]).read()}))
    """)
    assert got["status"] == "ERROR"
    assert "exited with code 3" in got["failure"]
    assert "about to fail" in got["log"]


def test_a_kernel_past_its_session_limit_is_stopped_and_ends_in_error(sb, home):
    folder = home / "sandbox-sleeper"
    push(sb, home, "sandbox-sleeper", "import subprocess, sys, time\n"
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"  # a child holding the pipes
         "print('sleeping', flush=True)\ntime.sleep(60)\n")
    pushed = kaggle(sb, home, "kernels", "push", "-p", str(folder), "--timeout", "2")
    assert "Kernel version 2 successfully pushed" in pushed.stdout, pushed.stdout + pushed.stderr
    assert wait(sb, "sandbox-sleeper", 2, timeout=30) == "ERROR"
    version = sb.kernels.find("tester", "sandbox-sleeper", "v2")
    assert "session limit of 2 s" in version.failure
    assert "sleeping" in version.log_text()
    assert sb.kernels.find("tester", "sandbox-sleeper", "v1").status == "RUNNING"  # no limit asked: 12 h


def test_push_to_another_owner_or_a_bad_kernel_type_is_an_error_in_a_200(sb, home):
    pushed = push(sb, home, "someone-elses", WRITER, id="someone/someone-elses")
    assert pushed.returncode == 0  # the CLI pitfall: exit 0 with an error
    assert "Kernel push error:" in pushed.stdout and "not yours" in pushed.stdout
    assert sb.kernels.find("someone", "someone-elses") is None


def test_unknown_sources_are_reported_and_bare_version_labels_are_404(sb, home):
    got = client(sb, home, """
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest
        import os
        os.makedirs("k", exist_ok=True)
        open("k/run.py", "w").write("print(1)")
        json.dump({"id": "tester/sandbox-sources", "title": "sandbox sources", "code_file": "run.py",
                   "language": "python", "kernel_type": "script", "dataset_sources": ["nobody/nothing"],
                   "competition_sources": ["other-comp"]}, open("k/kernel-metadata.json", "w"))
        pushed = api.kernels_push("k")
        request = ApiGetKernelSessionStatusRequest()
        request.user_name, request.kernel_slug, request.version_label = "tester", "sandbox-sources", "1"
        try:
            with api.build_kaggle_client() as kaggle:
                kaggle.kernels.kernels_api_client.get_kernel_session_status(request)
            code = 200
        except HTTPError as e:
            code = e.response.status_code
        print(json.dumps({"datasets": pushed.invalidDatasetSources, "competitions": pushed.invalidCompetitionSources,
                          "bare_label": code}))
    """)
    assert got == {"datasets": ["nobody/nothing"], "competitions": ["other-comp"], "bare_label": 404}


def test_submission_is_scored_against_the_test_labels(sb, home, small_demo):
    truth = (small_demo.root / "ground_truth" / "test_labels.csv").read_text().splitlines()
    sample_ids = {line.split(",")[0] for line in
                  (small_demo.root / COMPETITION / "sample_submission.csv").read_text().splitlines()[1:]}
    rows = [line for line in truth[1:] if line.split(",")[0] in sample_ids]
    (home / "perfect.csv").write_text("\n".join(["Id,Category", *rows]) + "\n")
    (home / "empty.csv").write_text((small_demo.root / COMPETITION / "sample_submission.csv").read_text())
    expected_empty = sum(row.endswith(",0") for row in rows) / len(rows)
    got = client(sb, home, """
        scores = {}
        for name in ("perfect.csv", "empty.csv"):
            ref = api.competition_submit(name, "iwc test " + name, "iwildcam-2020-fgvc7").ref
            first = api.get_submission(ref).status.name
            second = api.get_submission(ref)
            scores[name] = [first, second.status.name, second.public_score, second.description]
        print(json.dumps(scores))
    """)
    assert got["perfect.csv"] == ["PENDING", "COMPLETE", "1.00000", "iwc test perfect.csv"]
    assert got["empty.csv"][:2] == ["PENDING", "COMPLETE"]
    assert float(got["empty.csv"][2]) == pytest.approx(expected_empty, abs=1e-5)
    assert [s["public_score"] for s in sb.submissions[-2:]] == ["1.00000", got["empty.csv"][2]]


def test_invalid_submission_ends_in_error_with_a_description(sb, home):
    (home / "bad.csv").write_text("Id,Category\nnot-an-id,1\n")
    listed = kaggle(sb, home, "competitions", "submit", COMPETITION, "-f", "bad.csv", "-m", "bad")
    assert listed.returncode == 0, listed.stderr
    status = client(sb, home, """
        api.competition_submissions("iwildcam-2020-fgvc7")  # PENDING when first read
        subs = api.competition_submissions("iwildcam-2020-fgvc7")
        print(json.dumps([subs[0].status.name, subs[0].error_description]))
    """)
    assert status[0] == "ERROR"
    assert "sample Ids are missing" in status[1]


def test_a_rejected_credential_is_answered_401(sb, home):
    ok = kaggle(sb, home, "competitions", "files", COMPETITION, auth="legacy")
    assert ok.returncode == 0, ok.stderr
    calls = len(sb.calls)
    wrong_key = kaggle(sb, home, "competitions", "files", COMPETITION, auth="legacy", KAGGLE_KEY="not-the-key")
    assert wrong_key.returncode != 0
    assert "Authentication required" in wrong_key.stdout + wrong_key.stderr
    assert sb.calls[calls:] == ["ListDataFiles"]  # sent, and refused
    wrong_token = kaggle(sb, home, "competitions", "files", COMPETITION, KAGGLE_API_TOKEN="not-the-token")
    assert wrong_token.returncode != 0
    status = client(sb, home, """
        try:
            api.competition_list_files("iwildcam-2020-fgvc7")
        except HTTPError as e:
            print(json.dumps({"status": e.response.status_code}))
    """, KAGGLE_API_TOKEN="not-the-token")
    assert status == {"status": 401}


# --- faults, as the client sees them -------------------------------------------------------------------------

def test_push_error_fault_answers_200_with_an_error_and_makes_no_version(sb, home):
    sb.inject("push_error", match="sandbox-push-fault")
    pushed = push(sb, home, "sandbox-push-fault", WRITER)
    assert pushed.returncode == 0
    assert "Kernel push error: Kernel push rejected by the sandbox" in pushed.stdout
    assert sb.kernels.find("tester", "sandbox-push-fault") is None
    again = kaggle(sb, home, "kernels", "push", "-p", str(home / "sandbox-push-fault"))
    assert "Kernel version 1 successfully pushed" in again.stdout  # fired once, then stopped
    wait(sb, "sandbox-push-fault", 1)


def test_kernel_error_fault_ends_a_good_kernel_in_error_with_its_outputs(sb, home):
    sb.inject("kernel_error", match="sandbox-kernel-fault", message="out of memory (test)")
    push(sb, home, "sandbox-kernel-fault", WRITER)
    assert wait(sb, "sandbox-kernel-fault", 1) == "ERROR"
    status = kaggle(sb, home, "kernels", "status", "tester/sandbox-kernel-fault")
    assert "ERROR" in status.stdout and "out of memory (test)" in status.stdout
    assert (sb.kernels.find("tester", "sandbox-kernel-fault").working / "a.csv").is_file()


def test_rate_limit_fault_answers_429_with_retry_after_then_lists(sb, home):
    push(sb, home, "sandbox-rate-fault", WRITER)
    wait(sb, "sandbox-rate-fault", 1)
    sb.inject("rate_limit", times=1, retry_after=7)
    cli = kaggle(sb, home, "kernels", "output", "tester/sandbox-rate-fault", "-p", "first")
    assert cli.returncode != 0 and "rate limited" in cli.stderr  # the CLI does not retry
    got = client(sb, home, """
        import os
        files, _ = api.kernels_output("tester/sandbox-rate-fault", "out")
        print(json.dumps(sorted(os.path.relpath(f, "out") for f in files)))
    """)
    assert got == ["a.csv", "sandbox-rate-fault.log", "sub/b.txt"]
    sb.inject("rate_limit", times=1, retry_after=7)
    got = client(sb, home, """
        try:
            api.kernels_output("tester/sandbox-rate-fault", "out")
        except HTTPError as e:
            print(json.dumps([e.response.status_code, e.response.headers.get("Retry-After")]))
    """)
    assert got == [429, "7"]


def test_expired_url_fault_answers_403_once_and_a_relist_succeeds(sb, home):
    push(sb, home, "sandbox-url-fault", WRITER)
    wait(sb, "sandbox-url-fault", 1)
    sb.inject("expired_url", match="a.csv")
    got = client(sb, home, """
        try:  # the CLI's path: list the outputs, then fetch each URL
            api.kernels_output("tester/sandbox-url-fault", "out")
            first = None
        except HTTPError as e:
            first = e.response.status_code
        api.kernels_output("tester/sandbox-url-fault", "out", force=True)  # lists again: fresh URLs
        print(json.dumps({"first": first, "then": open("out/a.csv").read()}))
    """)
    assert got == {"first": 403, "then": "x\n1\n"}
    assert sb.fired["expired_url"] == 1


def test_short_download_fault_is_resumed_by_the_client(sb, home, small_demo):
    sb.inject("short_download", match="iwildcam2020-256")
    done = kaggle(sb, home, "datasets", "download", DATASET, "-p", "cut")
    assert done.returncode == 0, done.stderr
    assert "Resuming from" in done.stdout or "Retry 1/" in done.stdout
    with zipfile.ZipFile(home / "cut" / "iwildcam2020-256.zip") as archive:
        assert archive.testzip() is None
        assert len([n for n in archive.namelist() if n.endswith(".jpg")]) == len(
            list((small_demo.root / "iwildcam2020-256").rglob("*.jpg")))
    assert sb.fired["short_download"] == 1


def test_submission_rejected_fault_ends_in_error(sb, home, small_demo):
    (home / "fine.csv").write_text((small_demo.root / COMPETITION / "sample_submission.csv").read_text())
    sb.inject("submission_rejected", message="scoring failed (test)")
    got = client(sb, home, """
        ref = api.competition_submit("fine.csv", "m", "iwildcam-2020-fgvc7").ref
        api.get_submission(ref)
        s = api.get_submission(ref)
        print(json.dumps([s.status.name, s.error_description, s.public_score]))
    """)
    assert got == ["ERROR", "scoring failed (test)", ""]


def test_slow_kernel_fault_keeps_it_running_then_completes(sb, home):
    sb.inject("slow_kernel", match="sandbox-slow-fault", seconds=6)
    push(sb, home, "sandbox-slow-fault", WRITER)
    status = kaggle(sb, home, "kernels", "status", "tester/sandbox-slow-fault/1")
    assert "RUNNING" in status.stdout, status.stdout + status.stderr
    assert wait(sb, "sandbox-slow-fault", 1) == "COMPLETE"


def test_no_file_the_sandbox_wrote_holds_a_credential(sb, home):
    push(sb, home, "sandbox-env-dump", "import os\nprint(dict(os.environ))\n")
    assert wait(sb, "sandbox-env-dump", 1) == "COMPLETE"
    assert "IWC_INPUT_ROOT" in (sb.kernels.find("tester", "sandbox-env-dump").folder / "log.txt").read_text()
    secrets = (sb.token.encode(), sb.key.encode())
    leaks = [p for p in sb.workdir.rglob("*") if p.is_file() and any(s in p.read_bytes() for s in secrets)]
    assert leaks == []


def test_faults_parse_and_refuse_unknown_names_and_parameters():
    assert parse_fault("rate_limit:2,retry_after=3") == ("rate_limit", 2, {"retry_after": 3.0})
    assert parse_fault("push_error,match=full,message=no") == ("push_error", 1, {"match": "full", "message": "no"})
    faults = Faults()
    with pytest.raises(IwcError, match="unknown sandbox fault"):
        faults.inject("meteor")
    with pytest.raises(IwcError, match="takes retry_after"):
        faults.inject("rate_limit", speed=3)
    with pytest.raises(IwcError, match="whole number"):
        parse_fault("rate_limit:x")
    faults.inject("rate_limit", times=2, match="full")
    assert faults.take("rate_limit", "iwc-crop") is None
    assert faults.take("rate_limit", "iwc-full") == {"retry_after": 1}
    assert faults.take("rate_limit", "iwc-full") is not None
    assert faults.take("rate_limit", "iwc-full") is None
    assert faults.fired["rate_limit"] == 2


def test_foreground_sandbox_prints_the_env_a_client_needs(small_demo, tmp_path, home):
    proc = subprocess.Popen([sys.executable, "-m", "iwc.host.sandbox", "--data", str(small_demo.root),
                             "--workdir", str(tmp_path / "fg"), "--owner", "rehearsal", "--fault", "push_error"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        exports = {}
        for line in proc.stdout:
            if line.strip().startswith("export "):
                name, _, value = line.strip()[len("export "):].partition("=")
                exports[name] = value.strip("'")
            if line.startswith("then run"):
                break
        assert exports["KAGGLE_API_ENVIRONMENT"] == "LOCALHOST"
        assert exports["HTTP_PROXY"].startswith("http://127.0.0.1:")
        assert exports["KAGGLE_API_TOKEN"].startswith("sandbox-token-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
        done = subprocess.run([sys.executable, "-m", "kaggle", "competitions", "files", COMPETITION],
                              env={**env, **exports, "HOME": str(home)}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "sample_submission.csv" in done.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("make", [True, False])
def test_a_data_root_without_a_competition_is_one_line(tmp_path, capsys, make):
    if make:
        (tmp_path / "empty" / COMPETITION).mkdir(parents=True)
    assert main(["--data", str(tmp_path / "empty"), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iwc: error: ") and err.count("\n") == 1
    assert ("no sample_submission.csv" if make else "invoke data.demo --out") in err


def test_a_port_in_use_is_one_line(sb, tmp_path, capsys):
    port = sb.url.rsplit(":", 1)[1]
    assert main(["--data", str(sb.data_root), "--workdir", str(tmp_path / "w"), "--port", port]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_a_restarted_sandbox_starts_clean_and_refuses_a_foreign_workdir(small_demo, tmp_path):
    with Sandbox(small_demo.root, tmp_path / "w") as first:
        first.kernels.push("tester", "sandbox-old", {"text": "print(1)"}, {})
        wait(first, "sandbox-old", 1)
    with Sandbox(small_demo.root, tmp_path / "w") as second:
        assert not (second.workdir / "kernels").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(IwcError, match="holds other files"), Sandbox(small_demo.root, tmp_path / "mine"):
        pass
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_stray_https_call_through_the_sandbox_never_leaves(sb):
    import requests

    session = requests.Session()
    session.trust_env = False  # only the proxy given here: no NO_PROXY from this machine can bypass it
    with pytest.raises(requests.exceptions.ProxyError):
        session.get("https://api.kaggle.com/v1/anything", proxies={"https": sb.env["HTTPS_PROXY"]}, timeout=10)
