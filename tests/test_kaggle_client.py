"""The Kaggle client module on its own: the only importer of `kaggle`, and lazily; log parsing."""

import ast
import subprocess
import sys
from pathlib import Path

from iwc.host.kaggle_client import log_lines

PACKAGE = Path(__file__).resolve().parents[1] / "iwc"


def _kaggle_imports(tree: ast.AST) -> list[ast.AST]:
    found = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n.split(".")[0] in ("kaggle", "kagglesdk") for n in names):
            found.append(node)
    return found


def test_only_the_client_imports_kaggle_and_only_inside_functions():
    trees = {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text(encoding="utf-8"))
             for p in PACKAGE.rglob("*.py") if not p.name.startswith("sandbox")}  # the sandbox server is no client
    assert {name for name, tree in trees.items() if _kaggle_imports(tree)} == {"host/kaggle_client.py"}
    client = trees["host/kaggle_client.py"]
    assert not set(map(id, client.body)) & set(map(id, _kaggle_imports(client)))  # none at module level


def test_the_cli_and_the_backend_load_without_importing_kaggle():
    code = ("import sys, iwc.host.cli, iwc.host.kaggle_cli, iwc.host.backends.kaggle, iwc.host.kaggle_client\n"
            "iwc.host.cli.build_parser()\n"
            "assert not {'kaggle', 'kagglesdk'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_kaggle_log_records_become_lines_and_plain_text_stays():
    log = '[{"stream_name": "stdout", "time": 0.1, "data": "a\\n"}\n,{"stream_name": "stderr", "time": 0.2, ' \
          '"data": "b\\r50%\\rdone\\nc\\n"}]'
    assert log_lines(log) == ["a", "done", "c"]
    assert log_lines("plain\ntext\n") == ["plain", "text"]
    assert log_lines("") == []
