"""Which host adapter the extension picks, from what each host says about itself."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def host_module(fresh_host):
    import signal_leak_webui.host as host

    return host


def _forge_package(tmp_path, monkeypatch, version: str | None) -> None:
    """A ``modules_forge`` package on the path, with ``forge_version.version`` when given."""
    package = tmp_path / "modules_forge"
    package.mkdir()
    (package / "__init__.py").write_text("")
    if version is not None:
        (package / "forge_version.py").write_text(f"version = {version!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("modules_forge", "modules_forge.forge_version"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_a1111_has_no_modules_forge(host_module):
    adapter = host_module.detect()
    assert type(adapter) is host_module.A1111Host and adapter.name == "AUTOMATIC1111"


@pytest.mark.parametrize(("version", "expected"), [
    ("2.0.1v1.10.1", "ForgeHost"),  # lllyasviel's Forge dfdcbab6
    ("neo", "NeoHost"),  # Forge Neo 2.x (modules_forge/forge_version.py)
    (None, "ForgeHost"),  # a Forge without forge_version: still Forge's layout
])
def test_forge_family_is_told_apart_by_its_forge_version(host_module, tmp_path, monkeypatch,
                                                         version, expected):
    _forge_package(tmp_path, monkeypatch, version)
    adapter = host_module.detect()
    assert type(adapter).__name__ == expected
    assert isinstance(adapter, host_module.ForgeHost)
