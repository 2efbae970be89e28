"""Hostile competition data (issue 16 items 2 and 5): ids that are paths, numbers past 64 bits.

Each case edits the `World`'s copy of the competition files, then runs `iwc reproduce` or `iwc stage`: exit
code 2, exactly one `iwc: error:` line naming the file and the record, no traceback, nothing on disk changed
(the world, bar the run folder, and a sibling folder outside it that a traversing id aims at).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from test_hostile import World, _reproduce, _run, _snapshot, _stage
from test_hostile import world as world  # the fixture

from iwc.data.competition import MD_JSON, SAMPLE_CSV, TEST_JSON, TRAIN_JSON
from iwc.layout import SCRATCH_ENV

FAR_UP = "../" * 40  # more '..' than any folder of a run is deep: what follows is reached from the root


def _sibling(w: World) -> Path:
    """A folder beside the world (outside every folder of the kit) holding a user's photo."""
    return w.root.parent / f"{w.root.name}-sibling"


def _victim_id(w: World) -> str:
    """An image id that, used as a path below any folder, names the sibling's photo (without `.jpg`)."""
    return FAR_UP + (_sibling(w) / "victim").as_posix().lstrip("/")


def _edit(name: str, change: Callable[[dict, World], None]) -> Callable[[World], None]:
    def setup(w: World) -> None:
        path = w.comp / name
        data = json.loads(path.read_text(encoding="utf-8"))
        change(data, w)
        path.write_text(json.dumps(data), encoding="utf-8")
    return setup


def _rename_image(split_json: str) -> Callable[[World], None]:
    """Give an image of `split_json` that the crop stage cuts (a confident animal box) the victim id everywhere
    it is named: the image, its annotation, its detector entry and its sample row, as a crafted download would."""
    def setup(w: World) -> None:
        ids = {i["id"] for i in json.loads((w.comp / split_json).read_text(encoding="utf-8"))["images"]}
        detector = json.loads((w.comp / MD_JSON).read_text(encoding="utf-8"))["images"]
        old = next(m["id"] for m in detector if m["id"] in ids
                   and any(d["category"] == "1" and d["conf"] > 0.5 for d in m["detections"]))
        new = _victim_id(w)

        def rename(data: dict, _: World) -> None:
            for record in data["images"]:
                if record["id"] == old:
                    record.update(id=new, file_name=f"{new}.jpg")
            for record in data.get("annotations", []):
                if record["image_id"] == old:
                    record["image_id"] = new
        _edit(split_json, rename)(w)
        _edit(MD_JSON, rename)(w)
        sample = w.sample.read_text(encoding="utf-8")
        w.sample.write_text(sample.replace(f"\n{old},", f"\n{new},"), encoding="utf-8")
    return setup


def _set_field(name: str, key: str, field: str, value: object) -> Callable[[World], None]:
    return _edit(name, lambda d, w: d[key][0].update({field: value}))


def _huge_detections(d: dict, _: World) -> None:
    boxes = d["images"][0]["detections"]
    boxes.append({"category": "99999999999999999999", "bbox": [0.1, 0.1, 0.2, 0.2], "conf": 0.9})
    boxes.append({"category": "1", "bbox": [0.1, 10**400, 0.2, 0.2], "conf": 0.9})
    boxes.append({"category": "1", "bbox": [0.1, 0.1, 0.2, 0.2], "conf": 10**400})


def _by_file(stem_of_first: str) -> Callable[[dict, World], None]:
    """The detector file in MegaDetector's batch format (keyed by `file`); the first entry's file is given."""
    def change(d: dict, _: World) -> None:
        for record in d["images"]:
            record["file"] = f"train/{record.pop('id')}.jpg"
        d["images"][0]["file"] = stem_of_first
    return change


def _garbled_sample(w: World) -> None:
    w.sample.write_text("Image,Label\na,1\n", encoding="utf-8")


@dataclass(frozen=True)
class DataCase:
    id: str
    argv: Callable[[World], list[str]]
    expect: tuple[str, ...]  # texts the error must contain (a schema error lists its first problems, a line each)
    setup: Callable[[World], None]


CASES = [
    # --- item 2: an id is a file name, never a path ----------------------------------------------------------
    *[DataCase(f"{cmd}-traversing-train-id", argv, (TRAIN_JSON, "(id '../../", "is not a plain file name"),
               _rename_image(TRAIN_JSON))
      for cmd, argv in (("reproduce", _reproduce()), ("stage-crop", _stage("crop")), ("stage-full", _stage("full")))],
    DataCase("reproduce-traversing-test-id", _reproduce(), (TEST_JSON, "(id '../../", "is not a plain file name"),
             _rename_image(TEST_JSON)),
    DataCase("stage-crop-traversing-detector-id", _stage("crop"),
             (MD_JSON, "images[0] (id '../../", "field 'id' = '../../", "is not a plain file name"),
             _edit(MD_JSON, lambda d, w: d["images"][0].update(id=_victim_id(w)))),
    DataCase("reproduce-detector-file-stem-dotdot", _reproduce(),
             (MD_JSON, "images[0] (file 'train/..'): field 'file' = 'train/..': its stem '.'", "not a plain file name"),
             _edit(MD_JSON, _by_file("train/.."))),
    DataCase("reproduce-traversing-file-name", _reproduce(),
             (TRAIN_JSON, "images[0] (id ", "field 'file_name' = '../../", "is not a plain file name"),
             _edit(TRAIN_JSON, lambda d, w: d["images"][0].update(file_name=_victim_id(w) + ".jpg"))),
    DataCase("reproduce-nul-in-train-id", _reproduce(), (TRAIN_JSON, "field 'id' = 'a\\x00b'", "plain file name"),
             _edit(TRAIN_JSON, lambda d, w: d["images"][1].update(id="a\x00b"))),
    # --- item 5: JSON numbers have no size limit; int64 / float64 do ------------------------------------------
    DataCase("reproduce-train-location-2-70", _reproduce(),
             (TRAIN_JSON, "images[0] (id ", f"field 'location' = {2**70} is not an integer (64-bit)"),
             _set_field(TRAIN_JSON, "images", "location", 2**70)),
    DataCase("stage-full-test-location-2-70", _stage("full"),
             (TEST_JSON, "images[0] (id ", f"field 'location' = {2**70} is not an integer (64-bit)"),
             _set_field(TEST_JSON, "images", "location", 2**70)),
    DataCase("stage-crop-train-category-id-2-64", _stage("crop"),
             (TRAIN_JSON, "annotations[0] (id ", f"field 'category_id' = {2**64} is not an integer (64-bit)"),
             _set_field(TRAIN_JSON, "annotations", "category_id", 2**64)),
    DataCase("reproduce-train-width-below-int64", _reproduce(),
             (TRAIN_JSON, f"field 'width' = {-2**63 - 1} is not an integer (64-bit)"),
             _set_field(TRAIN_JSON, "images", "width", -2**63 - 1)),
    DataCase("reproduce-number-of-5000-digits", _reproduce(), (TEST_JSON, "not valid JSON", "4300"),
             lambda w: (w.comp / TEST_JSON).write_text('{"images": [' + "9" * 5000 + "]}", encoding="utf-8")),
    DataCase("reproduce-sample-category-past-int64", _reproduce(),
             (SAMPLE_CSV, "field 'Category' = '99999999999999999999' is not an integer like 1 or '1' (64-bit)"),
             lambda w: w.sample.write_text(w.sample.read_text().replace(",0\n", ",99999999999999999999\n", 1))),
    # huge detector numbers are dropped row by row: pre-flight reads past them, to the broken sample behind them
    DataCase("reproduce-huge-detector-numbers-are-dropped", _reproduce(), (SAMPLE_CSV, "header: is 'Image,Label'"),
             lambda w: (_edit(MD_JSON, _huge_detections)(w), _garbled_sample(w))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_data_is_refused_in_one_line_and_nothing_outside_changes(case, world, capsys, monkeypatch):
    sibling = _sibling(world)
    sibling.mkdir()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(sibling / "victim.jpg")
    monkeypatch.setenv(SCRATCH_ENV, str(world.root / "scratch"))  # `iwc stage`'s scratch: inside the world
    case.setup(world)
    before, beside = _snapshot(world.root), _snapshot(sibling)

    code = _run(case.argv(world))

    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("iwc: error:")]
    assert len(lines) == 1 and err.startswith("iwc: error:"), err
    assert case.expect[0] in lines[0], err  # the file
    for text in case.expect[1:]:
        assert text in err, err
    assert _snapshot(sibling) == beside
    after = _snapshot(world.root)
    assert {k: v for k, v in after.items() if not k.startswith(("runs", "scratch"))} == before
    assert not any("victim" in k or k.startswith("submissions") for k in after)
