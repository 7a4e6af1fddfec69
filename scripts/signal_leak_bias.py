"""Signal Leak Bias: the AUTOMATIC1111 WebUI glue (an AlwaysOnScript).

Everything that is maths or parsing lives in the ``slb`` package beside this folder; this
file only wires the host to it: the accordion UI, the hooks that edit the sampler's start
(txt2img) or the init latent (img2img), infotext, X/Y/Z axes, settings and the
``/signal-leak/v1/`` routes. Host facts it relies on are in HOST-NOTES (A1111 v1.10.1).
"""

from __future__ import annotations

import html
import os
import sys
import time
from pathlib import Path

import gradio as gr
import torch
from modules import (
    call_queue,
    devices,
    paths,
    script_callbacks,
    scripts,
    sd_samplers_kdiffusion,
    sd_samplers_timesteps,
    shared,
)

# A1111 puts the extension folder on sys.path only while this file is imported, so every
# part of the library is imported now, never lazily. Other loaders get the folder added for
# the duration of these imports only.
EXTENSION_DIR = Path(__file__).resolve().parents[1]
_added_path = str(EXTENSION_DIR) not in sys.path
if _added_path:
    sys.path.insert(0, str(EXTENSION_DIR))

from slb import host  # noqa: E402
from slb import preview as slb_preview  # noqa: E402
from slb.api import ApiError, FitRequest, parse_fit_request, presets_payload, sample_payload  # noqa: E402
from slb.fitting import FitInterrupted, fit  # noqa: E402
from slb.generation import AppliedMarks, LeakEngine, LeakPlan, plan_generation  # noqa: E402
from slb.images import NoUsableImagesError  # noqa: E402
from slb.infotext import KEY, paste_value, remove_entries  # noqa: E402
from slb.library import PresetLibrary  # noqa: E402
from slb.mixing import StartConvention, vp_target  # noqa: E402
from slb.preset import PresetError, save_preset  # noqa: E402
from slb.settings import (  # noqa: E402
    ARG_NAMES,
    MANUAL,
    MAX_CHANNELS,
    LeakSettings,
    SettingsError,
    settings_from_args,
)

if _added_path:
    sys.path.remove(str(EXTENSION_DIR))

from modules.ui_components import InputAccordion, ToolButton  # noqa: E402

try:  # the WebUI always ships FastAPI; module level so route annotations resolve
    from fastapi import HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
except ImportError:  # pragma: no cover - only in test environments without it
    HTTPException = Request = run_in_threadpool = None  # type: ignore[assignment, misc]

try:  # A1111 >= 1.7 and Forge
    from modules.infotext_utils import PasteField
except ImportError:  # pragma: no cover - older hosts
    PasteField = None  # type: ignore[assignment]

TITLE = "Signal Leak Bias"
OPT_DIR = "signal_leak_presets_dir"
OPT_ALLOW = "signal_leak_allow_other_families"
XYZ_PREFIX = "[Signal Leak] "
CHANNEL_HINTS = ("brightness", "colour axis 1", "colour axis 2", "pattern / contrast")
ENGINE = LeakEngine()
_LIBRARY: PresetLibrary | None = None


# --- presets ---------------------------------------------------------------------------

def user_presets_dir() -> Path:
    configured = shared.opts.data.get(OPT_DIR, "") if hasattr(shared.opts, "data") else ""
    return Path(configured or os.path.join(paths.models_path, "signal_leak"))


def library() -> PresetLibrary:
    """The preset list: the extension's ``stats/`` first, then the user folder."""
    global _LIBRARY
    folders = [EXTENSION_DIR / "stats", user_presets_dir()]
    if _LIBRARY is None or _LIBRARY.folders != folders:
        _LIBRARY = PresetLibrary(folders)
    return _LIBRARY


def preset_choices() -> list[str]:
    return [MANUAL] + [e.name for e in library().usable()]


def presets_summary(name: str) -> str:
    """HTML: the chosen preset's summary line, then any unusable files with their reason."""
    entries = library().entries()  # one scan of the folders for both parts
    lines = []
    if name and name != MANUAL:
        entry = next((e for e in entries if e.name == name and e.usable), None)
        if entry is not None:
            lines.append(f"<b>{html.escape(name)}</b>: {html.escape(entry.preset.summary())}")
        else:
            lines.append(f"<span style='color:var(--error-text-color,#c00)'>no usable preset "
                         f"named {html.escape(name)}</span>")
    else:
        lines.append("Manual: the leak is the fixed channel means below (0 where not set).")
    for entry in (e for e in entries if not e.usable):
        lines.append(f"<span style='opacity:.75'>unusable: {html.escape(entry.path.name)}: "
                     f"{html.escape(entry.reason)}</span>")
    return "<br>".join(lines)


# --- fitting (UI button and API route) -------------------------------------------------------

def _model_metadata(sd_model: object) -> dict:
    try:
        from modules import sd_vae
        vae_file = getattr(sd_vae, "loaded_vae_file", None)
    except ImportError:  # pragma: no cover - hosts without that module
        vae_file = None
    return {"model_family": host.model_family(sd_model),
            "scale_factor": host.scale_factor(sd_model),
            "vae": host.vae_name(sd_model, vae_file=vae_file)}


def run_fit(req: FitRequest, progress=None) -> tuple[object, Path]:  # noqa: ANN001
    """Fit with the loaded model's VAE and save to the user folder; caller holds the queue."""
    folder = Path(req.folder).expanduser()
    if not folder.is_dir():
        raise ApiError(422, f"folder not found: {req.folder}")
    target = user_presets_dir() / f"{req.name}.safetensors"
    if target.exists() and not req.overwrite:
        raise ApiError(409, f"preset {req.name!r} already exists; enable overwrite to replace it")
    sd_model = shared.sd_model
    size = req.resolution or host.native_resolution(sd_model)
    encode, mode = host.vae_encoder(sd_model, devices.device, devices.dtype_vae)
    shared.state.job = "Signal leak fit"
    shared.state.textinfo = f"Fitting {req.name}"

    def report(done: int, total: int) -> None:
        shared.state.job_count, shared.state.job_no = total, done
        shared.state.textinfo = f"Signal leak fit: {done}/{total} images"
        if progress is not None:
            progress((done, total), desc="Encoding images", unit="images")

    result = fit(folder, encode, req.kind, req.n_components, size=size, crop=req.crop,
                 recursive=req.recursive, batch_size=req.batch_size, device=devices.device,
                 dtype=devices.dtype_vae, progress=report,
                 should_stop=lambda: bool(shared.state.interrupted), **_model_metadata(sd_model))
    result.preset.metadata["encode"] = mode[0] if mode else "mean"
    path = save_preset(result.preset, user_presets_dir(), req.name, overwrite=req.overwrite)
    devices.torch_gc()
    return result, path


def _fit_summary(result: object, path: Path) -> str:
    skipped = "".join(f"<li>{html.escape(s.path)}: {html.escape(s.reason)}</li>"
                      for s in result.skipped[:20])
    more = f"<li>… and {len(result.skipped) - 20} more</li>" if len(result.skipped) > 20 else ""
    notes = "".join(f"<br>{html.escape(w)}" for w in result.warnings)
    return (f"Fitted <b>{result.images}</b> images in {result.seconds:.1f} s, "
            f"{len(result.skipped)} skipped; saved to {html.escape(str(path))}{notes}"
            + (f"<ul>{skipped}{more}</ul>" if skipped else ""))


def _fit_button(folder: str, name: str, kind: str, n_components: float, resolution: float,
                crop: str, crop_seed: float, recursive: bool, overwrite: bool, batch_size: float,
                progress: gr.Progress = gr.Progress()) -> tuple:
    """The Fit button; runs inside the host's GPU queue wrapper (never during a generation)."""
    try:
        req = parse_fit_request({
            "folder": str(folder or "").strip(), "name": str(name or "").strip(), "kind": kind,
            "n_components": int(n_components), "resolution": int(resolution or 0) or None,
            "crop": "center" if crop == "center" else f"random:{int(crop_seed or 0)}",
            "recursive": bool(recursive), "overwrite": bool(overwrite),
            "batch_size": int(batch_size)})
        result, path = run_fit(req, progress)
    except (ApiError, PresetError, NoUsableImagesError, ValueError) as exc:
        message = html.escape(getattr(exc, "detail", str(exc)))
        return gr.update(), f"<span class='error'>{message}</span>"
    except FitInterrupted:
        return gr.update(), "Stopped: nothing was saved."
    return gr.update(choices=preset_choices(), value=req.name), _fit_summary(result, path)


# --- preview ---------------------------------------------------------------------------

def _model_of(p: object = None) -> object:
    model = getattr(p, "sd_model", None)
    return model if model is not None else shared.sd_model


def _plan(settings: LeakSettings, sd_model: object) -> LeakPlan:
    """The plan for the loaded model, with the user's family setting."""
    return plan_generation(settings, library().get,
                           model_channels=host.latent_channels(sd_model),
                           model_family=host.model_family(sd_model),
                           allow_other_families=bool(shared.opts.data.get(OPT_ALLOW, False)))


def _preview(image_seed, width, height, *leak_args):  # noqa: ANN001, ANN201
    try:
        settings = settings_from_args([True, *leak_args])
        plan = _plan(settings, shared.sd_model)
        channels = host.latent_channels(shared.sd_model)
        if plan.reason:
            return None, html.escape(plan.reason)
        seed = int(image_seed) if image_seed is not None and int(image_seed) >= 0 else 0
        shape = (channels, max(int(height or 512) // 8, 1), max(int(width or 512) // 8, 1))
        leak = ENGINE.draw(plan, shape, torch.device("cpu"), [seed])
        noise = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))
        conv = StartConvention.ve(14.6146)  # the SD schedule's largest sigma
        plain = vp_target(noise, leak, conv, 0.0)
        start = vp_target(noise, leak, conv, settings.strength)
        tiles = [_decode_cheap(t) for t in (leak * settings.strength, plain, start)]
        note = (f"Seed {seed}: leak L, the plain start, and the start with the leak "
                f"(VP form, sqrt(abar)={conv.leak_weight:.3f}).")
        return slb_preview.side_by_side(tiles), note
    except (SettingsError, PresetError, ValueError) as exc:
        return None, html.escape(str(exc))


def _decode_cheap(latent: torch.Tensor):  # noqa: ANN202
    from modules import sd_samplers_common
    try:
        rgb = sd_samplers_common.samples_to_images_tensor(latent.to(devices.device), 2)[0]
        arr = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu()
        return arr.numpy()
    except Exception:  # other latent spaces: our own linear map
        return slb_preview.latent_to_rgb(latent[0], host.model_family(shared.sd_model))


# --- the script ------------------------------------------------------------------------

class SignalLeakBiasScript(scripts.Script):
    sorting_priority = 15  # Forge's UI order

    def __init__(self) -> None:
        super().__init__()
        self.marks = AppliedMarks()
        self._host_components: dict[str, object] = {}

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> object:
        return scripts.AlwaysVisible

    def after_component(self, component: object, **kwargs: object) -> None:
        # the seed and size fields of this tab, for the Preview button
        elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
        tab = "img2img" if self.is_img2img else "txt2img"
        for key in ("seed", "width", "height"):
            if elem_id == f"{tab}_{key}":
                self._host_components[key] = component

    def ui(self, is_img2img: bool) -> list:
        with InputAccordion(False, label=TITLE, elem_id=self.elem_id("enabled")) as enabled:
            with gr.Row():
                preset = gr.Dropdown(label="Preset", choices=preset_choices(), value=MANUAL,
                                     elem_id=self.elem_id("preset"))
                refresh = ToolButton(value="\U0001f504", elem_id=self.elem_id("refresh"))
            summary = gr.HTML(value=presets_summary(MANUAL), elem_id=self.elem_id("summary"))
            with gr.Row():
                strength = gr.Slider(label="Strength", minimum=0.0, maximum=2.0, step=0.05,
                                     value=1.0, elem_id=self.elem_id("strength"))
                lf = gr.Radio(label="Low frequencies", choices=["sampled", "zero"],
                              value="sampled", elem_id=self.elem_id("lf"))
            mean_controls = []
            for c in range(MAX_CHANNELS):
                with gr.Row():
                    fix = gr.Checkbox(label=f"Set channel {c} mean ({CHANNEL_HINTS[c]})",
                                      value=False, elem_id=self.elem_id(f"fix_mean_{c}"))
                    mean = gr.Slider(label=f"Channel {c} mean", minimum=-3.0, maximum=3.0,
                                     step=0.05, value=0.0, elem_id=self.elem_id(f"mean_{c}"))
                mean_controls += [fix, mean]
            seed = gr.Number(label="Leak seed (-1: each image's own seed)", value=-1, precision=0,
                             elem_id=self.elem_id("seed"))
            with gr.Accordion("Preview", open=False):
                preview_btn = gr.Button("Preview leak", elem_id=self.elem_id("preview"))
                preview_img = gr.Image(label="Leak | plain start | start with leak",
                                       interactive=False, type="pil")
                preview_note = gr.HTML()
            with gr.Accordion("Fit a preset", open=False):
                folder = gr.Textbox(label="Image folder (on the WebUI machine)")
                name = gr.Textbox(label="Preset name")
                with gr.Row():
                    kind = gr.Radio(label="Kind", choices=["pixel", "dct+pixel"],
                                    value="dct+pixel")
                    n_components = gr.Slider(label="LF components", minimum=1, maximum=64,
                                             step=1, value=3)
                    resolution = gr.Number(label="Resolution (0: model's native size)", value=0,
                                           precision=0)
                with gr.Row():
                    crop = gr.Radio(label="Crop", choices=["center", "random"], value="center")
                    crop_seed = gr.Number(label="Random crop seed", value=0, precision=0)
                    batch_size = gr.Slider(label="Batch size", minimum=1, maximum=64, step=1,
                                           value=4)
                with gr.Row():
                    recursive = gr.Checkbox(label="Include sub-folders", value=False)
                    overwrite = gr.Checkbox(label="Overwrite an existing preset", value=False)
                with gr.Row():
                    fit_btn = gr.Button("Fit", variant="primary")
                    stop_btn = gr.Button("Stop")
                fit_result = gr.HTML()

        leak_controls = [preset, strength, lf, *mean_controls, seed]
        controls = [enabled, *leak_controls]

        refresh.click(fn=lambda name: (gr.update(choices=preset_choices()), presets_summary(name)),
                      inputs=[preset], outputs=[preset, summary])
        preset.change(fn=presets_summary, inputs=[preset], outputs=[summary])
        fit_btn.click(fn=call_queue.wrap_gradio_gpu_call(_fit_button, extra_outputs=[gr.update()]),
                      inputs=[folder, name, kind, n_components, resolution, crop, crop_seed,
                              recursive, overwrite, batch_size],
                      outputs=[preset, fit_result])
        stop_btn.click(fn=lambda: shared.state.interrupt(), inputs=[], outputs=[])
        image_inputs = [self._host_components.get(k) or gr.State(v)
                        for k, v in (("seed", -1), ("width", 512), ("height", 512))]
        preview_btn.click(fn=_preview, inputs=[*image_inputs, *leak_controls],
                          outputs=[preview_img, preview_note])

        self.infotext_fields = []
        for control, arg in zip(controls, ARG_NAMES, strict=True):
            target = _paste_target(arg)
            field = PasteField(control, target, api=None) if PasteField else (control, target)
            self.infotext_fields.append(field)
        self.paste_field_names = [target for _, target in self.infotext_fields]
        return controls

    # --- hooks -----------------------------------------------------------------------------
    def process(self, p, *args) -> None:  # noqa: ANN001
        remove_entries(p.extra_generation_params)  # X/Y/Z cells share this dict
        p._slb_plan = None
        try:
            settings = settings_from_args(args)
            overrides = getattr(p, "_slb_xyz", None)
            if overrides:
                settings = settings.with_overrides(overrides)
        except (SettingsError, TypeError, ValueError) as exc:
            enabled = bool(args) and (isinstance(args[0], dict) or args[0] is True)
            if enabled:
                p.extra_generation_params[KEY] = f"not applied: {exc}"
                print(f"[{TITLE}] not applied: {exc}", file=sys.stderr)
            return
        if not settings.enabled:
            return
        plan = _plan(settings, _model_of(p))
        p._slb_plan = plan
        p.extra_generation_params.update(plan.infotext())
        if plan.reason:
            print(f"[{TITLE}] not applied: {plan.reason}", file=sys.stderr)

    def process_before_every_sampling(self, p, *args, **kwargs) -> None:  # noqa: ANN001
        plan: LeakPlan | None = getattr(p, "_slb_plan", None)
        if plan is None or not plan.applies or getattr(p, "is_hr_pass", False):
            return  # hires fix's second pass already carries the first pass's image
        if self.is_img2img:
            self._apply_img2img(p, plan)
            return
        noise = kwargs.get("noise", kwargs.get("x"))
        if not isinstance(noise, torch.Tensor):
            return
        key = (id(p), getattr(p, "iteration", 0))
        if self.marks.is_marked(key, noise):
            return  # the host called us twice for one sampling: apply once
        if plan.preset is not None and noise.shape[1] != plan.preset.channels:
            self._not_applied(p, plan, f"preset {plan.label} has {plan.preset.channels} latent "
                              f"channels; the model's latents have {noise.shape[1]}")
            return
        sd_model = _model_of(p)
        info = host.start_info(
            p, p.sampler, p.steps, sgm_noise_multiplier=bool(shared.opts.sgm_noise_multiplier),
            kdiffusion_class=sd_samplers_kdiffusion.KDiffusionSampler,
            timesteps_class=sd_samplers_timesteps.CompVisSampler, sd_model=sd_model)
        if info.convention is None:
            self._not_applied(p, plan, info.reason)
            return
        if not info.convention.has_effect:
            self._not_applied(p, plan, f"no effect: {info.sampler}'s schedule starts with no "
                              f"signal (sigma {info.convention.sigma0:.4g})")
            return
        start = ENGINE.txt2img_start(
            noise, plan, info.convention, list(p.seeds), getattr(p, "iteration", 0),
            getattr(p, "batch_size", len(p.seeds)), list(getattr(p, "subseeds", []) or []),
            float(getattr(p, "subseed_strength", 0.0) or 0.0))
        if start is noise:
            return
        with torch.no_grad():
            noise.copy_(start)
        self.marks.mark(key, noise)
        if hasattr(p, "modified_noise"):  # Forge reads this instead of the tensor
            p.modified_noise = noise

    def _apply_img2img(self, p, plan: LeakPlan) -> None:  # noqa: ANN001
        current = getattr(p, "init_latent", None)
        if not isinstance(current, torch.Tensor):
            return
        # The host builds init_latent once per job and reuses it; keep the original and
        # rebuild from it each batch so edits never accumulate.
        if current is getattr(p, "_slb_init_edited", None):
            original = p._slb_init_original
        else:
            original = current
            p._slb_init_original = current
        nmask = getattr(p, "nmask", None)
        edited = ENGINE.img2img_init(
            original, plan, list(p.seeds), nmask if isinstance(nmask, torch.Tensor) else None,
            getattr(p, "iteration", 0), getattr(p, "batch_size", len(p.seeds)),
            list(getattr(p, "subseeds", []) or []),
            float(getattr(p, "subseed_strength", 0.0) or 0.0))
        p.init_latent = edited
        p._slb_init_edited = edited

    def _not_applied(self, p, plan: LeakPlan, reason: str) -> None:  # noqa: ANN001
        p.extra_generation_params.update(plan.infotext(reason))
        if not getattr(p, "_slb_reported", False):
            print(f"[{TITLE}] not applied: {reason}", file=sys.stderr)
            p._slb_reported = True

    def postprocess(self, p, processed, *args) -> None:  # noqa: ANN001
        for attr in ("_slb_init_original", "_slb_init_edited"):
            if hasattr(p, attr):
                setattr(p, attr, None)  # release the latents


def _paste_target(arg: str):  # noqa: ANN202
    def target(params: dict) -> object:
        return paste_value(params, arg)

    target.__name__ = f"signal_leak_{arg}"
    return target


# --- X/Y/Z plot --------------------------------------------------------------------------

def _xyz_setter(field: str, channel: int | None = None):  # noqa: ANN202
    def apply(p, x, xs) -> None:  # noqa: ANN001
        overrides = dict(getattr(p, "_slb_xyz", None) or {})
        overrides["enabled"] = True
        if channel is not None:
            overrides["means"] = {**overrides.get("means", {}), channel: float(x)}
        elif field == "seed":
            overrides["seed"] = int(x)
        elif field == "strength":
            overrides["strength"] = float(x)
        else:
            overrides[field] = x
        p._slb_xyz = overrides  # a new dict per cell: copies of p must not share it

    return apply


def register_xyz_axes() -> None:
    xyz = next((d.module for d in scripts.scripts_data
                if d.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is None:
        return
    ours = [o for o in xyz.axis_options if getattr(o, "label", "").startswith(XYZ_PREFIX)]
    if not ours:
        ours = _xyz_axes(xyz)
        xyz.axis_options.extend(ours)
    # With --nowebui the API builds the scripts (X/Y/Z's ui() snapshots axis_options into
    # current_axis_options, which run() indexes) before on_before_ui runs: add our axes to
    # those snapshots too. Appended last, so the host's axis indices do not move.
    for runner in (getattr(scripts, "scripts_txt2img", None),
                   getattr(scripts, "scripts_img2img", None)):
        for script in getattr(runner, "scripts", None) or []:
            current = getattr(script, "current_axis_options", None)
            if isinstance(script, xyz.Script) and isinstance(current, list):
                current.extend(o for o in ours if o not in current)


def _xyz_axes(xyz) -> list:  # noqa: ANN001
    return [
        xyz.AxisOption(XYZ_PREFIX + "Preset", str, _xyz_setter("preset"),
                       choices=preset_choices),
        xyz.AxisOption(XYZ_PREFIX + "Strength", float, _xyz_setter("strength")),
        xyz.AxisOption(XYZ_PREFIX + "LF mode", str, _xyz_setter("lf"),
                       choices=lambda: ["sampled", "zero"]),
        *[xyz.AxisOption(f"{XYZ_PREFIX}Channel {c} mean", float, _xyz_setter("means", c))
          for c in range(MAX_CHANNELS)],
        xyz.AxisOption(XYZ_PREFIX + "Leak seed", int, _xyz_setter("seed")),
    ]


# --- settings and API ----------------------------------------------------------------------

def on_ui_settings() -> None:
    section = ("signal_leak", TITLE)
    shared.opts.add_option(OPT_DIR, shared.OptionInfo(
        "", "Folder for your presets (empty: models/signal_leak); new fits are saved here",
        section=section))
    shared.opts.add_option(OPT_ALLOW, shared.OptionInfo(
        False, "Allow presets from other model families (their latent space may differ)",
        gr.Checkbox, section=section))


def register_routes(_demo: object, app: object) -> None:
    cmd = shared.cmd_opts
    if not (getattr(cmd, "api", False) or getattr(cmd, "nowebui", False)) or Request is None:
        return

    def fail(exc: ApiError) -> HTTPException:
        return HTTPException(status_code=exc.status, detail=exc.detail)

    async def read_json(request: Request) -> object:
        try:
            return await request.json()
        except Exception:
            raise HTTPException(status_code=422, detail="the body must be JSON") from None

    def get_presets() -> list:
        return presets_payload(library())

    async def post_sample(request: Request) -> dict:
        body = await read_json(request)
        try:
            return sample_payload(body, library(), host.model_family(shared.sd_model))
        except ApiError as exc:
            raise fail(exc) from None

    async def post_fit(request: Request) -> dict:
        body = await read_json(request)
        try:
            req = parse_fit_request(body)
        except ApiError as exc:
            raise fail(exc) from None
        # in a worker thread: on the event loop a fit would stall every other request
        # (progress, interrupt) until it ends
        return await run_in_threadpool(_api_fit, req)

    app.add_api_route("/signal-leak/v1/presets", get_presets, methods=["GET"])
    app.add_api_route("/signal-leak/v1/sample", post_sample, methods=["POST"])
    app.add_api_route("/signal-leak/v1/fit", post_fit, methods=["POST"])


def _api_fit(req: FitRequest) -> dict:
    started = time.perf_counter()
    with call_queue.queue_lock:  # never while a generation runs
        shared.state.begin(job="signal-leak-fit")
        try:
            result, path = run_fit(req)
        except ApiError as exc:
            raise HTTPException(status_code=exc.status, detail=exc.detail) from None
        except FitInterrupted:
            raise HTTPException(status_code=409, detail="fit interrupted; nothing was saved"
                                ) from None
        except (PresetError, NoUsableImagesError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        finally:
            shared.state.end()
    entry = next(e for e in library().entries() if e.path == path)
    return {**entry.info(), "images": result.images, "skipped": [
        {"path": s.path, "reason": s.reason} for s in result.skipped],
        "seconds": round(time.perf_counter() - started, 3), "path": str(path)}


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_before_ui(register_xyz_axes)
script_callbacks.on_app_started(register_routes)
