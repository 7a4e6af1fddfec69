"""Stand-in for A1111 ``modules/scripts.py``: Script base, script loading, ScriptRunner.

``Script`` hooks as in 52-345 (no mask-blend, mask-overlay, composite or component hooks);
a hook runs only for always-on scripts whose class overrides it (797-799), in load order,
on ``p.script_args[args_from:args_to]`` positionally, failures reported (820-996).
``basedir()`` is valid only while the script file is imported; loading (488-524,
script_loading.py:10-16) names the module "x.py" (not in ``sys.modules``), puts the extension
folder on ``sys.path`` only during the import and registers EVERY ``Script`` subclass in its
globals. ``setup_ui`` (634-718): ``inputs = [None]``, always-on scripts first, the Script
dropdown in slot 0, ``name = title().lower()``, ``api_info``, infotext/paste fields collected.
Stand-in only: ``standin_hook_log`` gets ``(hook, title, tabname)`` per hook call.
"""

import importlib.util
import inspect
import os
import re
import sys
from collections import namedtuple

from modules import errors, paths
from modules.standin_gradio import gradio

AlwaysVisible = object()


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    name = section = filename = args_from = args_to = tabname = group = None
    alwayson = is_txt2img = is_img2img = setup_for_ui_only = False
    create_group = True
    infotext_fields = paste_field_names = api_info = controls = None

    def title(self):
        """The name shown in the UI; lower-cased it is ``name`` and the API key."""
        raise NotImplementedError()

    def ui(self, is_img2img):
        """Create components; the returned list's values reach the hooks positionally."""

    def show(self, is_img2img):
        """False: hidden; True: selectable in the Script dropdown; AlwaysVisible: always on."""
        return True

    def run(self, p, *args):
        """Selectable scripts: do the whole job, return a Processed."""

    def setup(self, p, *args):
        """Once p has both its scripts and its script args."""

    def before_process(self, p, *args):
        """First thing in process_images."""

    def process(self, p, *args):
        """Seeds and prompts fixed, before p.init()."""

    def before_process_batch(self, p, *args, **kwargs):
        """Per batch, first; kwargs: batch_number, prompts, seeds, subseeds."""

    def after_extra_networks_activate(self, p, *args, **kwargs):
        """Per batch, unless p.disable_extra_networks."""

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Before each sampler call (twice per batch with hires); kwargs: x, noise, c, uc."""

    def process_batch(self, p, *args, **kwargs):
        """Per batch, before the conds; kwargs: batch_number, prompts, seeds, subseeds."""

    def postprocess_batch(self, p, *args, **kwargs):
        """Per batch after decoding; kwargs also carry ``images`` ([B, 3, H, W] in 0..1)."""

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        """Like postprocess_batch with ``pp.images`` an editable list."""

    def post_sample(self, p, ps, *args):
        """After sampling, before decoding (``ps.samples`` may already be decoded)."""

    def postprocess_image(self, p, pp, *args):
        """Per image; replace ``pp.image`` to change it."""

    def postprocess(self, p, processed, *args):
        """After the whole job."""

    def describe(self):
        return ""

    def elem_id(self, item_id):
        """``script_[<tab>_]<title as identifier>_<item_id>``; the tab part only for scripts
        shown the same way on both tabs."""
        both_tabs = self.show(True) == self.show(False)
        tab = f"{'img2img' if self.is_img2img else 'txt2img'}_" if both_tabs else ""
        slug = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{slug}_{item_id}"

    def before_hr(self, p, *args):
        """Before the hires pass of txt2img."""


current_basedir = paths.script_path


def basedir():
    return current_basedir


ScriptClassData = namedtuple("ScriptClassData", "script_class path basedir module")
scripts_data, postprocessing_scripts_data, standin_hook_log = [], [], []


def load_script_file(path, basedir=None):
    """Import one script file as A1111's ``load_scripts`` does; None (and a report) on error."""
    global current_basedir
    path = os.path.abspath(str(path))
    base = os.path.abspath(str(basedir)) if basedir else os.path.dirname(os.path.dirname(path))
    kept_path, module = sys.path, None
    try:
        if base != paths.script_path:
            sys.path = [base, *sys.path]
        current_basedir = base
        spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in list(vars(module).values()):
            if inspect.isclass(value) and issubclass(value, Script):
                scripts_data.append(ScriptClassData(value, path, base, module))
    except Exception:
        errors.report(f"Error loading script: {os.path.basename(path)}", exc_info=True)
        module = None
    finally:
        sys.path, current_basedir = kept_path, paths.script_path
    return module


def load_builtin_scripts():
    folder = os.path.join(paths.script_path, "builtin_scripts")
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".py")):
        load_script_file(os.path.join(folder, name), paths.script_path)


def _guarded(func, filename, what, *args, default=None):
    """Call ``func``; on an exception report it (as A1111's ``wrap_call``) and give default."""
    try:
        return func(*args)
    except Exception:
        errors.report(f"Error calling: {filename}/{what}", exc_info=True)
    return default


def _label(script):
    return _guarded(script.title, script.filename, "title") or script.filename


class ScriptRunner:
    def __init__(self):
        self.scripts, self.selectable_scripts, self.alwayson_scripts = [], [], []
        self.titles, self.title_map = [], {}
        self.infotext_fields, self.paste_field_names, self.inputs = [], [], [None]

    def initialize_scripts(self, is_img2img):
        for bucket in (self.scripts, self.alwayson_scripts, self.selectable_scripts):
            bucket.clear()
        for data in scripts_data:
            try:
                script = data.script_class()
            except Exception:
                errors.report(f"Error # failed to initialize Script {data.module}: ",
                              exc_info=True)
                continue
            script.filename = data.path
            script.is_txt2img, script.is_img2img = not is_img2img, is_img2img
            script.tabname = ("txt2img", "img2img")[bool(is_img2img)]
            shown = script.show(script.is_img2img)
            if not shown:
                continue
            script.alwayson = shown == AlwaysVisible
            (self.alwayson_scripts if script.alwayson else self.selectable_scripts).append(script)
            self.scripts.append(script)

    def create_script_ui(self, script):
        from modules.api.api import ScriptArg, ScriptInfo

        script.args_from = script.args_to = len(self.inputs)
        try:
            controls = _guarded(script.ui, script.filename, "ui", script.is_img2img)
            script.controls = controls
            if controls is None:
                return
            script.name = _guarded(script.title, script.filename, "title",
                                   default=script.filename).lower()
            described, source = [], os.path.basename(script.filename)
            for control in controls:
                control.custom_script_source = source
                arg = ScriptArg(label=getattr(control, "label", None) or "")
                for key in ("value", "minimum", "maximum", "step"):
                    if getattr(control, key, None) is not None:
                        setattr(arg, key, getattr(control, key))
                if getattr(control, "choices", None) is not None:
                    arg.choices = [c[0] if isinstance(c, tuple) else c for c in control.choices]
                described.append(arg)
            script.api_info = ScriptInfo(name=script.name, is_img2img=script.is_img2img,
                                         is_alwayson=script.alwayson, args=described)
            self.infotext_fields += script.infotext_fields or []
            self.paste_field_names += script.paste_field_names or []
            self.inputs += controls
            script.args_to = len(self.inputs)
        except Exception:
            errors.report(f"Error creating UI for {script.name or script.filename}: ",
                          exc_info=True)

    def _build_section(self, scripts_here):
        gr = gradio()
        for script in scripts_here:
            if not script.create_group:
                self.create_script_ui(script)
                continue
            with gr.Group(visible=script.alwayson) as box:
                self.create_script_ui(script)
            script.group = box

    def prepare_ui(self):
        self.inputs = [None]

    def setup_ui(self):
        self.title_map = {_label(s).lower(): s for s in self.scripts}
        self.titles = [_label(s) for s in self.selectable_scripts]
        self._build_section(self.alwayson_scripts)
        self.inputs[0] = gradio().Dropdown(label="Script", elem_id="script_list", value="None",
                                           choices=["None", *self.titles], type="index")
        self._build_section(self.selectable_scripts)
        return self.inputs

    def script(self, title):
        return self.title_map.get(str(title).lower())

    def run(self, p, *args):
        if not args or not args[0]:
            return None
        script = self.selectable_scripts[args[0] - 1]
        return script.run(p, *args[script.args_from:script.args_to])

    def ordered_scripts(self, hook):
        """The always-on scripts whose class overrides ``hook``."""
        plain = getattr(Script, hook, None)
        return [s for s in self.alwayson_scripts if getattr(type(s), hook, None) is not plain]

    def _each(self, hook, p, *lead, skip_if=None, **kwargs):
        for script in self.ordered_scripts(hook):
            if skip_if and getattr(script, skip_if, False):
                continue
            standin_hook_log.append((hook, _label(script), script.tabname))
            try:
                own_args = p.script_args[script.args_from:script.args_to]
                getattr(script, hook)(p, *lead, *own_args, **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        """``setup`` hooks; the API (``is_ui=False``) skips ``setup_for_ui_only`` scripts."""
        self._each("setup", p, skip_if=None if is_ui else "setup_for_ui_only")


def _dispatcher(hook, lead_count):
    """A ScriptRunner method for ``hook``: A1111 passes ``lead_count`` objects (``processed``,
    ``pp``...) before the script's own args; ``images`` goes by keyword (scripts.py:876)."""

    def dispatch(self, p, *lead, **kwargs):
        if hook == "postprocess_batch":
            kwargs, lead = {"images": lead[0], **kwargs}, ()
        self._each(hook, p, *lead[:lead_count], **kwargs)

    dispatch.__name__ = dispatch.__qualname__ = hook
    return dispatch


for _hook in ("before_process", "process", "before_process_batch", "before_hr",
              "after_extra_networks_activate", "process_batch", "process_before_every_sampling",
              "postprocess_batch"):
    setattr(ScriptRunner, _hook, _dispatcher(_hook, 0))
for _hook in ("postprocess", "postprocess_batch_list", "post_sample", "postprocess_image"):
    setattr(ScriptRunner, _hook, _dispatcher(_hook, 1))

scripts_txt2img, scripts_img2img, scripts_current = ScriptRunner(), ScriptRunner(), None
