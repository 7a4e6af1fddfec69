"""The extension's UI built in a real Gradio 4.40 ``Blocks`` (the version Forge pins), with
plain Gradio 4 only: no Gradio 3 shims of the kind Forge adds. Runs in CI's third environment
(``requirements-gradio4.txt``, ``pytest -m gradio4``); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slb.preset import save_preset
from slb.settings import ARG_NAMES, MANUAL, LeakSettings
from tests.conftest import make_preset

pytestmark = pytest.mark.gradio4

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
TITLE = "Signal Leak Bias"


@pytest.fixture
def g4_host(fresh_host):
    gr = pytest.importorskip("gradio")
    if getattr(gr, "HEADLESS", False) or not gr.__version__.startswith("4.40"):
        pytest.skip(f"needs gradio 4.40 (CI's gradio4 environment); this one has "
                    f"{getattr(gr, '__version__', 'none')}")
    import modules.paths as paths

    user = Path(paths.models_path) / "signal_leak"
    save_preset(make_preset("dct+pixel", 3, shape=(4, 8, 8), model_family="sd1"), user,
                "natural")
    (user / "broken.safetensors").write_bytes(b"not a preset")
    fresh_host.load_extension_script(SCRIPT)
    fresh_host.start(mode="ui", gradio="real")
    return fresh_host


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_ui_builds_in_gradio_4_with_the_documented_arg_order(g4_host, tab):
    import gradio as gr

    assert isinstance(g4_host.demo, gr.Blocks)
    script = g4_host.script(TITLE, tab)
    controls = g4_host.runner(tab).inputs[script.args_from:script.args_to]
    assert len(controls) == len(ARG_NAMES) == 32
    assert controls[0].value is False
    assert [c.value for c in controls[1:]] == LeakSettings().to_args()[1:]
    kinds = [type(c).__name__ for c in controls]
    assert kinds[1:4] == ["Dropdown", "Slider", "Radio"]
    assert kinds[4:12] == ["Checkbox", "Slider"] * 4 and kinds[12] == "Number"
    assert controls[2].minimum == 0 and controls[2].maximum == 2
    names = [c[1] if isinstance(c, (tuple, list)) else c for c in controls[1].choices]
    assert names[0] == MANUAL and "natural" in names and "broken" not in names
    assert len(script.infotext_fields) == 32
    assert kinds[13:29] == ["Checkbox", "Slider"] * 8
    assert kinds[29:] == ["Checkbox", "ColorPicker", "Image"]
    labels = [a.label for a in script.api_info.args]
    assert labels[0] == TITLE and labels[1] == "Preset" and len(labels) == 32


def test_gradio_4_generation_and_paste(g4_host):
    """The same controls drive a generation and take an infotext paste under gradio 4."""
    res = g4_host.txt2img(g4_host.ui_args("txt2img", {TITLE: [True, "natural", 0.5]}), seed=3)
    assert res.errors == [] and res.p.extra_generation_params["Signal leak"] == "natural"
    pasted = g4_host.paste("a cat\nSteps: 20, Seed: 3, Signal leak: natural, "
                           "Signal leak strength: 0.5")
    values = [u.get("value") if isinstance(u, dict) else None for _, u in pasted]
    assert True in values and "natural" in values and 0.5 in values
