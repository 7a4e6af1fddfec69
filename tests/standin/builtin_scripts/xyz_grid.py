"""Stand-in for A1111's ``scripts/xyz_grid.py``: loaded as module "xyz_grid.py" and found
through ``scripts_data`` (HOST-NOTES 7). ``AxisOption`` and variants (214-235), ``axis_options``
(the head of A1111's list), ``format_value_add_label`` (170-181); ``ui()`` filters options by
tab when built (420). ``run_axis(p, opt, values)`` (stand-in driver) does per cell
``pc = copy(p)`` -- SHALLOW: all cells share ``extra_generation_params`` -- then
``opt.apply(pc, x, xs)`` and ``process_images(pc)`` (711-715). No value parsing, no grid.
"""

import copy

from modules import processing, scripts, shared
from modules.standin_gradio import gradio


def format_value(p, opt, x):
    return round(x, 8) if isinstance(x, float) else x


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {format_value(p, opt, x)}"


def set_field(name):
    """An ``apply`` storing the cell value on the per-cell ``p``."""
    return lambda p, x, xs: setattr(p, name, x)


class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None,
                 cost=0.0, choices=None, prepare=None):
        self.label, self.type, self.apply = label, type, apply
        self.format_value, self.confirm, self.cost = format_value, confirm, cost
        self.choices, self.prepare = choices, prepare


class AxisOptionImg2Img(AxisOption):
    is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    is_img2img = False


axis_options = [
    AxisOption("Nothing", str, lambda p, x, xs: None, format_value=lambda p, opt, x: ""),
    AxisOption("Seed", int, set_field("seed")),
    AxisOption("Var. seed", int, set_field("subseed")),
    AxisOption("Var. strength", float, set_field("subseed_strength")),
    AxisOption("Steps", int, set_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, set_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, set_field("cfg_scale")),
]


def run_axis(p, opt, values):
    """One axis of cells -> ``(results, cell_ps, labels)``, per cell as the X/Y/Z loop does."""
    results, cells, labels = [], [], []
    for x in values:
        if shared.state.interrupted:
            break
        pc = copy.copy(p)
        pc.styles = list(pc.styles)
        opt.apply(pc, x, values)
        cells.append(pc)
        labels.append(opt.format_value(p, opt, x))
        results.append(processing.process_images(pc))
    return results, cells, labels


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        gr = gradio()
        self.current_axis_options = [o for o in axis_options
                                     if type(o) is AxisOption or o.is_img2img == is_img2img]
        names = [o.label for o in self.current_axis_options]
        with gr.Row():
            x_type = gr.Dropdown(label="X type", choices=names, value=names[1], type="index",
                                 elem_id=self.elem_id("x_type"))
            x_values = gr.Textbox(label="X values", elem_id=self.elem_id("x_values"))
        return [x_type, x_values]  # (selecting the script in the UI is not mirrored: no run())
