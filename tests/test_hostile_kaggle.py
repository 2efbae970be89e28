"""Hostile input on the Kaggle side (issue 16: 13, 14, 19, 20): a broken `kaggle.json`, a port out of range,
an identical submission sent again, `--submit` without a usable credential. Each is refused with exit 2 and one
`iwc: error:` line naming the file or option, no traceback, nothing on disk changed (test_hostile's checks),
and, for `--submit`, before any stage runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_hostile import _reproduce, _run, _snapshot
from test_reproduce import TINY

from iwc.host.sandbox.server import Sandbox
from iwc.host.submitted import RECORD
from iwc.submission import write_submission

ROOT = Path(__file__).resolve().parents[1]
OWNER = "tester"
CREDENTIAL_VARS = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR")


def refused(capsys, argv: list[str], expect: str) -> str:
    """Run `iwc argv` in this process; assert exit 2, one `iwc: error:` line holding `expect`, no traceback."""
    code = _run(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert err.startswith("iwc: error:") and err.count("iwc: error:") == 1 and err.count("\n") == 1, err
    assert expect in err, err
    return err


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home folder and no Kaggle credential in the environment."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


# --- 13: ~/.kaggle/kaggle.json the kaggle package would crash on or ignore ---------------------------------------

KAGGLE_JSON = [
    ("array", b'["bob"]', "holds an array, not a JSON object"),
    ("string", b'"bob:secret"', "holds a string, not a JSON object"),
    ("null", b"null", "holds null, not a JSON object"),
    ("number", b"42", "holds a number, not a JSON object"),
    ("not-json", b'{"username": "bob"', "cannot read it as JSON"),
    ("empty", b"", "cannot read it as JSON"),
    ("binary", b"\xff\xfe\x00\x81", "cannot read it as JSON"),
    ("no-key", b'{"username": "bob"}', 'has no "key"'),
    ("nothing", b"{}", 'has no "username" and no "key"'),
    ("key-not-text", b'{"username": "bob", "key": 12345}', '"key" must be non-empty text'),
    ("empty-username", b'{"username": " ", "key": "k"}', '"username" must be non-empty text'),
]


@pytest.mark.parametrize(("content", "expect"), [c[1:] for c in KAGGLE_JSON], ids=[c[0] for c in KAGGLE_JSON])
def test_a_broken_kaggle_json_is_one_line_naming_it(home, tmp_path, capsys, content, expect):
    config = home / ".kaggle" / "kaggle.json"
    config.write_bytes(content)
    before = _snapshot(tmp_path)
    err = refused(capsys, ["kaggle", "status", f"{OWNER}/anything"], f"{config}")
    assert expect in err and '{"username": "<your Kaggle user name>", "key": "<your API key>"}' in err
    assert "bob:secret" not in err  # the file's content is never quoted: it may be a secret
    assert _snapshot(tmp_path) == before


def test_a_kaggle_json_in_kaggle_config_dir_is_checked_too(home, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "kaggle.json").write_text('["bob"]')
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(folder))
    refused(capsys, ["kaggle", "status", f"{OWNER}/anything"], f"{folder / 'kaggle.json'} holds an array")


def test_username_and_key_from_the_environment_complete_a_partial_kaggle_json(home, capsys, monkeypatch):
    """`{"username": ...}` plus $KAGGLE_KEY is a whole credential: the check lets it through to Kaggle."""
    from iwc.host.kaggle_client import check_config_file

    config = home / ".kaggle" / "kaggle.json"
    config.write_text('{"username": "bob"}')
    monkeypatch.setenv("KAGGLE_KEY", "k")
    check_config_file(config, has_token=False)
    monkeypatch.delenv("KAGGLE_KEY")
    check_config_file(config, has_token=True)  # a token is the credential; the file only holds settings
    with pytest.raises(Exception, match='has no "key"'):
        check_config_file(config, has_token=False)


# --- 14: python -m iwc.host.sandbox --port out of range -------------------------------------------------------------

@pytest.mark.parametrize(("port", "expect"), [("99999", "99999 is outside 0..65535"), ("-1", "-1 is outside 0..65535"),
                                              ("http", "'http' is not a port number")])
def test_sandbox_port_out_of_range_is_a_usage_error(tmp_path, port, expect):
    done = subprocess.run([sys.executable, "-m", "iwc.host.sandbox", "--port", port, "--workdir", "w"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("iwc: error: argument --port: ")
    assert expect in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: not the workdir, not the demo data


# --- 20: --submit without a usable credential fails before the first stage ---------------------------------------

def reproduce_argv(small_demo, *extra: str) -> list[str]:
    return _reproduce(*extra, data=lambda _: small_demo.root)(None)


def test_submit_without_a_credential_stops_before_any_stage(small_demo, home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))  # an empty config folder: no kaggle.json
    before = _snapshot(tmp_path)
    refused(capsys, reproduce_argv(small_demo, "--submit"), "no Kaggle credential found")
    assert _snapshot(tmp_path) == before  # no runs/<run>/, let alone a stage folder


@pytest.fixture(scope="module")
def sandbox(small_demo, tmp_path_factory):
    with Sandbox(small_demo.root, tmp_path_factory.mktemp("hostile-kaggle"), owner=OWNER) as sb:
        yield sb


@pytest.fixture
def kaggle_env(sandbox, home, monkeypatch, quick_kaggle_polls):
    """This process talks to the sandbox with its made-up token (polling it quickly)."""
    for name, value in sandbox.env.items():
        monkeypatch.setenv(name, value)
    return sandbox


def test_submit_before_the_rules_are_accepted_stops_before_any_stage(small_demo, kaggle_env, tmp_path, capsys):
    kaggle_env.inject("rules_not_accepted")
    calls, before = len(kaggle_env.calls), _snapshot(tmp_path)
    refused(capsys, reproduce_argv(small_demo, "--submit"), "accept the rules at https://www.kaggle.com/c/")
    assert kaggle_env.calls[calls:] == ["IntrospectToken", "ListSubmissions"]
    assert _snapshot(tmp_path) == before


def test_resubmit_alone_is_refused(small_demo, home, capsys):
    refused(capsys, reproduce_argv(small_demo, "--resubmit"), "--resubmit goes with --submit")


# --- 19: an identical submission is not sent twice -------------------------------------------------------------------

def submission_folder(small_demo, folder: Path, category: int = 0) -> Path:
    competition = small_demo.competition_dir
    sample = pd.read_csv(competition / "sample_submission.csv", dtype={"Id": str})
    categories = [c["id"] for c in json.loads((competition / "iwildcam2020_train_annotations.json").read_text())
                  ["categories"]]
    write_submission(sample.assign(Category=categories[category]), folder, {}, sample=sample, category_ids=categories)
    return folder


def submit(folder: Path, *extra: str) -> list[str]:
    return ["kaggle", "submit", str(folder), "--message", "hostile", "--data", "kaggle-data", *extra]


def test_an_identical_submission_is_refused_unless_resubmit(kaggle_env, small_demo, tmp_path, capsys):
    folder = submission_folder(small_demo, tmp_path / "sub")
    made = len(kaggle_env.submissions)
    assert _run(submit(folder)) == 0
    assert "public score: 0." in capsys.readouterr().out
    (entry,) = json.loads((folder / RECORD).read_text())["submissions"]
    assert entry["status"] == "scored" and entry["public_score"].startswith("0.")
    assert entry["ref"] == kaggle_env.submissions[-1]["ref"] and len(entry["sha256"]) == 64

    before, calls = _snapshot(tmp_path), len(kaggle_env.calls)
    err = refused(capsys, submit(folder), f"{folder / 'submission.csv'} is identical")
    assert f"submission {entry['ref']}" in err and "--resubmit" in err
    assert _snapshot(tmp_path) == before and kaggle_env.calls[calls:] == []  # not even authenticated
    assert len(kaggle_env.submissions) == made + 1

    assert _run(submit(folder, "--resubmit")) == 0
    assert len(kaggle_env.submissions) == made + 2
    assert [e["status"] for e in json.loads((folder / RECORD).read_text())["submissions"]] == ["scored", "scored"]


def test_a_rejected_submission_does_not_count_as_submitted(kaggle_env, small_demo, tmp_path, capsys):
    folder = submission_folder(small_demo, tmp_path / "sub", category=1)
    kaggle_env.inject("submission_rejected")
    refused(capsys, submit(folder), "injected fault")
    assert [e["status"] for e in json.loads((folder / RECORD).read_text())["submissions"]] == ["rejected"]
    assert _run(submit(folder)) == 0


def test_a_damaged_record_is_one_line_and_is_left_alone(kaggle_env, small_demo, tmp_path, capsys):
    folder = submission_folder(small_demo, tmp_path / "sub", category=2)
    (folder / RECORD).write_text('{"submissions": 3}')
    before = _snapshot(tmp_path)
    refused(capsys, submit(folder), f"{folder / RECORD} is damaged")
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_rerun_of_reproduce_submit_does_not_submit_the_same_result_again(kaggle_env, small_demo, tiny_run, tmp_path,
                                                                         capsys):
    argv = ["reproduce", "--data", str(small_demo.root), "--recipe", "demo", "--run", "twice", "--submit",
            *[w for s in TINY for w in ("--set", s)]]
    tiny_run.copy(tmp_path / "runs" / "twice")  # its stages, already run: the first command assembles and submits
    made = len(kaggle_env.submissions)
    assert _run(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert len(kaggle_env.submissions) == made + 1

    err = refused(capsys, argv, "submissions/twice/submission.csv is identical")  # reassembled, same bytes
    assert len(kaggle_env.submissions) == made + 1
    assert _run([*argv, "--resubmit"]) == 0
    assert len(kaggle_env.submissions) == made + 2
    record = json.loads((tmp_path / "submissions" / "twice" / RECORD).read_text())["submissions"]
    assert len(record) == 2 and record[0]["sha256"] == record[1]["sha256"] and "--resubmit" in err
