"""Host code (iwc/host/) is never embedded in a kernel and never enters a stage's code hash."""

import ast
import shutil
import subprocess
import sys

from iwc.host.bundle import render_kernels
from iwc.provenance import HOST_DIR, PACKAGE_DIR, closure_sources, hash_sources, package_sources, source_files
from iwc.recipe import REFERENCE
from iwc.stages import stage_specs


def test_kernels_embed_no_host_module():
    sources = package_sources()
    assert sources and not [rel for rel in sources if rel.startswith(f"{HOST_DIR}/")]
    host_files = sorted((PACKAGE_DIR / HOST_DIR).rglob("*.py"))
    assert host_files  # the split exists
    for text in render_kernels(REFERENCE).values():
        assert "# iwc/host/" not in text


def test_kernel_side_code_never_imports_host_code():
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("iwc.host")], f"{path} imports host code"


def _stage_code_hashes(package_dir):
    sources = package_sources(package_dir)
    return {name: hash_sources(closure_sources(spec.module, sources)) for name, spec in stage_specs(REFERENCE).items()}


def _append(path, line):
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"\n# {line}\n")


def test_the_host_starts_without_torch():
    """The CLI, pipeline and backends import no torch or timm (4 s a start): only kernels and `iwc stage` train."""
    probe = ("import sys, iwc.host.cli, iwc.host.pipeline, iwc.host.backends, iwc.host.backends.docker, "
             "iwc.host.backends.kaggle; print(sorted({'torch', 'timm'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_each_stage_code_hash_changes_only_with_the_code_its_kernel_runs(tmp_path):
    copy = tmp_path / "iwc"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = _stage_code_hashes(copy)
    _append(copy / HOST_DIR / "cli.py", "a host-only edit")
    assert _stage_code_hashes(copy) == before
    for edited, changed in (("report.py", {"aggregate"}), ("aggregate.py", {"aggregate"}),
                            ("submission.py", {"aggregate"}), ("data/crops.py", {"crop"}),
                            ("train/fit.py", {"full", "crop"}),  # the aggregator reruns through its upstream keys
                            ("errors.py", {"full", "crop", "aggregate"})):
        start = _stage_code_hashes(copy)
        _append(copy / edited, f"an edit of {edited}")
        after = _stage_code_hashes(copy)
        assert {s for s in after if after[s] != start[s]} == changed, edited
