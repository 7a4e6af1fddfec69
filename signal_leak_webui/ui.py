"""The accordion in txt2img and img2img (DESIGN 7.1) and its Preview button.

:func:`build` returns the controls in the documented API order (``slb.settings.ARG_NAMES``)
and wires the buttons; it has no other side effects, since the API calls ``ui()`` again
to read defaults. Built with the host's ``InputAccordion``; plain Gradio 3.41 and 4.40
calls only.
"""

from __future__ import annotations

import html
import math
import os
import random

import gradio as gr
import torch
from modules import call_queue, shared
from modules.ui_components import InputAccordion, ToolButton

from slb import preview as slb_preview
from slb.dct import lf_coefficients, lf_image, lowfreq_basis, lowfreq_coords
from slb.files import printable
from slb.generation import resolve_reference
from slb.infotext import paste_value
from slb.lowfreq import GRADIENT_NAMES, LowFreqError, colour_means, reference_hash
from slb.mixing import StartConvention, vp_target
from slb.preset import PresetError
from slb.settings import (
    ARG_NAMES,
    GRADIENT_ARGS,
    MANUAL,
    MAX_CHANNELS,
    SettingsError,
    choice_name,
    settings_from_args,
)

from .fit_panel import make_fit_button, make_natural_button
from .hooks import LeakHooks
from .options import TITLE

try:  # A1111 >= 1.7 and Forge
    from modules.infotext_utils import PasteField
except ImportError:  # pragma: no cover - older hosts
    PasteField = None  # type: ignore[assignment]

CHANNEL_HINTS = ("brightness", "colour axis 1", "colour axis 2", "pattern / contrast")
SD_SIGMA_MAX = 14.6146  # the SD schedule's largest sigma, for the preview's start tiles


def _lowfreq_view(start: torch.Tensor, abar: float) -> torch.Tensor:
    """What the model reads at the first step: the start's lowest frequencies (DCT radius
    <= 2), divided by sqrt(abar) so they are in the units of a clean latent."""
    _, _, h, w = start.shape
    basis = lowfreq_basis(lowfreq_coords(6, h, w), h, w)
    return lf_image(lf_coefficients(start, basis), basis, h, w) / math.sqrt(abar)


def make_preview(hooks: LeakHooks):  # noqa: ANN201
    """The Preview handler, for the image seed (a random one when it is -1, and it says
    which): the leak, then what the model sees of the start's low frequencies without and
    with the leak (brightness, colour cast, gradients), decoded the cheap way."""
    host, presets = hooks.host, hooks.presets

    def preview(image_seed, width, height, *leak_args):  # noqa: ANN001, ANN202
        try:
            settings = settings_from_args([True, *leak_args])
            w, h = int(width or 512), int(height or 512)
            # the selected checkpoint (loaded first if the host still holds another) and
            # its VAE are the generation's: never at the same time as one
            with call_queue.queue_lock:
                sd_model = host.ensure_model()
                facts = host.model_facts(sd_model)
                plan = presets.plan(settings, facts)
                if plan.reason:
                    return None, html.escape(plan.reason)
                if plan.settings.reference is not None:
                    latent = host.encode_image(plan.settings.reference, w, h, sd_model)
                    plan = resolve_reference(plan, latent,
                                             reference_hash(plan.settings.reference))
                channels, family = facts.latent_channels, facts.family
            seed = int(image_seed) if image_seed is not None and int(image_seed) >= 0 else -1
            drawn = seed < 0
            if drawn:
                seed = random.randrange(2**32)
            shape = (channels, max(h // 8, 1), max(w // 8, 1))
            leak = hooks.engine.draw(plan, shape, torch.device("cpu"), [seed])
            noise = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))
            conv = StartConvention.ve(SD_SIGMA_MAX)
            plain = _lowfreq_view(vp_target(noise, leak, conv, 0.0), conv.abar)
            start = _lowfreq_view(vp_target(noise, leak, conv, settings.strength), conv.abar)
            # one shared scale for tiles 2 and 3, so small latents (whose few LF pixels
            # carry large noise values) do not saturate and the two stay comparable
            shrink = max(1.0, float(torch.maximum(plain.abs().max(), start.abs().max())) / 2.0)
            plain, start = plain / shrink, start / shrink
            tiles = [host.decode_cheap(t, family) for t in (leak * settings.strength, plain, start)]
            which = f"random seed {seed} (the image seed is -1)" if drawn else f"seed {seed}"
            note = (f"{which}. <b>1</b> the leak; <b>2</b> the low frequencies the model reads "
                    "from a plain noise start; <b>3</b> the same with the leak: the change "
                    "from 2 to 3 is the brightness, colour and layout the leak brings "
                    f"(divided by sqrt(abar) = {conv.leak_weight:.3f}"
                    + (f" and by {shrink:.1f} to fit" if shrink > 1 else "")
                    + ", decoded with the cheap approximation).")
            if plan.predicted_colour:
                note += f" Colour target predicts {plan.predicted_colour}."
            return slb_preview.side_by_side(tiles), note
        except (SettingsError, PresetError, ValueError, OverflowError) as exc:
            return None, html.escape(printable(exc))

    return preview


def mark_as_ours(root: object, source: str) -> None:
    """Give every component under ``root`` the host's per-script key prefix, so the WebUI's
    ui-config.json stores our defaults under ``customscript/<file>/...`` and never under a
    bare ``txt2img/<label>`` key that a host control (its own "Batch size") shares."""
    for child in getattr(root, "children", None) or []:
        child.custom_script_source = source
        mark_as_ours(child, source)


def make_colour_preview(hooks: LeakHooks):  # noqa: ANN201
    """The colour the linear map predicts for the means a colour target sets (a swatch)."""

    def predict(colour: str, *mean_args) -> str:  # noqa: ANN002
        try:
            fixed = {c: float(mean_args[2 * c + 1]) for c in range(MAX_CHANNELS)
                     if mean_args[2 * c]}
            family = hooks.host.model_facts(hooks.host.sd_model()).family
            means, shown = colour_means(colour, family, fixed)
        except (LowFreqError, ValueError, TypeError) as exc:
            return html.escape(str(exc))
        values = ", ".join(f"{c}: {m:+.2f}" for c, m in sorted(means.items()))
        return (f"<span style='display:inline-block;width:1.2em;height:1.2em;"
                f"background:{shown};border:1px solid #888;vertical-align:middle'></span> "
                f"predicted {shown} (means {values or 'all set above'})")

    return predict


def _paste_target(arg: str):  # noqa: ANN202
    def target(params: dict) -> object:
        return paste_value(params, arg)

    target.__name__ = f"signal_leak_{arg}"
    return target


def _paste_preset_target(presets: object):  # noqa: ANN202
    """The preset dropdown's paste: its entry for the pasted name, with the choices read
    again. Why: the page's choices are those of when the UI was built, and Gradio 4 (Forge,
    Neo) empties a dropdown set to a value outside them, so a preset added since (or one
    missing here, which a generation then reports) would be lost."""

    def target(params: dict) -> object:
        name = paste_value(params, "preset")
        if name is None:
            return None
        choices = presets.dropdown_choices()
        entry = next((c for c in choices if choice_name(c) == name), None)
        if entry is None:
            choices, entry = [*choices, name], name
        # Spelled out, not gr.update(): Gradio 4's update says "update", but the hosts'
        # API (the "infotext" field) unwraps only "generic_update", Gradio 3's spelling, and
        # the UIs of both versions take that one as an update too.
        return {"__type__": "generic_update", "choices": choices, "value": entry}

    target.__name__ = "signal_leak_preset"
    return target


def build(script: object, hooks: LeakHooks, host_components: dict) -> list:
    """The accordion for ``script``'s tab; returns its controls in API order."""
    presets = hooks.presets
    elem_id = script.elem_id
    with InputAccordion(False, label=TITLE, elem_id=elem_id("enabled")) as enabled:
        with gr.Row():
            preset = gr.Dropdown(label="Preset", choices=presets.dropdown_choices(),
                                 value=MANUAL, elem_id=elem_id("preset"))
            refresh = ToolButton(value="\U0001f504", elem_id=elem_id("refresh"))
        summary = gr.HTML(value=presets.summary(MANUAL), elem_id=elem_id("summary"))
        with gr.Row():
            strength = gr.Slider(label="Strength", minimum=0.0, maximum=2.0, step=0.05,
                                 value=1.0, elem_id=elem_id("strength"))
            lf = gr.Radio(label="Low frequencies", choices=["sampled", "zero"],
                          value="sampled", elem_id=elem_id("lf"))
        mean_controls = []
        for c in range(MAX_CHANNELS):
            with gr.Row():
                fix = gr.Checkbox(label=f"Set channel {c} mean ({CHANNEL_HINTS[c]})",
                                  value=False, elem_id=elem_id(f"fix_mean_{c}"))
                mean = gr.Slider(label=f"Channel {c} mean", minimum=-3.0, maximum=3.0,
                                 step=0.05, value=0.0, elem_id=elem_id(f"mean_{c}"))
            mean_controls += [fix, mean]
        seed = gr.Number(label="Leak seed (-1: each image's own seed)", value=-1, precision=0,
                         elem_id=elem_id("seed"))
        with gr.Accordion("Low-frequency controls: gradients, colour, reference image",
                          open=False, elem_id=elem_id("lowfreq")):
            gradient_controls = []
            for c in range(MAX_CHANNELS):
                with gr.Row():
                    for name, uv in GRADIENT_ARGS.items():
                        brighter = "left" if uv == (0, 1) else "top"
                        fix_g = gr.Checkbox(label=f"Set channel {c} {GRADIENT_NAMES[uv]}",
                                            value=False, elem_id=elem_id(f"fix_{name}_{c}"))
                        value_g = gr.Slider(label=f"Channel {c} {GRADIENT_NAMES[uv]} (+: "
                                            f"brighter {brighter})", minimum=-3.0,
                                            maximum=3.0, step=0.05, value=0.0,
                                            elem_id=elem_id(f"{name}_{c}"))
                        gradient_controls += [fix_g, value_g]
            with gr.Row():
                fix_colour = gr.Checkbox(label="Colour target (sets the channel means not set "
                                         "above; approximate)", value=False,
                                         elem_id=elem_id("fix_colour"))
                colour = gr.ColorPicker(label="Target colour", value="#808080",
                                        elem_id=elem_id("colour"))
                predicted = gr.HTML(elem_id=elem_id("predicted_colour"))
            reference = gr.Image(label="Reference image: its low frequencies become the "
                                 "leak's (encoded with the loaded VAE)", type="pil",
                                 elem_id=elem_id("reference"))
        with gr.Accordion("Preview", open=False):
            preview_btn = gr.Button("Preview leak", elem_id=elem_id("preview"))
            preview_img = gr.Image(label="1 leak | 2 plain start, low frequencies | 3 start "
                                   "with the leak, low frequencies", interactive=False,
                                   type="pil")
            preview_note = gr.HTML()
        with gr.Accordion("Fit a preset", open=False):
            folder = gr.Textbox(label="Image folder, .zip or http(s) URL of a .zip (on the "
                                "WebUI machine)")
            name = gr.Textbox(label="Preset name")
            with gr.Row():
                kind = gr.Radio(label="Kind", choices=["pixel", "dct+pixel"], value="dct+pixel")
                n_components = gr.Slider(label="LF components", minimum=1, maximum=64, step=1,
                                         value=3)
                resolution = gr.Number(label="Resolution (0: model's native size)", value=0,
                                       precision=0)
            with gr.Row():
                crop = gr.Radio(label="Crop", choices=["center", "random"], value="center")
                crop_seed = gr.Number(label="Random crop seed", value=0, precision=0)
                batch_size = gr.Slider(label="Batch size (0: automatic)", minimum=0, maximum=64,
                                       step=1, value=0)
            with gr.Row():
                recursive = gr.Checkbox(label="Include sub-folders", value=False)
                overwrite = gr.Checkbox(label="Overwrite an existing preset", value=False)
            with gr.Row():
                fit_btn = gr.Button("Fit", variant="primary")
                natural_btn = gr.Button("Get the natural-image preset",
                                        elem_id=elem_id("natural"))
                stop_btn = gr.Button("Stop")
            fit_result = gr.HTML(value="<i>Get the natural-image preset</i> downloads the "
                                 "archive set in Settings (default: the 128 COCO images the "
                                 "paper uses), or takes the folder or .zip above, and fits "
                                 "<b>natural-&lt;family&gt;</b> for the loaded model.")

    leak_controls = [preset, strength, lf, *mean_controls, seed, *gradient_controls,
                     fix_colour, colour, reference]
    mark_as_ours(getattr(enabled, "accordion", enabled),
                 os.path.basename(getattr(script, "filename", None) or "signal_leak_bias.py"))
    controls = [enabled, *leak_controls]

    refresh.click(fn=lambda name: (gr.update(choices=presets.dropdown_choices()),
                                   presets.summary(name)),
                  inputs=[preset], outputs=[preset, summary])
    preset.change(fn=presets.summary, inputs=[preset], outputs=[summary])
    fit_btn.click(fn=call_queue.wrap_gradio_gpu_call(make_fit_button(presets),
                                                     extra_outputs=[gr.update()]),
                  inputs=[folder, name, kind, n_components, resolution, crop, crop_seed,
                          recursive, overwrite, batch_size],
                  outputs=[preset, fit_result])
    natural_btn.click(fn=call_queue.wrap_gradio_gpu_call(make_natural_button(presets),
                                                         extra_outputs=[gr.update()]),
                      inputs=[folder, overwrite], outputs=[preset, fit_result])
    stop_btn.click(fn=lambda: shared.state.interrupt(), inputs=[], outputs=[])
    image_inputs = [host_components.get(k) or gr.State(v)
                    for k, v in (("seed", -1), ("width", 512), ("height", 512))]
    preview_btn.click(fn=make_preview(hooks), inputs=[*image_inputs, *leak_controls],
                      outputs=[preview_img, preview_note])
    colour.change(fn=make_colour_preview(hooks), inputs=[colour, *mean_controls],
                  outputs=[predicted])

    script.infotext_fields = []
    for control, arg in zip(controls, ARG_NAMES, strict=True):
        target = _paste_preset_target(presets) if arg == "preset" else _paste_target(arg)
        field = PasteField(control, target, api=None) if PasteField else (control, target)
        script.infotext_fields.append(field)
    script.paste_field_names = [target for _, target in script.infotext_fields]
    return controls
