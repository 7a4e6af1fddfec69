"""The host adapter: the one interface (:class:`Host`) through which the glue reaches into
the running WebUI, and one implementation per host.

:func:`detect` picks the implementation the way each host identifies itself: Forge and its
descendants ship ``modules_forge`` (with ``forge_version``), whose ``version`` is ``"neo"`` in
Forge Neo, ``"classic"`` in Forge Classic and ``<release>-v<A1111 release>`` in reForge; a
host without it is AUTOMATIC1111. The maths of each lookup lives in
:mod:`slb.host` (plain objects, no WebUI import); this module only knows where each host
keeps things (HOST-NOTES 2-5, 13, 14). A generation asks twice, and the answers flow one
way: :meth:`Host.model_facts` before planning (family, prediction, latent channels, scale
factor, native size), :meth:`Host.sampling_start` before sampling (the start convention and
the noise to mix into), and :meth:`Host.write_start` hands the start back.

Where the hosts differ:
- the sampler's start: k-diffusion sigma0 and the SGM multiplier, or a timestep sampler's
  first alphas_cumprod; Forge-family hosts read it from the live predictor, so Zero Terminal
  SNR is seen;
- the model: A1111's flags and attributes; Forge's ``forge_objects`` (VAE scale factor,
  predictor; flow models have no leak to correct);
- loading: A1111 reloads the selected checkpoint eagerly except after a request override;
  Forge only at the next generation;
- the txt2img start: A1111 edits the sampler's tensor in place (and marks it, so a second
  hook call is a no-op); Forge hands inference-mode tensors, which must not be edited, and
  reads ``p.modified_noise`` instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Protocol

import torch
from modules import devices, paths, sd_samplers_kdiffusion, sd_samplers_timesteps, shared

from slb import host as lookups
from slb.generation import AppliedMarks
from slb.host import FLOW_REASON, ModelFacts, SamplingStart
from slb.lowfreq import reference_pixels

from .options import OPT_ALLOW, OPT_DIR, OPT_INNER

__all__ = ["FLOW_REASON", "A1111Host", "ClassicHost", "ForgeHost", "Host", "LdmPatchedHost",
           "NeoHost", "ReForgeHost", "detect"]


class Host(Protocol):
    """What the glue needs of a WebUI host."""

    name: str

    # settings and places
    def option(self, key: str, default: object = None) -> object: ...
    def user_presets_dir(self) -> Path: ...
    def allow_other_families(self) -> bool: ...
    def inner_pass(self, p: object) -> bool: ...
    def interrupted(self) -> bool: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def vae_dtype(self) -> torch.dtype: ...

    # the model
    def sd_model(self, p: object = None) -> object: ...
    def ensure_model(self) -> object: ...
    def model_facts(self, sd_model: object) -> ModelFacts: ...
    def model_metadata(self, sd_model: object) -> dict: ...
    def vae_encoder(self, sd_model: object) -> tuple: ...
    def encode_image(self, image: object, width: int, height: int, sd_model: object
                     ) -> torch.Tensor: ...

    # sampling
    def sampling_start(self, p: object, noise: torch.Tensor) -> SamplingStart: ...
    def write_start(self, p: object, noise: torch.Tensor, start: torch.Tensor) -> None: ...

    # previews
    def decode_cheap(self, latent: torch.Tensor, family: str) -> object: ...


class A1111Host:
    """AUTOMATIC1111 WebUI v1.10.x; the shared code of every host."""

    name = "AUTOMATIC1111"

    def __init__(self) -> None:
        self._marks = AppliedMarks()

    # --- settings and places -------------------------------------------------------------
    def option(self, key: str, default: object = None) -> object:
        data = getattr(shared.opts, "data", None)
        return data.get(key, default) if isinstance(data, dict) else default

    def user_presets_dir(self) -> Path:
        return Path(str(self.option(OPT_DIR, "") or "") or
                    os.path.join(paths.models_path, "signal_leak"))

    def allow_other_families(self) -> bool:
        return bool(self.option(OPT_ALLOW, False))

    def inner_pass(self, p: object) -> bool:
        """Whether ``p`` is another extension's inner pass that the user keeps leak-free
        (ADetailer marks its face/hand img2img passes with ``p._ad_inner``)."""
        return bool(getattr(p, "_ad_inner", False)) and not bool(self.option(OPT_INNER, False))

    def sgm_noise_multiplier(self) -> bool:
        return bool(self.option("sgm_noise_multiplier", False))

    @property
    def device(self) -> torch.device:
        return torch.device(devices.device)

    @property
    def vae_dtype(self) -> torch.dtype:
        return devices.dtype_vae

    def interrupted(self) -> bool:
        return bool(getattr(shared.state, "interrupted", False))

    # --- the model -----------------------------------------------------------------------
    def sd_model(self, p: object = None) -> object:
        model = getattr(p, "sd_model", None)
        return model if model is not None else shared.sd_model

    def ensure_model(self) -> object:
        """The checkpoint the user selected, loaded. Button and route work (fits, Preview,
        ``/sample``, reference encodes) runs outside a generation, where the host may still
        hold another model: A1111 keeps a request's ``sd_model_checkpoint`` override loaded
        after restoring the option, and loads the selection again only at the next job
        (A:modules/processing.py 828-836). Reloading is a no-op when they agree. The caller
        holds the GPU queue (``call_queue.queue_lock``)."""
        from modules import sd_models

        model = sd_models.reload_model_weights()
        return model if model is not None else self.sd_model()

    def model_facts(self, sd_model: object) -> ModelFacts:
        """Everything planning needs of ``sd_model``, read once."""
        prediction, family = self.prediction(sd_model), self.model_family(sd_model)
        return ModelFacts(family=family, prediction=prediction,
                          latent_channels=lookups.latent_channels(sd_model),
                          scale_factor=self.scale_factor(sd_model),
                          native_resolution=lookups.native_resolution(sd_model, prediction,
                                                                      family),
                          loaded=self.model_loaded(sd_model))

    def model_loaded(self, sd_model: object) -> bool:
        """Whether ``sd_model`` is a real model (so a family check means something)."""
        return sd_model is not None

    def model_family(self, sd_model: object) -> str:
        return lookups.model_family(sd_model)

    def prediction(self, sd_model: object) -> str:
        """``eps``, ``v`` or ``flow``."""
        if getattr(sd_model, "is_sd3", False):
            return "flow"
        return "v" if getattr(sd_model, "parameterization", "eps") == "v" else "eps"

    def scale_factor(self, sd_model: object) -> float:
        return lookups.scale_factor(sd_model)

    def model_metadata(self, sd_model: object) -> dict:
        """Preset metadata describing the loaded model's latent space."""
        try:
            from modules import sd_vae
            vae_file = getattr(sd_vae, "loaded_vae_file", None)
        except ImportError:  # pragma: no cover - hosts without that module
            vae_file = None
        facts = self.model_facts(sd_model)
        return {"model_family": facts.family, "scale_factor": facts.scale_factor,
                "vae": lookups.vae_name(sd_model, vae_file=vae_file)}

    def vae_encoder(self, sd_model: object) -> tuple:
        return lookups.vae_encoder(sd_model, self.device, self.vae_dtype)

    def encode_image(self, image: object, width: int, height: int, sd_model: object
                     ) -> torch.Tensor:
        """An RGB PIL image as the model's scaled latent ``(C, height/8, width/8)``, cropped
        to the generation's aspect ratio (posterior mean where the host exposes it)."""
        encode, _ = self.vae_encoder(sd_model)
        with torch.no_grad():
            return encode(reference_pixels(image, width, height))[0].float().cpu()

    # --- sampling ------------------------------------------------------------------------
    def sampling_start(self, p: object, noise: torch.Tensor) -> SamplingStart:
        """How this sampling scales its start (DESIGN 6) and the noise to mix the leak into
        (``base`` None: this very sampling already carries it)."""
        if self.already_applied(p, noise):
            return SamplingStart(lookups.StartInfo(None, lookups.sampler_name(p.sampler)), None)
        return SamplingStart(self.start_info(p), self.base_noise(p, noise))

    def start_info(self, p: object) -> lookups.StartInfo:
        sd_model = self.sd_model(p)
        if self.prediction(sd_model) == "flow":
            return lookups.StartInfo(None, lookups.sampler_name(p.sampler), FLOW_REASON)
        return lookups.start_info(
            p, p.sampler, p.steps, sgm_noise_multiplier=self.sgm_noise_multiplier(),
            kdiffusion_class=sd_samplers_kdiffusion.KDiffusionSampler,
            timesteps_class=sd_samplers_timesteps.CompVisSampler, sd_model=sd_model,
            alphas_cumprod=self.alphas_cumprod(p))

    def alphas_cumprod(self, p: object) -> torch.Tensor | None:
        return None  # slb.host reads the model's own table

    def already_applied(self, p: object, noise: torch.Tensor) -> bool:
        """Whether this very tensor already carries our leak (a repeated hook call)."""
        return self._marks.is_marked(self._key(p), noise)

    def base_noise(self, p: object, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def write_start(self, p: object, noise: torch.Tensor, start: torch.Tensor) -> None:
        """A1111 hands the sampler the very tensor it passed us: edit it in place."""
        with torch.no_grad():
            noise.copy_(start)
        self._marks.mark(self._key(p), noise)

    @staticmethod
    def _key(p: object) -> tuple:
        return id(p), getattr(p, "iteration", 0)

    # --- previews ------------------------------------------------------------------------
    def decode_cheap(self, latent: torch.Tensor, family: str) -> object:
        """A latent as an RGB uint8 array by the host's cheap approximation."""
        from modules import sd_samplers_common

        from slb import preview
        try:
            rgb = sd_samplers_common.samples_to_images_tensor(latent.to(self.device), 2)[0]
            arr = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0)
            return arr.cpu().numpy()
        except Exception:  # other latent spaces: our own linear map
            return preview.latent_to_rgb(latent[0], family)


class ForgeHost(A1111Host):
    """Stable Diffusion WebUI Forge (lllyasviel/stable-diffusion-webui-forge, 2.x)."""

    name = "Forge"

    def ensure_model(self) -> object:
        # Forge loads lazily: a checkpoint switch (the dropdown, POST /sdapi/v1/options)
        # only records the selection, and the old model stays loaded until the next
        # generation; before the first one shared.sd_model is a placeholder without a VAE
        # (modules/sd_models.py FakeInitialModel). forge_model_reload loads the selection
        # and returns at once when it is already loaded (F:modules/sd_models.py 473-477).
        # A Forge without it loads as A1111 does (LdmPatchedHost says why).
        from modules import sd_models

        reload = getattr(sd_models, "forge_model_reload", None)
        if reload is None:
            return A1111Host.ensure_model(self)
        model, _ = reload()
        return model

    def model_loaded(self, sd_model: object) -> bool:
        return hasattr(sd_model, "forge_objects")

    @staticmethod
    def _unet_model(sd_model: object, attribute: str) -> object:
        """``sd_model.forge_objects.unet.model.<attribute>``, or None where any is missing."""
        unet = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
        return getattr(getattr(unet, "model", None), attribute, None)

    def _predictor(self, sd_model: object) -> object:
        return self._unet_model(sd_model, "predictor")

    def prediction(self, sd_model: object) -> str:
        predictor = self._predictor(sd_model)
        kind = getattr(predictor, "prediction_type", "epsilon")
        if kind == "const" or "Flow" in type(predictor).__name__ or \
                "Flux" in type(predictor).__name__ or getattr(sd_model, "is_sd3", False):
            return "flow"
        return "v" if kind == "v_prediction" else "eps"

    def model_family(self, sd_model: object) -> str:
        family = lookups.model_family(sd_model)
        if family == "unknown" and self.prediction(sd_model) == "flow":
            return "flow"
        return family

    def scale_factor(self, sd_model: object) -> float:
        vae = getattr(getattr(sd_model, "forge_objects", None), "vae", None)
        value = getattr(getattr(vae, "first_stage_model", None), "scaling_factor", None)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
        return lookups.scale_factor(sd_model)

    def alphas_cumprod(self, p: object) -> torch.Tensor | None:
        # The predictor's live sigmas: Forge swaps them for Zero Terminal SNR during
        # sampling, and its own alphas_cumprod table does not follow (HOST-NOTES 3).
        sigmas = getattr(self._predictor(self.sd_model(p)), "sigmas", None)
        if isinstance(sigmas, torch.Tensor):
            return 1.0 / (1.0 + sigmas.double().cpu() ** 2)
        return None

    def already_applied(self, p: object, noise: torch.Tensor) -> bool:
        return False  # write_start never edits the host's tensor: each call recomputes

    def base_noise(self, p: object, noise: torch.Tensor) -> torch.Tensor:
        """The start another script already chose (``p.modified_noise``), unless it is the
        one we wrote in an earlier call for this sampling (Forge calls the hook again)."""
        current = getattr(p, "modified_noise", None)
        if isinstance(current, torch.Tensor) and current is not getattr(p, "_slb_written", None) \
                and current.shape == noise.shape:
            return current
        return noise

    def write_start(self, p: object, noise: torch.Tensor, start: torch.Tensor) -> None:
        """Forge's noise is an inference tensor: never edited; Forge reads modified_noise."""
        p.modified_noise = start
        p._slb_written = start


class NeoHost(ForgeHost):
    """Forge Neo (the ``neo`` branch of Haoming02/sd-webui-forge-classic)."""

    name = "Forge Neo"


class LdmPatchedHost(ForgeHost):
    """The Forge line that kept the older ``ldm_patched`` backend: reForge and Forge Classic
    (HOST-NOTES 14). Like Forge: ``forge_objects``, ``p.modified_noise``, inference-mode
    tensors. Unlike Forge, in one place:

    - loading: A1111's ``reload_model_weights`` (there is no ``forge_model_reload``);
    - prediction: the UNet has no ``predictor``; the sampler's schedule object is
      ``forge_objects.unet.model.model_sampling``, a class made of a sampling base and a
      prediction mixin (``EPS``, ``V_PREDICTION``, reForge's ``CONST`` for SD3-style flow;
      R:ldm_patched/modules/model_sampling.py 24-80, C:12-22), replaced by a
      ``V_PREDICTION`` one for a v model (R:modules_forge/forge_loader.py 510-511,
      C:262-266). Forge's reading would call every one of them ``eps``;
    - the schedule: the model's own ``alphas_cumprod`` table (slb.host), which both forks
      rescale for Zero Terminal SNR (R:modules/processing.py 1079-1082 with
      ``apply_alpha_schedule_override``; C:modules_forge/forge_loader.py 324-353, v models
      only);
    - the family: from the detected UNet config, not the flags (reForge's are wrong for
      SD 2.x).
    """

    name = "Forge (ldm_patched)"

    def ensure_model(self) -> object:
        return A1111Host.ensure_model(self)

    def _model_sampling(self, sd_model: object) -> object:
        return self._unet_model(sd_model, "model_sampling")

    def prediction(self, sd_model: object) -> str:
        sampling = self._model_sampling(sd_model)
        kinds = {cls.__name__ for cls in type(sampling).__mro__} if sampling is not None \
            else set()
        if kinds & {"CONST", "ModelSamplingDiscreteFlow", "ModelSamplingFlux"} or \
                getattr(sd_model, "is_sd3", False):
            return "flow"
        if "V_PREDICTION" in kinds:
            return "v"
        if "EPS" in kinds:
            return "eps"
        return A1111Host.prediction(self, sd_model)  # no schedule object: the ldm flag

    def alphas_cumprod(self, p: object) -> torch.Tensor | None:
        return None  # slb.host reads the model's own (rescaled) table

    def model_family(self, sd_model: object) -> str:
        """The family of the UNet config the loader detected (ldm_patched's supported_models
        class: ``SD15``, ``SD20``, ``SDXL`` and their subclasses), before the model's flags:
        reForge sets ``is_sd2`` from ``cond_stage_model.model`` after wrapping the text
        encoder in a class without it, so an SD 2.x model says ``is_sd1``
        (R:modules_forge/forge_loader.py 500-506, 523-524)."""
        unet = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
        config = getattr(getattr(unet, "model", None), "model_config", None)
        names = {cls.__name__ for cls in type(config).__mro__} if config is not None else set()
        for name, family in (("SDXL", "sdxl"), ("SD20", "sd2"), ("SD15", "sd1")):
            if name in names:
                return family
        return super().model_family(sd_model)


class ReForgeHost(LdmPatchedHost):
    """reForge (Panchovix/stable-diffusion-webui-reForge)."""

    name = "reForge"


class ClassicHost(LdmPatchedHost):
    """Forge Classic (the ``classic`` branch of Haoming02/sd-webui-forge-classic)."""

    name = "Forge Classic"


def forge_version() -> str | None:
    """``modules_forge.forge_version.version`` of a Forge-family host, else None."""
    if importlib.util.find_spec("modules_forge") is None:
        return None
    try:
        from modules_forge import forge_version
    except ImportError:
        return ""
    return str(getattr(forge_version, "version", ""))


# reForge writes its own release, "-v", then the A1111 release it follows ('1.7.0-v1.10.1RC',
# '1.0.0v2-v1.10.1RC' at 3b56b268, R:modules_forge/forge_version.py:1); lllyasviel's Forge
# writes them without the dash ('0.0.17v1.8.0rc', '2.0.1v1.10.1').
_REFORGE_VERSION = re.compile(r"-v\d+\.\d+")


def detect() -> Host:
    """The adapter for the running host, from what it says about itself in
    ``modules_forge/forge_version.py``: none (A1111), ``"neo"`` (Forge Neo, N:1),
    ``"classic"`` (Forge Classic, C:1), a reForge release, or else Forge's."""
    version = forge_version()
    if version is None:
        return A1111Host()
    if version == "neo":
        return NeoHost()
    if version == "classic":
        return ClassicHost()
    if _REFORGE_VERSION.search(version):
        return ReForgeHost()
    return ForgeHost()
