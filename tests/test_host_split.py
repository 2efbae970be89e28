"""Host code (iwc/host/) is never embedded in a kernel and never enters a stage's code hash."""

import ast
import shutil

from iwc.host.bundle import package_sources, render_kernels
from iwc.provenance import HOST_DIR, PACKAGE_DIR, package_hash, source_files
from iwc.recipe import REFERENCE


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


def test_editing_a_host_module_leaves_the_code_hash_and_so_every_stage_key_unchanged(tmp_path):
    copy = tmp_path / "iwc"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = package_hash(copy)
    with open(copy / HOST_DIR / "cli.py", "a", encoding="utf-8") as f:
        f.write("\n# a host-only edit\n")
    assert package_hash(copy) == before
    with open(copy / "aggregate.py", "a", encoding="utf-8") as f:
        f.write("\n# a kernel-side edit\n")
    assert package_hash(copy) != before
