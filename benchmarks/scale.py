"""The whole kit at the real competition's size: `iwc reproduce` on the full-size synthetic competition.

    python benchmarks/scale.py --out benchmarks/results/scale.json [--scale full]

Writes the synthetic competition (`iwc demo-data --scale S`, reused when already there), then runs
`iwc reproduce --demo --force` on it with a tiny recipe (`TINY`: timm's smallest ResNet at 32 px, one
epoch per model, one TTA view) and records, in the JSON: seconds per stage and, inside each stage, per step
(from the stage log's timestamps, and every progress bar's own elapsed time), peak RSS per stage (sampled
from /proc), disk used (data, scratch, stage outputs), the counts, every image of the report with its size
(at most `MAX_SIDE` px a side), and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

from PIL import Image

from iwc.io import write_json

STAGES = ("full", "crop", "aggregate")
ONE_EPOCH = "[{epochs=1, lr_lo=0.003, lr_hi=0.003, frozen=false, mixup=0.0}]"
TINY_MODEL = ("arch=test_resnet", "image_size=32", "cache_size=32", f"stages={ONE_EPOCH}", "tta.views=1",
              "batch_size=64")
TINY = (*(f"{m}.{k}" for m in ("full", "crop") for k in TINY_MODEL), "crop.crops.size=32")
MAX_SIDE = 2000  # px: the most an image of the report may measure on a side
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ \S+: (.*)$")
ATTEMPT = re.compile(r"^==== attempt \d+.* at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC ====$")
BAR = re.compile(r"([^\r\n|]*?):\s+100%\|[^|]*\|\s*(\d+)/(\d+) \[([\d:]+)<")
STEPS = ((re.compile(r"cutting \d+ crops"), "crops"), (re.compile(r"cache \d+px of"), "caching"),
         (re.compile(r" on (cpu|cuda\S*), \d+ classes"), "training"), (re.compile(r"epoch \d+/\d+: "), "training"))


def step_seconds(log: str, seconds: float) -> dict[str, float]:
    """Seconds per step of one stage from its log: from the attempt line to the first step is `starting and
    reading`; a step runs from its first line to the next step's; after the last epoch line comes `predicting`
    (model stages) and, in the aggregator, everything after its start is `aggregating`; the stage ends
    `seconds` after its attempt line."""
    events: list[tuple[float, str]] = []
    for line in log.splitlines():
        if m := ATTEMPT.match(line):
            events = [(_epoch(m[1]), "starting and reading")]
        elif (m := STAMP.match(line)) and events:
            step = next((name for pattern, name in STEPS if pattern.search(m[3])), None)
            if step:
                events.append((_epoch(m[1]) + int(m[2]) / 1000, step))
    if not events:
        return {}
    end = events[0][0] + seconds
    last_epoch = max((i for i, (_, s) in enumerate(events) if s == "training"), default=None)
    if last_epoch is not None:
        events.insert(last_epoch + 1, (events[last_epoch][0], "predicting"))
    elif len(events) == 1 and "aggregate" in log[:300]:
        first = next((_epoch(m[1]) for m in map(STAMP.match, log.splitlines()) if m), end)
        events.append((first, "aggregating"))
    out: dict[str, float] = {}
    for (start, step), (stop, _) in zip(events, [*events[1:], (end, "")], strict=True):
        out[step] = round(out.get(step, 0.0) + max(stop - start, 0.0), 1)
    return out


def progress_bars(log: str) -> list[dict[str, Any]]:
    """Every progress bar that finished in the log: what it counted, how many, and its own elapsed seconds."""
    bars = []
    for desc, done, total, elapsed in BAR.findall(log):
        if done == total:
            parts = [int(p) for p in elapsed.split(":")]
            bars.append({"bar": desc.strip(), "items": int(total),
                         "seconds": sum(p * 60 ** i for i, p in enumerate(reversed(parts)))})
    return bars


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


class RssSampler(threading.Thread):
    """Peak resident memory of a process tree, per stage: a process whose command line names a stage's kernel
    (`iwc_<stage>.py`) counts for that stage with its children, the rest for `host`."""

    def __init__(self, root_pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval, self.peak_gb = root_pid, interval, {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            totals: dict[str, float] = {}
            for stage, rss in _tree(self.root_pid).values():
                totals[stage] = totals.get(stage, 0.0) + rss
            for stage, gb in totals.items():
                self.peak_gb[stage] = max(self.peak_gb.get(stage, 0.0), round(gb, 2))


def _tree(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (stage, RSS in GB) for `root` and its descendants."""
    procs: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        procs[int(entry.name)] = (int(fields[1]), cmd, int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**30)
    out: dict[int, tuple[str, float]] = {}

    def visit(pid: int, stage: str) -> None:
        _, cmd, rss = procs[pid]
        stage = next((s for s in STAGES if f"iwc_{s}.py" in cmd), stage)
        out[pid] = (stage, rss)
        for child, (parent, _, _) in procs.items():
            if parent == pid:
                visit(child, stage)

    if root in procs:
        visit(root, "host")
    return out


def du_mb(path: Path) -> float:
    """Disk used under `path` (allocated blocks), MB."""
    if not path.exists():
        return 0.0
    return round(sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())
                 / 2**20, 1)


def report_images(folder: Path) -> list[dict[str, Any]]:
    """Every PNG/JPEG under `folder` with its size in px."""
    out = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in {".png", ".jpg", ".jpeg"}:
            with Image.open(path) as image:
                out.append({"file": str(path.relative_to(folder)), "width": image.width, "height": image.height})
    return out


def counts(competition: Path) -> dict[str, int]:
    """Images, locations, categories and sample rows of a competition folder, from its files."""
    train = json.loads((competition / "iwildcam2020_train_annotations.json").read_text())
    test = json.loads((competition / "iwildcam2020_test_information.json").read_text())
    detections = json.loads((competition / "iwildcam2020_megadetector_results.json").read_text())["images"]
    sample_rows = sum(1 for _ in (competition / "sample_submission.csv").open()) - 1
    per_image = [len(m["detections"]) for m in detections]
    return {"train_images": len(train["images"]), "test_images": len(test["images"]),
            "train_locations": len({i["location"] for i in train["images"]}),
            "test_locations": len({i["location"] for i in test["images"]}),
            "categories": len(train["categories"]),
            "categories_in_train": len({a["category_id"] for a in train["annotations"]}),
            "sample_rows": sample_rows, "detections": sum(per_image), "most_detections_per_image": max(per_image),
            "images_with_a_box_above_0.3": sum(any(d["conf"] > 0.3 for d in m["detections"]) for m in detections)}


def machine() -> dict[str, Any]:
    """The machine and its load now; the torch the kernels ran with."""
    return {"cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(), "python": platform.python_version(), "torch": version("torch"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def result(run: str, root: Path, scale: str, demo_s: float | None, reproduce_s: float, rss: dict[str, float],
           load_before: list[float], exit_code: int) -> dict[str, Any]:
    """The benchmark's JSON: what ran, per stage and step, memory, disk, counts, report images, machine."""
    stages_dir = Path("runs") / run / "stages"
    stages: dict[str, Any] = {}
    for name in STAGES:
        state_file, log_file = stages_dir / name / "stage.json", stages_dir / name / "log.txt"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        log = log_file.read_text(errors="replace") if log_file.is_file() else ""
        seconds = float(state.get("seconds", 0.0))
        stages[name] = {"seconds": seconds, "complete": bool(state.get("complete")),
                        "steps_s": step_seconds(log, seconds), "progress_bars": progress_bars(log),
                        "peak_rss_gb": rss.get(name), "outputs_mb": du_mb(stages_dir / name / "working")}
    images = report_images(stages_dir / "aggregate" / "working")
    host = machine()
    return {
        "command": f"iwc reproduce --demo --scale {scale} --data {root} --run {run} --force "
                   + " ".join(f"--set {s!r}" for s in TINY),
        "recipe": {"base": "demo", "overrides": list(TINY),
                   "note": "timm test_resnet (its smallest ResNet), 32 px, one epoch per model, one TTA view"},
        "exit_code": exit_code, "demo_data_s": demo_s, "reproduce_s": round(reproduce_s, 1),
        "stages": stages, "peak_rss_gb": {"host": rss.get("host"), **{s: rss.get(s) for s in STAGES}},
        "disk_mb": {"data": du_mb(root), "scratch": du_mb(Path("runs") / run / "scratch"),
                    "stage_outputs": du_mb(stages_dir)},
        "counts": counts(root / "iwildcam-2020-fgvc7") if (root / "iwildcam-2020-fgvc7").is_dir() else {},
        "report_images": images, "report_images_max_side": max((max(i["width"], i["height"]) for i in images),
                                                               default=0),
        "report_images_within_limit": all(max(i["width"], i["height"]) <= MAX_SIDE for i in images),
        "machine": {**host, "load_average_before": load_before},
    }


def relay(stream: IO[bytes], start: float) -> dict[str, float]:
    """Copy the host's output to ours as it comes; return when it began checking the files (`preflight`) and
    started the first kernel (perf_counter times)."""
    marks: dict[str, float] = {}
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        now = time.perf_counter()
        if line.startswith(b"checking the competition files"):
            marks.setdefault("preflight", now)
        elif re.match(rb"\[\w+\] running iwc_", line):
            marks.setdefault("first kernel", now)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="full", choices=["small", "medium", "full"])
    parser.add_argument("--data", type=Path,
                        help="the synthetic competition's folder (default data/demo/<scale>-seed0)")
    parser.add_argument("--run", help="run name (default scale-<scale>)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = args.data or Path("data/demo") / f"{args.scale}-seed0"
    run = args.run or f"scale-{args.scale}"
    iwc = [sys.executable, "-m", "iwc.host.cli"]
    load_before = [round(x, 2) for x in os.getloadavg()]
    demo_s = None
    if not (root / "ground_truth").is_dir():
        start = time.perf_counter()
        subprocess.run([*iwc, "demo-data", str(root), "--scale", args.scale], check=True)
        demo_s = round(time.perf_counter() - start, 1)
    command = [*iwc, "reproduce", "--demo", "--scale", args.scale, "--data", str(root), "--run", run, "--force",
               *(a for s in TINY for a in ("--set", s))]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = RssSampler(proc.pid)
    sampler.start()
    marks = relay(proc.stdout, start)
    code = proc.wait()
    sampler.done.set()
    sampler.join()
    out = result(run, root, args.scale, demo_s, time.perf_counter() - start, sampler.peak_gb, load_before, code)
    out["host_s"] = {"preflight": round(marks.get("first kernel", start) - marks.get("preflight", start), 1),
                     "before the first kernel": round(marks.get("first kernel", start) - start, 1),
                     "outside the stages": round(out["reproduce_s"] - sum(
                         stage["seconds"] for stage in out["stages"].values()), 1)}
    print(json.dumps({k: out[k] for k in ("exit_code", "reproduce_s", "peak_rss_gb", "disk_mb")}, indent=2))
    if args.out:
        write_json(args.out, out)
    sys.exit(code)


if __name__ == "__main__":
    main()
