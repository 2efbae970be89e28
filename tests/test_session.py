"""iwc.train.session: the ETA line, the stop at the last epoch that fits, the marker, the restore; on a fake clock."""

import json
import logging

import pytest

from iwc.errors import IwcError
from iwc.host.bundle import render_kernels
from iwc.recipe import load_recipe
from iwc.train.session import (
    CLOCK_ENV,
    LIMIT_ENV,
    SessionPlan,
    SessionStop,
    margin,
    marker_name,
    restore,
    write_marker,
)

MODEL = load_recipe("demo", ["full.batch_size=10", "full.stages.0.epochs=1", "full.stages.1.epochs=1",
                             "full.tta.views=1"]).models["full"]


def plan(monkeypatch, limit: float | None, batch_s: float = 100.0) -> SessionPlan:
    """100 training rows (10 batches of 10 a epoch), 20 validated, 40 predicted with 1 + 1 views; 2 epochs."""
    monkeypatch.setenv(CLOCK_ENV, f"batch:{batch_s:g}")
    if limit is None:
        monkeypatch.delenv(LIMIT_ENV, raising=False)
    else:
        monkeypatch.setenv(LIMIT_ENV, str(limit))
    return SessionPlan("full", MODEL, 100, 20, 40)


def epoch(p: SessionPlan) -> None:
    for _ in range(p.steps):
        p.batch()
    p.epoch_end()


def test_margin_is_half_an_hour_or_a_tenth_of_a_short_limit():
    assert margin(12 * 3600) == 1800 and margin(1000) == 100


def test_eta_is_logged_once_after_the_first_minutes_of_training(monkeypatch, caplog):
    p = plan(monkeypatch, None)
    p.begin(0)
    with caplog.at_level(logging.INFO, "iwc.train.session"):
        p.batch()
        assert not caplog.records  # 100 s of training: not yet
        p.batch()
        p.batch()
    (record,) = caplog.records
    # 20 batches of 100 s, then 80 predictions at a third of 10 s per image: 2000 s + 267 s = 38 min
    assert "full: ETA: the stage ends in about 38 min (2 of 2 epochs left at 100.00 s/batch" in record.message
    assert "no session limit" in record.message


def test_eta_past_the_limit_says_it_continues_in_a_next_session(monkeypatch, caplog):
    p = plan(monkeypatch, 1500)
    p.begin(0)
    with caplog.at_level(logging.INFO, "iwc.train.session"):
        for _ in range(2):
            p.batch()
    assert "continues in a next session" in caplog.text and caplog.records[0].levelname == "WARNING"


def test_the_stop_comes_after_the_last_epoch_that_fits_with_a_marker(monkeypatch, tmp_path):
    # after epoch 1: 1000 s used, epoch 2 (1000 s) + prediction (267 s) would end at 2267 s > 2000 s usable
    p = plan(monkeypatch, 2000 / 0.9)
    p.begin(0)
    with pytest.raises(SessionStop) as stopped:
        epoch(p)
    marker = stopped.value.marker
    assert (marker["stage"], marker["epochs_done"], marker["epochs"], marker["session"]) == ("full", 1, 2, 1)
    assert marker["elapsed_s"] == 1000 and marker["needed_s"] == pytest.approx(2266.7)
    assert marker["why"].startswith("epoch 2 of 2 and the prediction would end at 38 min into the session, past "
                                    "its usable 33 min (limit 37 min minus a 4 min margin)")
    write_marker(tmp_path, stopped.value)
    assert json.loads((tmp_path / marker_name("full")).read_text()) == marker


def test_a_stage_that_fits_is_not_stopped_and_no_limit_never_stops(monkeypatch):
    for limit in (2300 / 0.9, None):
        p = plan(monkeypatch, limit)
        p.begin(0)
        epoch(p)
        epoch(p)  # training done, prediction left: 2267 s fits in 2300 s


def test_a_resumed_session_stops_before_a_prediction_that_does_not_fit(monkeypatch):
    p = plan(monkeypatch, 1200 / 0.9)
    p.begin(1)  # epoch 1 came from the previous session's checkpoint
    with pytest.raises(SessionStop, match="the prediction would end at"):
        epoch(p)  # 1000 s + 267 s of prediction > 1200 s usable


def test_restore_copies_the_previous_sessions_checkpoint_and_counts_the_session(monkeypatch, tmp_path):
    previous = tmp_path / "input" / "notebooks" / "me" / "iwc-full-image-model"
    (previous / "full").mkdir(parents=True)
    (previous / "full" / "checkpoint.pt").write_bytes(b"weights")
    (previous / marker_name("full")).write_text(json.dumps({"session": 2, "epochs_done": 3, "epochs": 9}))
    work = tmp_path / "working"
    work.mkdir()
    (work / marker_name("full")).write_text("{}")  # a marker left here by an earlier session: superseded
    monkeypatch.setenv("IWC_INPUT_ROOT", str(tmp_path / "input"))
    assert restore("full", work) == 3
    assert (work / "full" / "checkpoint.pt").read_bytes() == b"weights"
    assert not (work / marker_name("full")).exists()
    (previous / "full" / "checkpoint.pt").unlink()
    with pytest.raises(IwcError, match=r"previous session.s checkpoint .* is missing"):
        restore("full", work)


def test_restore_without_a_previous_session_is_session_one(monkeypatch, tmp_path):
    monkeypatch.setenv("IWC_INPUT_ROOT", str(tmp_path / "input"))
    (tmp_path / "input").mkdir()
    assert restore("full", tmp_path) == 1


def test_iwc_stage_run_again_in_its_folder_counts_the_next_session(monkeypatch, tmp_path):
    monkeypatch.setenv("IWC_INPUT_ROOT", str(tmp_path / "input"))
    (tmp_path / "input").mkdir()
    (tmp_path / marker_name("full")).write_text(json.dumps({"session": 1}))
    assert restore("full", tmp_path) == 2 and not (tmp_path / marker_name("full")).exists()


@pytest.mark.parametrize("name,value,problem", [(LIMIT_ENV, "soon", "not a number"), (CLOCK_ENV, "wall:1", "batch:")])
def test_bad_settings_are_one_clear_error(monkeypatch, name, value, problem):
    monkeypatch.setenv(name, value)
    with pytest.raises(IwcError, match=problem):
        SessionPlan("full", MODEL, 100, 20, 40)


def test_the_limit_is_baked_into_the_kernel_script():
    recipe = load_recipe("demo")
    nine_hours = render_kernels(recipe, stages=["full"], session_limit=32400.0)["full/iwc_full.py"]
    assert "SESSION_LIMIT_S = 32400.0\n" in nine_hours
    assert "SESSION_LIMIT_S = None\n" in render_kernels(recipe, stages=["full"], session_limit=None)["full/iwc_full.py"]


def test_session_limit_option_is_checked_and_refused_where_sessions_have_no_limit(capsys):
    from iwc.host.cli import main

    with pytest.raises(SystemExit) as bad:
        main(["reproduce", "--session-limit", "0"])
    assert bad.value.code == 2 and "is not a positive number of seconds" in capsys.readouterr().err
    assert main(["reproduce", "--backend", "local", "--session-limit", "3600"]) == 2
    err = capsys.readouterr().err
    assert err == "iwc: error: --session-limit does not apply to --backend local\n"
