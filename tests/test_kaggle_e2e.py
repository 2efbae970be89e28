"""End to end: `iwc reproduce --backend kaggle --submit` against the sandbox, as a user runs it.

The first run's aggregator ends in ERROR (an injected fault): the command stops non-zero; the rerun keeps the
finished training kernels, pushes the aggregator again, pulls, validates, submits and prints the score. The
pushed kernels are the bytes `kernels.build` makes for the credential's owner, and the submission equals
the local backend's for the same recipe and seed. The last test scans what these runs wrote for the
credential values.
"""

import json
import os
import subprocess
import sys

import pytest
from test_reproduce import TINY

from iwc.host.bundle import METADATA_FILE, build_kernels
from iwc.host.sandbox.server import Sandbox
from iwc.recipe import load_recipe
from iwc.stages import stage_specs

pytestmark = pytest.mark.slow
OWNER = "tester"
SPECS = stage_specs(load_recipe("demo", TINY))
ARGS = ["reproduce", "--backend", "kaggle", "--submit", "--recipe", "demo", "--run", "k", "--data", "data",
        *[w for s in TINY for w in ("--set", s)]]
SENT = {"slug": "id", "newTitle": "title", "language": "language", "kernelType": "kernel_type",
        "isPrivate": "is_private", "enableGpu": "enable_gpu", "enableInternet": "enable_internet",
        "datasetDataSources": "dataset_sources", "competitionDataSources": "competition_sources",
        "kernelDataSources": "kernel_sources", "dockerImagePinningType": "docker_image_pinning_type",
        "machineShape": "machine_shape"}  # SaveKernel field -> kernel-metadata.json key


@pytest.fixture(scope="module")
def local(tiny_run):
    """The same recipe and seed through the local backend (the session's shrunk run): its submission.csv bytes."""
    return tiny_run.submission


@pytest.fixture(scope="module")
def kaggle(small_demo, tmp_path_factory):
    """Two runs of the command against one sandbox: the first with the aggregator failing, then the rerun.

    The sandbox runs the two model kernels at once, here, with this process's environment: one thread each
    (OMP_NUM_THREADS=1), not two kernels each starting a thread per core."""
    base = tmp_path_factory.mktemp("kaggle-e2e")
    (base / "work").mkdir()
    with Sandbox(small_demo.root, base / "sandbox", owner=OWNER) as sb, pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        env = sb.process_env(base={**os.environ, "HOME": str(base / "home")})
        sb.inject("kernel_error", match=SPECS["aggregate"].slug)
        runs = [subprocess.run([sys.executable, "-m", "iwc.host.cli", *ARGS], cwd=base / "work", env=env,
                               capture_output=True, text=True, timeout=1200) for _ in range(2)]
        mp.undo()  # for the runs alone
        yield base, sb, runs


def test_first_run_stops_non_zero_when_the_aggregator_fails(kaggle):
    _, sandbox, (first, _) = kaggle
    assert first.returncode == 2, first.stderr
    error = [line for line in first.stderr.splitlines() if line.startswith("iwc: error:")]
    assert len(error) == 1 and "iwc-aggregate version 1 ended ERROR" in error[0]
    assert sandbox.fired["kernel_error"] == 1


def test_rerun_keeps_the_finished_kernels_and_submits(kaggle):
    base, sandbox, (_, rerun) = kaggle
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "skipped (unchanged): full, crop" in rerun.stdout, rerun.stdout[-3000:]
    assert "pushed tester/iwc-aggregate version 2" in rerun.stdout
    assert sandbox.calls.count("SaveKernel") == 4  # full, crop, and the aggregator twice
    assert "public score: 0." in rerun.stdout
    (submitted,) = sandbox.submissions
    assert submitted["status"] == "COMPLETE"
    assert "manifest sha256" in submitted["description"] and "commit" in submitted["description"]
    manifest = json.loads((base / "work" / "submissions" / "k" / "manifest.json").read_text())
    versions = {stage: k["version"] for stage, k in manifest["kaggle"]["kernels"].items()}
    assert versions == {"full": 1, "crop": 1, "aggregate": 2}
    assert manifest["kaggle"]["owner"] == OWNER
    assert (base / "work" / "data" / "iwildcam-2020-fgvc7" / "sample_submission.csv").is_file()


def test_pushed_kernels_are_the_bytes_kernels_build_makes_for_the_owner(kaggle, tmp_path):
    base, sandbox, _ = kaggle
    expected = {p.name: p for p in build_kernels(tmp_path, load_recipe("demo", TINY), OWNER)}
    for stage, spec in SPECS.items():
        meta = json.loads((expected[stage] / METADATA_FILE).read_text())
        script = (expected[stage] / spec.code_file).read_bytes()
        pushed = base / "work" / "runs" / "k" / "kernels" / stage
        assert (pushed / spec.code_file).read_bytes() == script
        assert (pushed / METADATA_FILE).read_bytes() == (expected[stage] / METADATA_FILE).read_bytes()
        version = sandbox.kernels.find(OWNER, spec.slug)
        assert (version.folder / "script.py").read_bytes() == script
        sent = {field: version.request.get(field, [] if meta.get(key) == [] else None) for field, key in SENT.items()}
        assert sent == {field: meta.get(key) for field, key in SENT.items()}  # (the client leaves out empty lists)


def test_submission_equals_the_local_backends(kaggle, local):
    base, _, _ = kaggle
    assert (base / "work" / "submissions" / "k" / "submission.csv").read_bytes() == local


def test_no_file_or_output_of_the_runs_holds_a_credential_value(kaggle):
    base, sandbox, runs = kaggle
    secrets = [sandbox.token.encode(), sandbox.key.encode()]
    files = [p for p in base.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in files:
        assert not any(s in path.read_bytes() for s in secrets), path
    for run in runs:
        assert not any(s in (run.stdout + run.stderr).encode() for s in secrets)
    assert len(files) > 100
