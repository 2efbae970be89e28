"""`iwc` command line: exit codes, one-message errors, and the files each command writes (or refuses to)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from iwc.data.competition import SAMPLE_CSV, TRAIN_JSON
from iwc.host.cli import main
from iwc.host.synth import DemoInfo


def _sample(demo: DemoInfo) -> Path:
    return demo.competition_dir / SAMPLE_CSV


def _category_ids(demo: DemoInfo) -> list[int]:
    data = json.loads((demo.competition_dir / TRAIN_JSON).read_text(encoding="utf-8"))
    return sorted(int(c["id"]) for c in data["categories"])


def _valid_submission(demo: DemoInfo) -> pd.DataFrame:
    """The sample with every Category set to a known, non-zero id."""
    sample = pd.read_csv(_sample(demo), dtype=str)
    return sample.assign(Category=str(_category_ids(demo)[-1]))


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False, lineterminator="\n")
    return path


def test_validate_accepts_a_valid_submission(small_demo, tmp_path, capsys):
    sub = _write(_valid_submission(small_demo), tmp_path / "submission.csv")
    n = len(pd.read_csv(_sample(small_demo)))

    assert main(["validate", str(sub), "--sample", str(_sample(small_demo))]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"{sub}: valid ({n} rows)"
    assert out.err == ""


def test_validate_lists_every_problem_in_one_message_without_traceback(small_demo, tmp_path):
    good = _valid_submission(small_demo)
    broken = good.copy()
    dropped = broken.at[0, "Id"]
    broken = broken.iloc[1:].reset_index(drop=True)  # a sample Id goes missing
    broken.at[0, "Category"] = "cat"  # not an integer
    broken.at[1, "Category"] = "99999"  # not a category id
    broken = pd.concat([broken, broken.iloc[[2]], pd.DataFrame({"Id": ["not-a-test-image"], "Category": ["0"]})])
    sub = _write(broken, tmp_path / "submission.csv")

    done = subprocess.run([sys.executable, "-m", "iwc.host.cli", "validate", str(sub),
                           "--sample", str(_sample(small_demo))],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert done.stderr.count("iwc: error:") == 1
    assert "is NOT a valid submission" in done.stderr
    for problem in (f"1 sample Ids are missing (e.g. '{dropped}')",
                    "1 Ids appear more than once",
                    "1 Ids are not in the sample submission (e.g. 'not-a-test-image')",
                    "1 distinct Category values are not integers (e.g. 'cat')",
                    "1 distinct Category values are unknown ids (e.g. 99999)"):
        assert problem in done.stderr, problem


def test_validate_reads_the_category_list_from_categories(small_demo, tmp_path, capsys):
    sub = _write(_valid_submission(small_demo), tmp_path / "submission.csv")
    only_empty = tmp_path / "categories.json"
    only_empty.write_text(json.dumps({"category_ids": [0]}), encoding="utf-8")

    assert main(["validate", str(sub), "--sample", str(_sample(small_demo)), "--categories", str(only_empty)]) == 2
    assert f"distinct Category values are unknown ids (e.g. {_category_ids(small_demo)[-1]})" in capsys.readouterr().err

    assert main(["validate", str(sub), "--sample", str(_sample(small_demo)),
                 "--categories", str(tmp_path / "nowhere")]) == 2
    assert "no category list at" in capsys.readouterr().err


def test_missing_required_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "submission.csv"])
    assert exit_info.value.code == 2
    assert "--sample" in capsys.readouterr().err


def test_assemble_writes_submission_and_manifest_in_sample_order(small_demo, tmp_path, capsys):
    sample = pd.read_csv(_sample(small_demo), dtype=str)
    ids = _category_ids(small_demo)
    predictions = pd.DataFrame({"Id": sample["Id"], "Category": [str(ids[i % len(ids)]) for i in range(len(sample))]})
    # Shuffled, plus a prediction for an image the sample lacks: order comes from the sample, extras are dropped.
    predictions = pd.concat([predictions.iloc[::-1], pd.DataFrame({"Id": ["extra-image"], "Category": ["0"]})])
    pred_csv = _write(predictions, tmp_path / "predictions.csv")
    out = tmp_path / "out"

    assert main(["assemble", str(pred_csv), "--sample", str(_sample(small_demo)), "--out", str(out)]) == 0
    assert f"wrote {out / 'submission.csv'} ({len(sample)} rows)" in capsys.readouterr().out
    written = pd.read_csv(out / "submission.csv", dtype=str)
    assert list(written.columns) == ["Id", "Category"]
    assert written["Id"].tolist() == sample["Id"].tolist()
    expected = predictions.set_index("Id")["Category"]
    assert written["Category"].tolist() == expected.loc[sample["Id"]].tolist()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["submission"]["rows"] == len(sample)
    assert set(manifest["inputs"]) == {"predictions", "sample"}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "submission.csv"]


def test_assemble_refuses_predictions_that_miss_sample_ids(small_demo, tmp_path, capsys):
    sample = pd.read_csv(_sample(small_demo), dtype=str)
    pred_csv = _write(sample.iloc[3:].assign(Category="0"), tmp_path / "predictions.csv")
    out = tmp_path / "out"

    assert main(["assemble", str(pred_csv), "--sample", str(_sample(small_demo)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"3 of {len(sample)} sample Ids have no prediction" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_recipe_prints_the_resolved_recipe_with_overrides(capsys):
    assert main(["recipe", "--recipe", "demo", "--set", "full.batch_size=16"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "demo"
    assert data["models"]["full"]["batch_size"] == 16
    assert data["models"]["crop"]["batch_size"] == 32  # untouched
    assert list(data["models"]) == ["full", "crop"]  # in run order


@pytest.mark.parametrize(("override", "message"), [
    ("full.nope=1", "unknown recipe key 'nope'"),
    ("nosection.batch_size=1", "no recipe section 'nosection'"),
    ("full.batch_size", "must look like section.key=value"),
    ("full.batch_size=big", "recipe: models.full.batch_size = 'big' must be int"),
])
def test_bad_override_exits_2_with_a_clear_message(override, message, capsys):
    assert main(["recipe", "--recipe", "demo", "--set", override]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("iwc: error: ")
    assert message in out.err


def test_demo_data_refuses_to_overwrite_an_existing_demo(small_demo, capsys):
    sample = _sample(small_demo)
    before = sample.read_bytes(), sample.stat().st_mtime_ns

    assert main(["demo-data", str(small_demo.root), "--scale", "small", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds" in err
    assert "delete it or choose another output folder" in err
    assert (sample.read_bytes(), sample.stat().st_mtime_ns) == before
    assert not [p for p in small_demo.root.iterdir() if p.name.startswith(".demo-")]


@pytest.mark.parametrize("content", ["not json", '{"something": []}', '{"categories": [{"name": "x"}]}'])
def test_a_category_file_without_a_list_is_a_clear_error(small_demo, tmp_path, capsys, content):
    submission = _write(_valid_submission(small_demo), tmp_path / "submission.csv")
    bad = tmp_path / "categories.json"
    bad.write_text(content)
    assert main(["validate", str(submission), "--sample", str(_sample(small_demo)), "--categories", str(bad)]) == 2
    assert "has no category list" in capsys.readouterr().err


def test_a_missing_sample_is_named(small_demo, tmp_path, capsys):
    submission = _write(_valid_submission(small_demo), tmp_path / "submission.csv")
    assert main(["validate", str(submission), "--sample", str(tmp_path / "nope.csv")]) == 2
    assert "--sample" in capsys.readouterr().err


def test_weights_save_writes_a_file_that_weights_file_loads(tmp_path, monkeypatch, capsys):
    import timm
    import torch

    from iwc.host import weights

    torch.manual_seed(0)
    monkeypatch.setattr(weights, "hub_model", lambda arch: timm.create_model(arch, pretrained=False))
    out = tmp_path / "w.safetensors"
    assert main(["weights", "save", "--arch", "test_resnet", "--out", str(out)]) == 0
    assert f"--set full.weights_file={out.resolve()}" in capsys.readouterr().out
    assert main(["recipe", "--recipe", "demo", "--set", "full.arch='test_resnet'",
                 "--set", f"full.weights_file='{out}'"]) == 0


def test_weights_save_without_a_hub_is_one_line_with_the_offline_options(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "w.safetensors"
    assert main(["weights", "save", "--arch", "test_resnet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("iwc: error: pretrained 'test_resnet' weights: the model hub")
    assert "--set full.pretrained=false" in err
    assert not out.exists()


def test_a_reader_that_leaves_early_is_not_an_error():
    """`iwc recipe | head -3`: the pipe closes before iwc prints; no BrokenPipeError traceback, exit 0."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "iwc.host.cli", "recipe", "--recipe", "demo"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the recipe is printed
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
