"""Pytest fixtures and the ``Host`` driver for the WebUI stand-in (see README.md).

Importing it puts ``tests/standin`` FIRST on ``sys.path``, so ``import modules`` is the stand-in.
"""

import contextlib
import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

STANDIN_DIR = Path(__file__).resolve().parent


sys.path[:] = [str(STANDIN_DIR), *(p for p in sys.path if p != str(STANDIN_DIR))]
if "modules" in sys.modules and Path(sys.modules["modules"].__file__ or "").parent.parent \
        != STANDIN_DIR:
    raise RuntimeError(f"another 'modules' package is imported: {sys.modules['modules']!r}")

import pytest  # noqa: E402
import torch  # noqa: E402
from modules import (  # noqa: E402
    call_queue,
    devices,
    errors,
    infotext_utils,
    paths,
    processing,
    script_callbacks,
    scripts,
    sd_models,
    sd_vae,
    shared,
    standin_gradio,
)
from modules.api import api as standin_api  # noqa: E402


def real_gradio_available():
    loaded = sys.modules.get("gradio")
    if loaded is not None:
        return not standin_gradio.is_headless(loaded)
    return importlib.util.find_spec("gradio") is not None


def install_headless_gradio(force=False):
    """Make ``import gradio`` give ``headless_gradio`` when the real one is missing (or with
    ``force``) until the test's host fixture ends. Call it BEFORE loading an extension."""
    if real_gradio_available() and not force:
        return False
    import headless_gradio

    sys.modules["gradio"] = headless_gradio
    sys.modules.pop("modules.ui_components", None)  # rebuilt on headless_gradio when imported
    return True


def start_with_extension(host, script, mode="ui", with_app=False):
    """The usual set-up of an extension test: ``import gradio`` falls back to the headless
    stand-in, ``script`` is loaded, and ``host`` starts in ``mode``; returns the app or None."""
    install_headless_gradio()
    host.load_extension_script(script)
    return host.start(mode=mode, with_app=with_app)


def _uninstall_headless_gradio():
    """Fixture teardown: so that ``pytest.importorskip("gradio")`` skips in later tests."""
    if standin_gradio.is_headless(sys.modules.get("gradio", standin_gradio)):
        sys.modules.pop("gradio", None)
        sys.modules.pop("modules.ui_components", None)


@dataclasses.dataclass
class GenerationResult:
    """What ``Host.txt2img``/``Host.img2img`` return."""

    p: Any
    processed: Any
    errors: list = dataclasses.field(default_factory=list)

    records = property(lambda self: self.p.standin_records)
    pbes_calls = property(lambda self: self.p.standin_pbes_calls)
    infotexts = property(lambda self: self.processed.infotexts)

    def record(self, pass_name="txt2img", batch=0):
        """The one sampler record of this pass and batch."""
        found = [r for r in self.records if r["pass"] == pass_name and r["batch"] == batch]
        assert len(found) == 1, f"want one {pass_name!r} record for batch {batch}: {found}"
        return found[0]


def make_test_image(width=64, height=64, seed=0):
    """A deterministic RGB picture: colour ramps plus a little noise."""
    import numpy as np
    from PIL import Image

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([xs / max(width - 1, 1), ys / max(height - 1, 1),
                    0.5 + 0.3 * np.cos((xs + 2 * ys) / 9.0)], axis=-1)
    rgb += np.random.default_rng(seed).normal(0.0, 0.02, rgb.shape)
    return Image.fromarray((rgb.clip(0, 1) * 255).round().astype(np.uint8), "RGB")


def _mask_image(mask):
    """A PIL "L" mask from a PIL image or an ``[H, W]`` tensor/array in [0, 1] (1 = repaint)."""
    if mask is None or hasattr(mask, "convert"):
        return mask
    from PIL import Image

    values = torch.as_tensor(mask).detach().float().clamp(0, 1).cpu().numpy()
    return Image.fromarray((values * 255).round().astype("uint8"), "L")


def reset_all(tmp_path):
    """Reset every piece of module-level stand-in state in place; data dir = ``tmp_path``."""
    os.makedirs(tmp_path, exist_ok=True)
    paths.set_data_path(tmp_path)
    shared.reset()
    shared.sd_model = shared.demo = sd_vae.loaded_vae_file = None
    devices.dtype_vae = torch.float32
    script_callbacks.clear_callbacks()
    for registry in (errors.reported, processing.standin_log, sd_models.reload_calls,
                     scripts.scripts_data, scripts.postprocessing_scripts_data,
                     scripts.standin_hook_log):
        registry.clear()
    sd_models.checkpoints_list.clear()
    scripts.scripts_txt2img, scripts.scripts_img2img = scripts.ScriptRunner(), \
        scripts.ScriptRunner()
    scripts.scripts_current, scripts.current_basedir = None, paths.script_path
    if "modules.ui_components" in sys.modules:
        sys.modules["modules.ui_components"].InputAccordion.global_index = 0


DEFAULTS = dict(prompt="a test prompt", negative_prompt="", seed=1234, steps=20,
                sampler_name="Euler", scheduler="Automatic", width=64, height=64, batch_size=1,
                n_iter=1, cfg_scale=7.0)


class Host:
    """A freshly reset stand-in WebUI; data dir ``tmp_path`` (models in ``tmp_path/models``)."""

    def __init__(self, tmp_path, *, model="sd1", inpainting=False, parameterization="eps",
                 dtype_vae=torch.float32):
        self.tmp_path = Path(tmp_path)
        reset_all(self.tmp_path)
        devices.dtype_vae = dtype_vae
        self.modules, self.demo, self.app, self.ui_built = [], None, None, False
        self.set_model(model, inpainting=inpainting, parameterization=parameterization)
        scripts.load_builtin_scripts()

    def set_model(self, family="sd1", *, inpainting=False, parameterization="eps"):
        model = sd_models.FakeSdModel(family, inpainting=inpainting,
                                      parameterization=parameterization)
        model.sd_checkpoint_info.register()
        shared.sd_model = self.sd_model = model
        script_callbacks.model_loaded_callback(model)
        return model

    def load_extension_script(self, path, basedir=None):
        module = scripts.load_script_file(path, basedir)
        self.modules.append(module)
        return module

    @property
    def xyz_grid(self):
        return next((d.module for d in scripts.scripts_data
                     if d.script_class.__module__ == "xyz_grid.py"), None)

    def runner(self, tab="txt2img"):
        return scripts.scripts_img2img if tab == "img2img" else scripts.scripts_txt2img

    def script(self, title, tab="txt2img"):
        for s in self.runner(tab).scripts:
            if s.title().lower() == title.lower():
                return s
        raise KeyError(title)

    def build_ui(self, gradio="auto"):
        """What ``ui.create_ui()`` does for scripts, inside a ``gr.Blocks``."""
        gr = standin_gradio.gradio()
        headless = standin_gradio.is_headless(gr)
        if gradio == "real" and headless:
            raise RuntimeError("the real gradio is not importable")
        if gradio == "headless" and not headless:
            raise RuntimeError("real gradio is in use: call install_headless_gradio(force=True)")
        with gr.Blocks(analytics_enabled=False) as demo:
            script_callbacks.ui_settings_callback()  # settings come first (ui.py:262)
            for is_img2img, runner in ((False, scripts.scripts_txt2img),
                                       (True, scripts.scripts_img2img)):
                scripts.scripts_current = runner
                runner.initialize_scripts(is_img2img=is_img2img)
                runner.prepare_ui()
                runner.setup_ui()
            scripts.scripts_current = None
        self.demo = shared.demo = None if headless else demo
        self.ui_built = True
        return self.demo

    def make_app(self):
        if importlib.util.find_spec("fastapi") is None:
            return None
        from fastapi import FastAPI

        self.app = FastAPI()
        return self.app

    def start(self, mode="ui", gradio="auto", with_app=True):
        """A1111 ``webui.py`` start-up order (see README); returns the app or None."""
        if mode not in ("ui", "api"):
            raise ValueError(f"mode must be 'ui' or 'api', not {mode!r}")
        self.app = self.make_app() if with_app else None
        if mode == "ui":
            script_callbacks.before_ui_callback()
            self.build_ui(gradio)
        else:
            shared.cmd_opts.api = shared.cmd_opts.nowebui = True
            self.build_ui(gradio)
            script_callbacks.before_ui_callback()
        if self.app is not None:
            script_callbacks.app_started_callback(self.demo if mode == "ui" else None, self.app)
        return self.app

    def ui_args(self, tab="txt2img", overrides=None):
        """What the UI sends; ``overrides``: {title: [slice values] or {index: value}}."""
        if not self.ui_built:
            self.build_ui()
        args = [0] + [getattr(c, "value", None) for c in self.runner(tab).inputs[1:]]
        for title, values in (overrides or {}).items():
            script = self.script(title, tab)
            for i, value in (values.items() if isinstance(values, dict) else enumerate(values)):
                assert 0 <= i < script.args_to - script.args_from, (title, i)
                args[script.args_from + i] = value
        return args

    def api_args(self, tab="txt2img", alwayson_scripts=None):
        """What the API builds from ``{"<title>": {"args": [...]}}``."""
        if not self.ui_built:
            self.build_ui()
        defaults = standin_api.init_default_script_args(self.runner(tab))
        return standin_api.init_script_args(defaults, self.runner(tab),
                                            alwayson_scripts=alwayson_scripts)

    def make_txt2img(self, **kwargs):
        return processing.StableDiffusionProcessingTxt2Img(**{**DEFAULTS, **kwargs})

    def make_img2img(self, init_images=None, mask=None, **kwargs):
        size = (kwargs.get("width", 64), kwargs.get("height", 64))
        params = {**DEFAULTS, "denoising_strength": 0.75, "mask_blur": 0,
                  "inpaint_full_res": False, **kwargs}
        return processing.StableDiffusionProcessingImg2Img(
            init_images=init_images or [make_test_image(*size)], mask=_mask_image(mask),
            **params)

    def _run(self, p, tab, script_args, api):
        runner = self.runner(tab)
        if script_args is None:
            script_args = self.api_args(tab) if api else self.ui_args(tab)
        before = len(errors.reported)
        shared.state.begin(job=f"scripts_{tab}" if api else f"task({tab})")
        try:
            with contextlib.closing(p):
                p.scripts = runner
                p.is_api = bool(api)
                p.script_args = tuple(script_args) if api else list(script_args)
                outcome = None if api else runner.run(p, *p.script_args)
                if outcome is None:
                    outcome = processing.process_images(p)
        finally:
            shared.state.end()
        return GenerationResult(p, outcome, list(errors.reported[before:]))

    def txt2img(self, script_args=None, *, api=False, **kwargs):
        return self._run(self.make_txt2img(**kwargs), "txt2img", script_args, api)

    def img2img(self, script_args=None, *, api=False, init_images=None, mask=None, **kwargs):
        p = self.make_img2img(init_images=init_images, mask=mask, **kwargs)
        return self._run(p, "img2img", script_args, api)

    def gpu_call(self, fn, *args, extra_outputs=None):
        return call_queue.wrap_gradio_gpu_call(fn, extra_outputs=extra_outputs)(*args)

    def paste(self, infotext, tab="txt2img"):
        """``[(component, update_dict), ...]`` as the paste button computes them."""
        fields = self.runner(tab).infotext_fields
        return list(zip([f[0] for f in fields], infotext_utils.paste_infotext(fields, infotext),
                        strict=True))


@pytest.fixture
def fresh_host(tmp_path):
    yield Host(tmp_path)
    reset_all(tmp_path)
    _uninstall_headless_gradio()


@pytest.fixture
def fresh_host_factory(tmp_path):
    """``make(model="sdxl"|"sd2", inpainting=True, parameterization="v", dtype_vae=...)``."""
    yield lambda **kwargs: Host(tmp_path, **kwargs)
    reset_all(tmp_path)
    _uninstall_headless_gradio()
