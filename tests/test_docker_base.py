"""The offline base image's inputs, without an engine: its tags, the apt mirror, this machine's pip settings
and the loopback index that serves local index folders to `docker build --network host`."""

import urllib.request
from pathlib import Path

import pytest

from iwc.host import docker_base
from iwc.host.docker_base import apt_mirror, base_tag, debian_tag, served_pip_settings

ROOT = Path(__file__).resolve().parents[1]


def test_tags_name_their_inputs_and_change_with_the_base_dockerfile(tmp_path):
    assert debian_tag().startswith("iwc-debian:bookworm-")
    tag = base_tag(ROOT)
    assert tag.startswith("iwc-base:bookworm-torch2.14.1-") and tag == base_tag(ROOT)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "base.Dockerfile").write_text((ROOT / "docker" / "base.Dockerfile").read_text() + "# x\n")
    assert base_tag(tmp_path) != tag


@pytest.mark.parametrize(("files", "mirror"), [
    ({"sources.list.d/debian.sources": "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm "
      "bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
      "Suites: bookworm-security\n"}, "http://mirror.example/debian"),
    ({"sources.list": "# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n"},
     "http://other.example/debian"),
    ({}, "http://deb.debian.org/debian"),
])
def test_apt_mirror_is_the_one_apt_uses(tmp_path, files, mirror):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert apt_mirror(tmp_path) == mirror


def test_local_index_folders_are_served_on_loopback_for_the_build(tmp_path, monkeypatch):
    index = tmp_path / "pypi" / "simple" / "demo"
    index.mkdir(parents=True)
    (index / "index.html").write_text('<a href="../../files/demo-1.0-py3-none-any.whl">demo</a>')
    (tmp_path / "pypi" / "files").mkdir()
    (tmp_path / "pypi" / "files" / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    (tmp_path / "wheels").mkdir()
    monkeypatch.setattr(docker_base, "pip_settings", lambda: {
        "index-url": "https://pypi.example/simple", "extra-index-url": f"file://{tmp_path}/pypi/simple",
        "find-links": str(tmp_path / "wheels"), "cert": "/etc/ssl/certs/ca-certificates.crt"})
    with served_pip_settings() as args:
        values = dict(a.split("=", 1) for a in args[1::2])
        assert args[::2] == ["--build-arg"] * 3 and values["PIP_INDEX_URL"] == "https://pypi.example/simple"
        extra = values["PIP_EXTRA_INDEX_URL"]
        assert extra.startswith("http://127.0.0.1:") and extra.endswith("/simple/")
        page = urllib.request.urlopen(extra + "demo/").read().decode()
        wheel = urllib.request.urlopen(urllib.request.urljoin(extra + "demo/", page.split('"')[1])).read()
        assert wheel == b"wheel bytes"
        assert values["PIP_FIND_LINKS"].startswith("http://127.0.0.1:")
    with pytest.raises(OSError):  # served only while the build runs
        urllib.request.urlopen(extra + "demo/", timeout=5)
