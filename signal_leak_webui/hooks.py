"""What one generation does (DESIGN 7.2-7.4): decide and write the infotext in ``process``,
replace the txt2img start or move img2img's low frequencies before each sampling.

Nothing here may break a generation: settings that cannot be used, a refused preset, a
schedule without signal or an unexpected error all mean "no leak", with the reason in the
infotext (``Signal leak: NAME (not applied: ...)``) and one console line.
"""

from __future__ import annotations

import sys
import traceback

import torch

from slb.generation import LeakEngine, LeakPlan, resolve_reference
from slb.infotext import KEY, remove_entries
from slb.lowfreq import reference_hash
from slb.settings import SettingsError, settings_from_args

from .options import TITLE
from .presets import Presets


def _console(message: str) -> None:
    print(f"[{TITLE}] {message}", file=sys.stderr)


class LeakHooks:
    """The hook bodies, shared by the txt2img and img2img script instances."""

    def __init__(self, presets: Presets) -> None:
        self.presets = presets
        self.host = presets.host
        self.engine = LeakEngine()
        self._reference_cache: dict[tuple, torch.Tensor] = {}

    # --- process: decide ---------------------------------------------------------------------
    def process(self, p: object, args: tuple) -> None:
        remove_entries(p.extra_generation_params)  # X/Y/Z cells share this dict
        p._slb_plan = None
        p._slb_reported = False
        try:
            settings = settings_from_args(args)
            overrides = getattr(p, "_slb_xyz", None)
            if overrides:
                settings = settings.with_overrides(overrides)
        except (SettingsError, TypeError, ValueError, OverflowError) as exc:
            enabled = bool(args) and (isinstance(args[0], dict) or args[0] is True or bool(
                getattr(p, "_slb_xyz", None)))
            if enabled:
                p.extra_generation_params[KEY] = f"not applied: {exc}"
                _console(f"not applied: {exc}")
            return
        if not settings.enabled:
            return
        if self.host.inner_pass(p):
            return  # an LF swap would recolour each detected face (see the setting)
        try:
            sd_model = self.host.sd_model(p)
            plan = self.presets.plan(settings, self.host.model_facts(sd_model))
            if not plan.reason and plan.settings.reference is not None:
                plan = self._with_reference(p, plan, sd_model)
        except Exception as exc:  # a generation never fails because of us
            self._failed(p, exc)
            return
        p._slb_plan = plan
        p.extra_generation_params.update(plan.infotext())
        if plan.reason:
            _console(f"not applied: {plan.reason}")
            p._slb_reported = True

    def _with_reference(self, p: object, plan: LeakPlan, sd_model: object) -> LeakPlan:
        """Fix the leak's LF components to the reference image's, encoded with the loaded
        VAE at this generation's size (cached by image, size and model)."""
        image = plan.settings.reference
        width, height = int(getattr(p, "width", 512)), int(getattr(p, "height", 512))
        image_hash = reference_hash(image)
        key = (image_hash, width, height, getattr(p, "sd_model_hash", None),
               getattr(p, "sd_vae_hash", None), id(sd_model))
        latent = self._reference_cache.get(key)
        if latent is None:
            latent = self.host.encode_image(image, width, height, sd_model)
            self._reference_cache = {key: latent}  # one entry: the last reference
        return resolve_reference(plan, latent, image_hash)

    # --- before each sampling: apply ------------------------------------------------------------
    def before_sampling(self, p: object, is_img2img: bool, kwargs: dict) -> None:
        plan: LeakPlan | None = getattr(p, "_slb_plan", None)
        if plan is None or not plan.applies or getattr(p, "is_hr_pass", False):
            return  # hires fix's second pass already carries the first pass's image
        try:
            if is_img2img:
                self._img2img(p, plan)
            else:
                self._txt2img(p, plan, kwargs)
        except Exception as exc:  # a generation never fails because of us
            self._failed(p, exc)

    def _txt2img(self, p: object, plan: LeakPlan, kwargs: dict) -> None:
        noise = kwargs.get("noise", kwargs.get("x"))
        if not isinstance(noise, torch.Tensor) or not self._image_latents(p, plan, noise):
            return
        sampling = self.host.sampling_start(p, noise)
        if sampling.base is None:
            return  # the host called us twice for one sampling: apply once
        if plan.preset is not None and noise.shape[1] != plan.preset.channels:
            self.not_applied(p, plan, f"preset {plan.label} has {plan.preset.channels} latent "
                             f"channels; the model's latents have {noise.shape[1]}")
            return
        info = sampling.info
        if info.convention is None:
            self.not_applied(p, plan, info.reason)
            return
        if not info.convention.has_effect:
            self.not_applied(p, plan, f"no effect: {info.sampler}'s schedule starts with no "
                             f"signal (sigma {info.convention.sigma0:.4g})")
            return
        base = sampling.base
        start = self.engine.txt2img_start(
            base, plan, info.convention, list(p.seeds), getattr(p, "iteration", 0),
            getattr(p, "batch_size", len(p.seeds)), list(getattr(p, "subseeds", []) or []),
            float(getattr(p, "subseed_strength", 0.0) or 0.0))
        if start is not base:
            self.host.write_start(p, noise, start)

    def _img2img(self, p: object, plan: LeakPlan) -> None:
        current = getattr(p, "init_latent", None)
        if not isinstance(current, torch.Tensor) or not self._image_latents(p, plan, current):
            return
        # The host builds init_latent once per job and reuses it; keep the original and
        # rebuild from it each batch so edits never accumulate.
        if current is getattr(p, "_slb_init_edited", None):
            original = p._slb_init_original
        else:
            original = current
            p._slb_init_original = current
        nmask = getattr(p, "nmask", None)
        edited = self.engine.img2img_init(
            original, plan, list(p.seeds), nmask if isinstance(nmask, torch.Tensor) else None,
            getattr(p, "iteration", 0), getattr(p, "batch_size", len(p.seeds)),
            list(getattr(p, "subseeds", []) or []),
            float(getattr(p, "subseed_strength", 0.0) or 0.0))
        p.init_latent = edited
        p._slb_init_edited = edited

    def _image_latents(self, p: object, plan: LeakPlan, latents: torch.Tensor) -> bool:
        """Whether ``latents`` are image latents ``(batch, channels, height, width)``, which
        the presets describe (Neo's Wan passes video latents with a time axis)."""
        if latents.dim() == 4:
            return True
        self.not_applied(p, plan, f"the model's latents have shape {tuple(latents.shape)}, "
                         "not (batch, channels, height, width)")
        return False

    # --- reporting -------------------------------------------------------------------------------
    def not_applied(self, p: object, plan: LeakPlan, reason: str) -> None:
        """No leak for this generation: say why in the infotext, and once on the console."""
        remove_entries(p.extra_generation_params)  # hash, strength ... were written for an
        p.extra_generation_params.update(plan.infotext(reason))  # applied leak (DESIGN 7.4)
        if not getattr(p, "_slb_reported", False):
            _console(f"not applied: {reason}")
            p._slb_reported = True

    def _failed(self, p: object, exc: BaseException) -> None:
        reason = f"internal error: {type(exc).__name__}: {exc}"
        plan = getattr(p, "_slb_plan", None)
        if plan is not None:
            self.not_applied(p, plan, reason)
        else:
            p.extra_generation_params[KEY] = f"not applied: {reason}"
            _console(f"not applied: {reason}")
        traceback.print_exc(file=sys.stderr)
        p._slb_plan = None

    def postprocess(self, p: object) -> None:
        for attr in ("_slb_init_original", "_slb_init_edited", "_slb_written"):
            if hasattr(p, attr):
                setattr(p, attr, None)  # release the latents
