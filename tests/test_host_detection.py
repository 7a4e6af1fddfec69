"""Which host adapter the extension picks, from what each host says about itself."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest


@pytest.fixture
def host_module(fresh_host):
    import signal_leak_webui.host as host

    return host


def _forge_modules() -> list[str]:
    return [name for name in sys.modules
            if name == "modules_forge" or name.startswith("modules_forge.")]


@pytest.fixture
def forge_package(tmp_path, monkeypatch):  # noqa: ANN201
    """``forge_package(version)``: a ``modules_forge`` package on the path, with
    ``forge_version.version`` when given; removed from the path and from ``sys.modules``
    afterwards (later tests must see the stand-in A1111 again)."""

    def make(version: str | None) -> None:
        package = tmp_path / "modules_forge"
        package.mkdir()
        (package / "__init__.py").write_text("")
        if version is not None:
            (package / "forge_version.py").write_text(f"version = {version!r}\n")
        monkeypatch.syspath_prepend(str(tmp_path))

    assert not _forge_modules()
    yield make
    for name in _forge_modules():
        del sys.modules[name]
    importlib.invalidate_caches()


def test_a1111_has_no_modules_forge(host_module):
    assert importlib.util.find_spec("modules_forge") is None
    adapter = host_module.detect()
    assert type(adapter) is host_module.A1111Host and adapter.name == "AUTOMATIC1111"


@pytest.mark.parametrize(("version", "expected"), [
    ("2.0.1v1.10.1", "ForgeHost"),  # lllyasviel's Forge dfdcbab6
    ("0.0.17v1.8.0rc", "ForgeHost"),  # lllyasviel's Forge before 2.x
    ("neo", "NeoHost"),  # Forge Neo 2.x (modules_forge/forge_version.py)
    ("classic", "ClassicHost"),  # Forge Classic 1f95d717
    ("1.0.0v2-v1.10.1RC", "ReForgeHost"),  # reForge main 3b56b268
    ("1.7.0-v1.10.1RC", "ReForgeHost"),  # reForge's releases before that
    (None, "ForgeHost"),  # a Forge without forge_version: still Forge's layout
])
def test_forge_family_is_told_apart_by_its_forge_version(host_module, forge_package, version,
                                                         expected):
    forge_package(version)
    adapter = host_module.detect()
    assert type(adapter).__name__ == expected
    assert isinstance(adapter, host_module.ForgeHost)


class V_PREDICTION:  # noqa: N801 - ldm_patched's mixin name is what the adapter reads
    pass


@pytest.mark.parametrize("version", ["classic", "1.0.0v2-v1.10.1RC"])
def test_classic_and_reforge_adapters_see_a_v_model(host_module, forge_package, version):
    """What detect() picks for Forge Classic and reForge reads the prediction from their
    ``model_sampling`` (they have no ``predictor``); Forge's adapter, picked before, called
    an SD 2.x-v model ``eps``."""
    from types import SimpleNamespace

    forge_package(version)
    sampling = type("ModelSampling", (V_PREDICTION,), {})()
    unet = SimpleNamespace(model=SimpleNamespace(model_sampling=sampling))
    model = SimpleNamespace(forge_objects=SimpleNamespace(unet=unet), is_sd2=True)
    facts = host_module.detect().model_facts(model)
    assert (facts.family, facts.prediction, facts.native_resolution) == ("sd2", "v", 768)


def test_a1111_is_detected_again_afterwards(host_module):
    """Runs after the Forge-family cases: nothing of their package is left behind."""
    assert importlib.util.find_spec("modules_forge") is None
    assert type(host_module.detect()) is host_module.A1111Host
