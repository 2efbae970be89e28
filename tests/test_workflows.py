"""GitHub workflows: actionlint and zizmor (offline) find nothing; actions are pinned; the token stays a secret."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def tool(name: str) -> str:
    """A dev-extra tool: the one installed next to this Python, else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: pip install -e .[dev]"
    return found


def test_both_workflows_exist():
    assert [f.name for f in FILES] == ["ci.yml", "submit.yml"]


def test_actionlint_finds_nothing():
    done = subprocess.run([tool("actionlint"), "-no-color", *map(str, FILES)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_zizmor_offline_finds_nothing_even_as_an_auditor():
    done = subprocess.run([tool("zizmor"), "--offline", "--persona", "auditor", "--no-progress", str(WORKFLOWS)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout, done.stdout


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits_and_permissions_start_empty(path):
    text = path.read_text()
    uses = re.findall(r"uses:\s*(\S+)", text)
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    assert re.search(r"^permissions: \{\}$", text, re.M)  # each job asks for what it needs


def test_ci_runs_the_ci_script():
    assert re.search(r"run: \.ci/run$", (WORKFLOWS / "ci.yml").read_text(), re.M)


def test_submit_is_manual_and_the_token_reaches_only_the_kaggle_steps():
    text = (WORKFLOWS / "submit.yml").read_text()
    assert "workflow_dispatch:" in text and "\n  push:" not in text and "pull_request" not in text
    for name in ("run:", "reproduce:", "source_run_id:", "message:"):
        assert f"      {name}" in text
    token_lines = [line.strip() for line in text.splitlines() if "secrets." in line]
    assert token_lines and set(token_lines) == {"KAGGLE_API_TOKEN: ${{ secrets.KAGGLE_API_TOKEN }}"}
    steps = text.split("      - ")
    with_token = [s.splitlines()[0] for s in steps if "secrets.KAGGLE_API_TOKEN" in s]
    assert with_token == ["name: Reproduce on Kaggle", "name: Validate against the competition's sample submission",
                          "name: Submit and print the public score"]
    assert "set -x" not in text and not any("echo" in line and "KAGGLE" in line for line in text.splitlines())
    assert "iwc kaggle submit" in text and "actions/upload-artifact@" in text
