"""The Kaggle client and backend against the sandbox, one injected fault per test, with tiny fake kernels.

Each fault: the kit retries where that is safe, else stops with one `IwcError` (exit 2 from the CLI); a rerun
completes without pushing a finished kernel again; nothing partial is left looking complete. The last test
scans every file and output these tests wrote for the sandbox's credential values.
"""

import json

import pandas as pd
import pytest
from conftest import talk_to_sandbox

from iwc.errors import IwcError
from iwc.host.backends.base import KernelRun
from iwc.host.backends.kaggle import KaggleBackend
from iwc.host.bundle import METADATA_FILE, kernel_metadata
from iwc.host.cli import main
from iwc.host.kaggle_client import ATTEMPTS, KaggleClient
from iwc.host.sandbox.server import Sandbox
from iwc.layout import find_competition, find_resized
from iwc.stages import StageSpec
from iwc.submission import write_submission

OWNER = "tester"
BLOB = bytes(range(256)) * 1200  # 300 KiB: big enough that a cut download is visibly short
SCRIPT = f"""\
import os
import pathlib

working = pathlib.Path(os.environ["IWC_WORKING_DIR"])
(working / "sub").mkdir(parents=True, exist_ok=True)
(working / "result.txt").write_text("done\\n")
(working / "sub" / "blob.bin").write_bytes(bytes(range(256)) * {len(BLOB) // 256})
print("fake kernel ran", flush=True)
"""
OUTPUTS: list[str] = []  # everything the tests printed, for the credential scan
CREDENTIAL_FILES: list = []  # credential files the tests wrote on purpose (the scan skips them)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("kaggle-faults")


@pytest.fixture(scope="module")
def sandbox(small_demo, base):
    with Sandbox(small_demo.root, base / "sandbox", owner=OWNER) as sb:
        yield sb


@pytest.fixture
def env(sandbox, base, monkeypatch, quick_kaggle_polls):
    """This process talks to the sandbox with its token (no credential of the machine is read), polling it quickly."""
    talk_to_sandbox(monkeypatch, sandbox, base / "home")
    return sandbox


@pytest.fixture(autouse=True)
def keep_output(capsys):
    yield
    captured = capsys.readouterr()
    OUTPUTS.extend([captured.out, captured.err])


def said(capsys) -> str:
    captured = capsys.readouterr()
    OUTPUTS.extend([captured.out, captured.err])
    return captured.out + captured.err


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    OUTPUTS.extend([captured.out, captured.err])
    return code, captured.out, captured.err


def fake_job(base, name: str) -> KernelRun:
    """A kernel folder whose script writes result.txt and sub/blob.bin, as the stage `name`."""
    spec = StageSpec(name, f"iwc fake {name}", f"iwc.stages.{name}", sections=(), gpu=False)
    folder = base / "kernels" / name
    folder.mkdir(parents=True)
    (folder / spec.code_file).write_text(SCRIPT)
    meta = kernel_metadata(spec, {name: spec}, OWNER)
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return KernelRun(spec, folder, {}, base / "stages" / name)


def backend(deadline_s: float = 120.0) -> KaggleBackend:
    return KaggleBackend(KaggleClient(progress=False, poll_s=0.2, max_poll_s=1.0), deadline_s=deadline_s)


def pushes(sandbox) -> int:
    return sandbox.calls.count("SaveKernel")


def assert_pulled(working):
    assert (working / "result.txt").read_text() == "done\n"
    assert (working / "sub" / "blob.bin").read_bytes() == BLOB
    assert not list(working.parent.glob(f".{working.name}.*"))  # the pull swapped its folder in, nothing left


def test_push_answered_with_an_error_stops_with_one_line_and_a_rerun_pushes(env, base, capsys):
    job = fake_job(base, "push-error")
    env.inject("push_error", match=job.spec.slug)
    code, _, err = cli(capsys, "kaggle", "push", job.kernel_dir)
    assert code == 2 and err.count("\n") == 1 and "refused the push" in err and "injected fault" in err
    env.inject("push_error", match=job.spec.slug)
    with pytest.raises(IwcError, match="refused the push"):
        backend().run(job)
    assert not job.state_path.exists() and not (job.stage_dir / "working").exists()
    before = pushes(env)
    assert_pulled(backend().run(job))
    assert pushes(env) == before + 1
    assert json.loads(job.state_path.read_text())["version"] == 1  # the refused pushes made no version


def test_kernel_ending_in_error_fails_with_its_log_tail_and_a_rerun_pushes_a_new_version(env, base, capsys):
    job = fake_job(base, "kernel-error")
    env.inject("kernel_error", match=job.spec.slug)
    with pytest.raises(IwcError) as failed:
        backend().run(job)
    message = str(failed.value)
    assert "version 1 ended ERROR" in message and "injected fault" in message
    assert "fake kernel ran" in message  # the tail of its log
    assert not (job.stage_dir / "working").exists()
    assert_pulled(backend().run(job))
    assert "version 1 ended ERROR: pushing a new version" in said(capsys)
    assert json.loads(job.state_path.read_text())["version"] == 2


def test_rate_limited_output_listing_is_retried_after_the_servers_delay(env, base, capsys):
    job = fake_job(base, "rate-limit")
    env.inject("rate_limit", times=2, match=job.spec.slug, retry_after=1)
    assert_pulled(backend().run(job))
    assert env.fired["rate_limit"] == 2
    assert "429" in said(capsys)


def test_expired_output_url_is_listed_again(env, base, capsys):
    job = fake_job(base, "expired-url")
    env.inject("expired_url", match="blob.bin")
    assert_pulled(backend().run(job))
    assert env.fired["expired_url"] == 1
    assert "download link expired; asking for a new one" in said(capsys)


def test_cut_download_resumes_and_a_pull_that_keeps_failing_leaves_nothing_complete(env, base, capsys, monkeypatch):
    monkeypatch.setattr("iwc.host.kaggle_client.MAX_BACKOFF_S", 0.05)  # no Retry-After here: back off briefly
    job = fake_job(base, "short-download")
    env.inject("short_download", match="blob.bin")
    assert_pulled(backend().run(job))
    assert env.fired["short_download"] == 1

    job = fake_job(base, "cut-for-good")
    env.inject("short_download", times=ATTEMPTS, match="blob.bin")  # every try is cut
    with pytest.raises(IwcError, match="download kept failing") as failed:
        backend().run(job)
    assert "\n" not in str(failed.value)
    assert env.fired["short_download"] == 1 + ATTEMPTS
    assert not (job.stage_dir / "working").exists()  # never a partial `working`
    assert not list(job.stage_dir.glob(".working.*"))  # and no partial folder left behind
    before = pushes(env)
    assert_pulled(backend().run(job))
    assert pushes(env) == before  # the finished version is pulled, not pushed again
    assert "was pushed before and is COMPLETE: not pushed again" in said(capsys)


def test_download_lays_the_data_out_for_the_reader_and_keeps_it_when_complete(env, base, capsys):
    data = base / "data-download"
    code, _, _ = cli(capsys, "kaggle", "download", "--data", data)
    assert code == 0
    assert find_competition(data) == data / "iwildcam-2020-fgvc7"
    assert find_resized(data) == data / "iwildcam2020-256"
    assert (data / "iwildcam2020-256" / "256_images" / "train" / "images").is_dir()
    assert not list(data.rglob("*.part")) and not list(data.glob(".*.assembling-*"))
    assert not list(data.glob(".*.replaced-*"))
    downloads = [c for c in env.calls if c.startswith("Download")]
    code, out, _ = cli(capsys, "kaggle", "download", "--data", data)
    assert code == 0 and out.count(", kept") == 5  # four metadata files and the dataset
    assert [c for c in env.calls if c.startswith("Download")] == downloads


def test_cut_competition_download_resumes_to_the_exact_file(env, base, small_demo):
    env.inject("short_download", match="sample_submission")
    folder = KaggleClient(progress=False).download_competition(base / "data-cut")
    sample = small_demo.root / "iwildcam-2020-fgvc7" / "sample_submission.csv"
    assert (folder / "sample_submission.csv").read_bytes() == sample.read_bytes()
    assert env.fired["short_download"] >= 1
    assert not list((base / "data-cut").rglob("*.part"))


def test_slow_kernel_past_the_deadline_stops_and_a_rerun_waits_for_the_same_version(env, base, capsys):
    job = fake_job(base, "slow-kernel")
    env.inject("slow_kernel", match=job.spec.slug, seconds=4)
    with pytest.raises(IwcError, match="keeps running on Kaggle") as failed:
        backend(deadline_s=1).run(job)
    assert "\n" not in str(failed.value) and "is still" in str(failed.value)
    assert not (job.stage_dir / "working").exists()
    before = pushes(env)
    assert_pulled(backend().run(job))
    assert pushes(env) == before
    assert json.loads(job.state_path.read_text())["version"] == 1


def test_ctrl_c_stops_waiting_without_cancelling_and_says_how_to_resume(env, base, monkeypatch):
    job = fake_job(base, "ctrl-c")
    env.inject("slow_kernel", match=job.spec.slug, seconds=2)
    client = KaggleClient(progress=False, poll_s=0.2, max_poll_s=1.0)
    version = client.push(job.kernel_dir)
    kernel = f"{OWNER}/{job.spec.slug}"

    def interrupt(seconds):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("iwc.host.kaggle_client.time.sleep", interrupt)
        with pytest.raises(IwcError, match="not cancelled") as stopped:
            client.wait(kernel, version, 60)
    assert f"iwc kaggle status {kernel} --version {version} --wait" in str(stopped.value)
    client.wait(kernel, version, 60)  # it kept running
    assert client.status(kernel, version)[0] == "COMPLETE"


def test_rejected_submission_stops_with_one_line_and_a_resubmission_scores(env, base, small_demo, capsys):
    competition = small_demo.root / "iwildcam-2020-fgvc7"
    sample = pd.read_csv(competition / "sample_submission.csv", dtype={"Id": str})
    categories = [c["id"] for c in json.loads((competition / "iwildcam2020_train_annotations.json").read_text())
                  ["categories"]]
    folder = base / "submission"
    write_submission(sample.assign(Category=categories[0]), folder, {}, sample=sample, category_ids=categories)
    env.inject("submission_rejected")
    code, _, err = cli(capsys, "kaggle", "submit", folder, "--message", "fault test", "--data", base / "data-submit")
    assert code == 2 and err.count("\n") == 1 and "rejected submission" in err and "injected fault" in err
    code, out, _ = cli(capsys, "kaggle", "submit", folder, "--message", "fault test", "--data", base / "data-submit")
    assert code == 0 and "public score: 0." in out
    description = env.submissions[-1]["description"]
    assert description.startswith("fault test | manifest sha256 ") and "| commit " in description


def test_missing_and_rejected_credentials_are_one_line_saying_where_to_put_one(env, base, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(base / "empty-config"))
    code, _, err = cli(capsys, "kaggle", "status", f"{OWNER}/anything")
    assert code == 2 and err.count("\n") == 1 and "no Kaggle credential found" in err and "KAGGLE_API_TOKEN" in err

    monkeypatch.setenv("KAGGLE_API_TOKEN", "not-the-token")
    code, _, err = cli(capsys, "kaggle", "status", f"{OWNER}/anything")
    assert code == 2 and err.count("\n") == 1 and "rejected the credential from $KAGGLE_API_TOKEN" in err
    assert "not-the-token" not in err

    monkeypatch.delenv("KAGGLE_API_TOKEN")
    monkeypatch.setenv("KAGGLE_USERNAME", OWNER)
    monkeypatch.setenv("KAGGLE_KEY", "not-the-key")
    code, _, err = cli(capsys, "kaggle", "status", f"{OWNER}/anything")
    assert code == 2 and err.count("\n") == 1 and "rejected the credential" in err and "(401)" in err

    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = base / "legacy-config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": OWNER, "key": env.key}))
    (config / "kaggle.json").chmod(0o600)
    CREDENTIAL_FILES.append(config / "kaggle.json")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    assert KaggleClient(progress=False).owner == OWNER


def test_dry_run_prints_the_kernels_for_the_credentials_owner_and_pushes_nothing(env, base, capsys, monkeypatch):
    monkeypatch.chdir(base)
    before = pushes(env)
    code, out, _ = cli(capsys, "reproduce", "--backend", "kaggle", "--dry-run", "--recipe", "demo", "--run", "dry")
    assert code == 0 and pushes(env) == before
    for kernel in ("iwc-full-image-model", "iwc-crop-model", "iwc-aggregate"):
        assert f"{OWNER}/{kernel}" in out
    assert "GPU NvidiaTeslaT4" in out and "no GPU" in out and "internet" in out
    assert f"kernels {OWNER}/iwc-full-image-model, {OWNER}/iwc-crop-model" in out


def test_single_step_commands_push_wait_and_pull_a_version(env, base, capsys):
    job = fake_job(base, "single-steps")
    kernel = f"{OWNER}/{job.spec.slug}"
    code, out, _ = cli(capsys, "kaggle", "push", job.kernel_dir)
    assert code == 0 and f"pushed {kernel} version 1" in out
    code, _, err = cli(capsys, "kaggle", "status", kernel, "--wait")
    assert code == 2 and "--wait needs --version" in err
    code, out, _ = cli(capsys, "kaggle", "status", kernel, "--version", 1, "--wait")
    assert code == 0 and "COMPLETE" in out
    code, out, _ = cli(capsys, "kaggle", "pull", kernel, "--version", 1, "--out", base / "pulled")
    assert code == 0 and "pulled 2 files" in out
    assert_pulled(base / "pulled")


def test_no_file_or_output_of_these_tests_holds_a_credential_value(sandbox, base):
    secrets = [sandbox.token.encode(), sandbox.key.encode()]
    scanned = 0
    for path in base.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in CREDENTIAL_FILES:
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path
            scanned += 1
    text = "".join(OUTPUTS).encode()
    assert not any(s in text for s in secrets)
    assert scanned and OUTPUTS  # (run with the tests above, it scans all they wrote)
