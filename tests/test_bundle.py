"""Kernel generator: readable, byte-stable scripts that run the embedded iwc code; Kaggle metadata."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slugify import slugify as kaggle_slugify  # what the kaggle client checks titles against

from iwc.errors import IwcError
from iwc.host.bundle import build_kernels, check_fresh, needs_hub, render_kernels, render_script
from iwc.provenance import KERNEL_ROOTS, PACKAGE_DIR, closure_sources, hash_sources, import_closure, package_sources
from iwc.recipe import DEMO, REFERENCE, load_recipe
from iwc.stages import stage_specs

CORE = tuple(closure_sources("iwc.layout", package_sources()))  # what the bootstrap and a stage's layout need
SPECS = stage_specs(DEMO)

RECORDING_STAGE = """\
import json

import iwc
from iwc import layout


def main(recipe, name):
    out = {"iwc_file": iwc.__file__, "recipe": recipe.to_dict(), "stage": name}
    (layout.working_dir() / "ran.json").write_text(json.dumps(out))
"""

FAILING_STAGE = """\
def main(recipe, name):
    message = "boom in " + recipe.name
    raise RuntimeError(message)
"""


def core_sources(**stages: str) -> dict[str, str]:
    """The few package modules a stage needs, plus `stages/<name>.py` = the given texts."""
    sources = {rel: text for rel, text in package_sources().items() if rel in CORE}
    return sources | {f"stages/{name}.py": text for name, text in stages.items()}


FAKE_STAGES = core_sources(full=RECORDING_STAGE, crop=RECORDING_STAGE, aggregate=RECORDING_STAGE)


def run_script(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ["PATH"], **env}
    return subprocess.run([sys.executable, str(script)], env=clean, cwd=script.parent,
                          capture_output=True, text=True, timeout=60)


def test_each_kernel_embeds_only_the_closure_of_its_stage():
    files = render_kernels(REFERENCE)
    embedded = {stage: {line.removeprefix("# iwc/") for line in files[f"{stage}/iwc_{stage}.py"].splitlines()
                        if line.startswith("# iwc/")} for stage in stage_specs(REFERENCE)}
    sources = package_sources()
    for stage, spec in stage_specs(REFERENCE).items():
        assert embedded[stage] == set(import_closure((*KERNEL_ROOTS, spec.module), sources))
        assert f"# code sha256: {hash_sources(closure_sources(spec.module, sources))}" in files[
            f"{stage}/iwc_{stage}.py"]
    assert not [f for f in embedded["aggregate"] if f.startswith("train/")]  # no training code
    assert {"report.py", "aggregate.py", "submission.py"} <= embedded["aggregate"]
    for model in ("full", "crop"):
        assert "train/fit.py" in embedded[model]
        assert not {"report.py", "aggregate.py", "submission.py"} & embedded[model]
    assert "data/crops.py" in embedded["crop"] and "data/crops.py" not in embedded["full"]
    assert (PACKAGE_DIR / "recipe.py").read_text() in files["aggregate/iwc_aggregate.py"]


def test_the_closure_follows_imports_anywhere_in_a_module_and_their_packages():
    sources = {"__init__.py": "", "a.py": "def f():\n    from iwc.sub import b\n", "sub/__init__.py": "",
               "sub/b.py": "import iwc.c\nimport os\n", "c.py": "from . import d\n", "d.py": "", "unused.py": ""}
    assert import_closure(["iwc.a"], sources) == ["__init__.py", "a.py", "c.py", "d.py", "sub/__init__.py",
                                                  "sub/b.py"]
    with pytest.raises(IwcError, match=r"iwc/missing\.py does not exist"):
        import_closure(["iwc.a"], sources | {"d.py": "import iwc.missing\n"})


def test_regeneration_is_byte_identical(tmp_path):
    a = build_kernels(tmp_path / "a", REFERENCE, "someone", sources=FAKE_STAGES)
    b = build_kernels(tmp_path / "b", REFERENCE, "someone", sources=dict(reversed(FAKE_STAGES.items())))
    assert [p.name for p in a] == ["aggregate", "crop", "full"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert [p.name for p in b] == [p.name for p in a]
    assert check_fresh(tmp_path / "a", REFERENCE, "someone", sources=FAKE_STAGES) == []


def test_staleness_is_detected(tmp_path):
    build_kernels(tmp_path, DEMO, "someone", sources=FAKE_STAGES)
    changed = FAKE_STAGES | {"errors.py": FAKE_STAGES["errors.py"] + "# changed\n"}
    scripts = ["full/iwc_full.py", "crop/iwc_crop.py", "aggregate/iwc_aggregate.py"]
    assert check_fresh(tmp_path, DEMO, "someone", sources=changed) == scripts
    # the reference recipe also differs in metadata: its pretrained models need the internet (timm's hub)
    assert check_fresh(tmp_path, REFERENCE, "someone", sources=FAKE_STAGES) == [
        "full/iwc_full.py", "full/kernel-metadata.json", "crop/iwc_crop.py", "crop/kernel-metadata.json",
        "aggregate/iwc_aggregate.py"]
    assert check_fresh(tmp_path, DEMO, "other", sources=FAKE_STAGES) == [
        "full/kernel-metadata.json", "crop/kernel-metadata.json", "aggregate/kernel-metadata.json"]
    (tmp_path / "crop" / "iwc_crop.py").unlink()
    assert check_fresh(tmp_path, DEMO, "someone", sources=FAKE_STAGES) == ["crop/iwc_crop.py"]


def test_metadata(tmp_path):
    build_kernels(tmp_path, DEMO, "someone", sources=FAKE_STAGES, extra_datasets={"crop": ["me/weights"]})
    metas = {}
    for stage, spec in SPECS.items():
        raw = (tmp_path / stage / "kernel-metadata.json").read_text()
        meta = metas[stage] = json.loads(raw)
        assert raw == json.dumps(meta, indent=2, sort_keys=True) + "\n"
        owner, slug = meta["id"].split("/")
        assert owner == "someone" and len(slug) >= 5 and len(meta["title"]) >= 5
        assert kaggle_slugify(meta["title"]) == slug == spec.slug
        assert (tmp_path / stage / meta["code_file"]).is_file()
        assert (meta["language"], meta["kernel_type"], meta["docker_image_pinning_type"]) == (
            "python", "script", "original")
        assert meta["is_private"] is True and meta["enable_internet"] is False
        if stage == "aggregate":  # blends tables on the CPU: no GPU quota spent on it
            assert meta["enable_gpu"] is False and "machine_shape" not in meta
        else:
            assert meta["enable_gpu"] is True and meta["machine_shape"] == "NvidiaTeslaT4"
        assert meta["competition_sources"] == ["iwildcam-2020-fgvc7"]
    assert metas["full"]["dataset_sources"] == ["qitvision/iwildcam2020-256"]
    assert metas["crop"]["dataset_sources"] == ["me/weights"]
    assert metas["full"]["kernel_sources"] == metas["crop"]["kernel_sources"] == []
    assert metas["aggregate"]["kernel_sources"] == [metas["full"]["id"], metas["crop"]["id"]]


def test_internet_only_where_weights_come_from_the_hub():
    assert [needs_hub(REFERENCE, s) for s in SPECS] == [True, True, False]
    assert [needs_hub(DEMO, s) for s in SPECS] == [False, False, False]
    local = load_recipe("reference", ['full.weights_file="/kaggle/input/w/resnet50.pth"'])
    assert [needs_hub(local, s) for s in SPECS] == [False, True, False]


def test_script_is_readable_text():
    sources = FAKE_STAGES
    script = render_script("full", "iwc.stages.full:main", REFERENCE, sources)
    assert script.startswith("# iwc kernel 'full'")
    assert "# recipe: reference\n" in script
    assert f"# code sha256: {hash_sources(sources)}\n" in script
    for rel, text in sources.items():
        assert f"# iwc/{rel}\n" in script and text in script
    assert json.dumps(REFERENCE.to_dict(), indent=2) in script


def test_script_runs_the_embedded_code_not_an_installed_one(tmp_path):
    decoy = tmp_path / "decoy" / "iwc"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy iwc was imported')\n")
    script = tmp_path / "kernel.py"
    script.write_text(render_script("full", "iwc.stages.fake:main", DEMO, core_sources(fake=RECORDING_STAGE)))
    proc = run_script(script, {"PYTHONPATH": str(decoy.parent), "IWC_WORKING_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    ran = json.loads((tmp_path / "ran.json").read_text())
    assert ran["recipe"] == DEMO.to_dict()
    iwc_file = Path(ran["iwc_file"])
    assert iwc_file.parts[-2:] == ("iwc", "__init__.py") and iwc_file.parent != PACKAGE_DIR
    assert not iwc_file.exists(), "the temp copy of the sources is removed at exit"


def test_tracebacks_point_at_embedded_files(tmp_path):
    script = tmp_path / "kernel.py"
    script.write_text(render_script("crop", "iwc.stages.fake:main", DEMO, core_sources(fake=FAILING_STAGE)))
    proc = run_script(script, {"PYTHONPATH": str(tmp_path / "nowhere")})
    assert proc.returncode == 1
    assert 'iwc/stages/fake.py", line 3, in main' in proc.stderr
    assert "raise RuntimeError(message)" in proc.stderr
    assert "RuntimeError: boom in demo" in proc.stderr


@pytest.mark.parametrize(("text", "why"), [
    ("x = '''a'''\n", "contains '''"),
    ("x = 1  # ends in a backslash \\", "byte-exact"),
    ("x = 'a'\r\n", "byte-exact"),
])
def test_unembeddable_source_is_rejected(text, why):
    with pytest.raises(IwcError, match=rf"iwc/stages/bad\.py.*{why}"):
        render_script("full", "iwc.stages.full:main", DEMO, FAKE_STAGES | {"stages/bad.py": text})


def test_entry_module_must_be_embedded():
    with pytest.raises(IwcError, match=r"iwc/stages/full\.py is not among"):
        render_script("full", "iwc.stages.full:main", DEMO, core_sources())


@pytest.mark.parametrize(("stages", "owner"), [(("full", "train"), "someone"), (("full",), "me/you")])
def test_bad_stage_or_owner_is_rejected(tmp_path, stages, owner):
    with pytest.raises(IwcError):
        build_kernels(tmp_path, DEMO, owner, stages, sources=FAKE_STAGES)
