"""The extension's entries in the WebUI's Settings tab."""

from __future__ import annotations

TITLE = "Signal Leak Bias"
OPT_DIR = "signal_leak_presets_dir"
OPT_ALLOW = "signal_leak_allow_other_families"
OPT_INNER = "signal_leak_inner_passes"
OPT_NATURAL_URL = "signal_leak_natural_url"
# The 128 COCO images the paper fits its natural-image statistics on (Ultralytics' release
# asset; the images are under their authors' Creative Commons licences).
NATURAL_URL = "https://github.com/ultralytics/yolov5/releases/download/v1.0/coco128.zip"


def register() -> None:
    """``on_ui_settings`` callback."""
    import gradio as gr
    from modules import shared

    section = ("signal_leak", TITLE)
    shared.opts.add_option(OPT_DIR, shared.OptionInfo(
        "", "Folder for your presets (empty: models/signal_leak); new fits are saved here",
        section=section))
    shared.opts.add_option(OPT_ALLOW, shared.OptionInfo(
        False, "Allow presets from other model families (their latent space may differ)",
        gr.Checkbox, section=section))
    shared.opts.add_option(OPT_NATURAL_URL, shared.OptionInfo(
        NATURAL_URL, "Image archive for 'Get the natural-image preset' (a .zip URL, a local "
        ".zip or a folder)", section=section))
    shared.opts.add_option(OPT_INNER, shared.OptionInfo(
        False, "Apply the leak in other extensions' inner img2img passes too (ADetailer's "
        "face and hand fixes; off: those passes keep their colours)", gr.Checkbox,
        section=section))
