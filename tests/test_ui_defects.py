"""UI defects a user hits (issue: the UI in a real browser): our controls' ui-config.json keys,
incompatible presets marked before any generation, and a Preview that shows the leak's effect
and says which seed it used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slb.preset import save_preset
from slb.settings import MANUAL, choice_name, mark_refused, settings_from_dict
from tests.conftest import make_preset

pytestmark = pytest.mark.gradio

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
TITLE = "Signal Leak Bias"


@pytest.fixture
def ui_host(fresh_host):
    gr = pytest.importorskip("gradio")
    if getattr(gr, "HEADLESS", False):
        pytest.skip("the real gradio is not installed (only the stand-in's headless one)")
    import modules.paths as paths

    user = Path(paths.models_path) / "signal_leak"
    save_preset(make_preset("dct+pixel", 3, shape=(4, 8, 8), model_family="sd1"), user, "mine")
    save_preset(make_preset("pixel", shape=(4, 8, 8), model_family="sdxl"), user, "xl")
    fresh_host.load_extension_script(SCRIPT)
    fresh_host.start(mode="ui", gradio="real")
    return fresh_host


def _walk(block):
    yield block
    for child in getattr(block, "children", None) or []:
        yield from _walk(child)


def _ui_config_keys(demo, tab: str) -> dict[str, object]:
    """The ``ui-config.json`` key of every labelled component, by A1111 v1.10.1's rule
    (modules/ui_loadsave.py: ``<path>/<label>/value``, prefixed with
    ``customscript/<file>/`` for components that carry ``custom_script_source``)."""
    keys = {}
    for block in _walk(demo):
        label = getattr(block, "label", None)
        if not label or not hasattr(block, "value"):
            continue
        key = f"{tab}/{label}/value"
        source = getattr(block, "custom_script_source", None)
        keys[f"customscript/{source}/{key}" if source else key] = block
    return keys


def test_every_control_of_ours_has_its_own_ui_config_key(ui_host):
    import gradio as gr

    script = ui_host.script(TITLE, "txt2img")
    accordion = ui_host.runner("txt2img").inputs[script.args_from].accordion
    ours = [b for b in _walk(accordion) if getattr(b, "label", None) and b is not accordion]
    assert len(ours) > 40
    assert all(getattr(b, "custom_script_source", None) == "signal_leak_bias.py" for b in ours)
    # A host "Batch size" slider (1..8, default 1) beside ours (0..64, default 0: automatic)
    with gr.Blocks():
        host_batch = gr.Slider(label="Batch size", minimum=1, maximum=8, value=1)
    keys = _ui_config_keys(accordion, "txt2img")
    keys["txt2img/Batch size/value"] = host_batch
    ui_config = {"txt2img/Batch size/value": 1, "txt2img/Batch size/maximum": 8}
    ours_batch = next(b for b in ours if str(b.label).startswith("Batch size"))
    our_key = next(k for k, b in keys.items() if b is ours_batch)
    assert our_key.startswith("customscript/signal_leak_bias.py/") and our_key not in ui_config
    assert (ours_batch.minimum, ours_batch.maximum, ours_batch.value) == (0, 64, 0)
    labels = [str(b.label) for b in ours if hasattr(b, "value")]
    assert len(labels) == len(set(labels)), "two of our controls share a label (one key)"


def test_incompatible_presets_are_marked_before_any_generation(ui_host):
    script = ui_host.script(TITLE, "txt2img")
    dropdown = ui_host.runner("txt2img").inputs[script.args_from + 1]
    values = [c[1] if isinstance(c, (tuple, list)) else c for c in dropdown.choices]
    assert "mine" in values and mark_refused("xl") in values
    mod = next(m for m in ui_host.modules if hasattr(m, "PRESETS"))
    summary = mod.PRESETS.summary("xl")
    assert "not applied to this model" in summary and "sdxl" in summary
    assert mod.PRESETS.summary(mark_refused("xl")) == summary  # the dropdown's value
    assert "not applied" not in mod.PRESETS.summary("mine")
    # picking the marked entry means the preset itself (the mark never reaches a file name)
    assert choice_name(mark_refused("xl")) == "xl"
    assert settings_from_dict({"preset": mark_refused("xl")}).preset == "xl"


def test_preview_shows_the_effect_and_names_a_random_seed(ui_host):
    mod = next(m for m in ui_host.modules if hasattr(m, "PRESETS"))
    preview = mod.ui.make_preview(mod.HOOKS)
    rest = [*[False, 0.0] * 8, False, "#808080", None]
    img, note = preview(-1, 256, 256, MANUAL, 1.0, "sampled", True, 2.0, *[False, 0.0] * 3, -1,
                        *rest)
    seed = int(re.search(r"random seed (\d+)", note)[1])
    assert img is not None and "the image seed is -1" in note
    _, note2 = preview(-1, 64, 64, MANUAL, 1.0, "sampled", True, 2.0, *[False, 0.0] * 3, -1,
                       *rest)
    assert int(re.search(r"random seed (\d+)", note2)[1]) != seed
    # tiles 2 and 3 (the start's low frequencies without and with the leak) differ visibly:
    # a channel-0 mean of 2 brightens the third tile
    import numpy as np

    arr = np.asarray(img.convert("L"), dtype=float)
    w = arr.shape[1]
    thirds = [arr[:, i * w // 3:(i + 1) * w // 3].mean() for i in range(3)]
    assert thirds[2] > thirds[1] + 10, thirds


def test_pasting_a_not_applied_entry_without_a_name_selects_manual():
    from slb.infotext import paste_value, preset_from_entry

    entry = "not applied: unknown key(s) 'fix_mean_0'; allowed: enabled, preset"
    assert preset_from_entry(entry) == MANUAL
    assert paste_value({"Signal leak": entry}, "preset") == MANUAL
    assert preset_from_entry("style (not applied: no effect)") == "style"
