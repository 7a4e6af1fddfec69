"""Host adapter: every lookup into WebUI objects, in one place, with no WebUI import.

The extension script passes host objects (the processing object ``p``, its sampler, the
loaded model, the sampler classes) in as arguments; this module reads what the leak needs
from them: the sampler's start convention (DESIGN section 6), the model family, latent
channels and native resolution, and a VAE encoder for fitting (7.8). It works for
AUTOMATIC1111 v1.10.1 and reads Forge's equivalents where they differ (HOST-NOTES 3, 5, 9),
and is tested with plain stand-in objects.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .mixing import StartConvention

# k-diffusion samplers that run from the model's own sigma range rather than the schedule.
MODEL_RANGE_SAMPLERS = ("DPM fast", "DPM adaptive")
# Timestep samplers that start at discrete step 999 whatever their timestep list.
FULL_RANGE_TIMESTEP_SAMPLERS = ("UniPC",)


FLOW_REASON = "flow-matching models start from pure noise"


@dataclass(frozen=True)
class ModelFacts:
    """What planning needs to know of the model a generation or a fit runs on, read from
    the host in one go (the host adapter's ``model_facts``)."""

    family: str  # sd1, sd2, sdxl, flow or unknown
    prediction: str  # eps, v or flow
    latent_channels: int
    scale_factor: float
    native_resolution: int
    loaded: bool = True  # False: the host's placeholder before it loads a checkpoint

    @property
    def reason(self) -> str:
        """Why no leak can apply to this model whatever the settings, or ``""``."""
        return FLOW_REASON if self.prediction == "flow" else ""


@dataclass(frozen=True)
class StartInfo:
    """The convention of this generation's sampler, or the reason there is none."""

    convention: StartConvention | None
    sampler: str
    reason: str = ""


@dataclass(frozen=True)
class SamplingStart:
    """What the host hands one sampling: the start convention (or why there is none) and
    the noise the leak is mixed into; ``base`` is None when this sampling already carries
    the leak (a host that calls the hook twice for one sampling)."""

    info: StartInfo
    base: torch.Tensor | None


def sampler_name(sampler: object) -> str:
    config = getattr(sampler, "config", None)
    return str(getattr(config, "name", None) or type(sampler).__name__)


def _alphas_cumprod(sampler: object, sd_model: object) -> torch.Tensor | None:
    for owner in (sd_model, getattr(getattr(sd_model, "forge_objects", None), "unet", None)):
        ac = getattr(owner, "alphas_cumprod", None)
        if isinstance(ac, torch.Tensor):
            return ac
    # Forge: a timestep sampler's predictor holds its sigmas; ac = 1 / (1 + sigma^2)
    sigmas = getattr(getattr(sampler, "model_wrap", None), "sigmas", None)
    if isinstance(sigmas, torch.Tensor):
        return 1.0 / (1.0 + sigmas.double() ** 2)
    return None


def start_info(p: object, sampler: object, steps: int, *, sgm_noise_multiplier: bool,
               kdiffusion_class: type | None, timesteps_class: type | None,
               sd_model: object, alphas_cumprod: torch.Tensor | None = None) -> StartInfo:
    """How this generation's sampler scales its start, read from the sampler itself.

    k-diffusion: the first entry of ``sampler.get_sigmas(p, steps)`` (what ``sample()``
    multiplies the noise by); DPM fast/adaptive start at the model's largest sigma.
    Timestep samplers: ``alphas_cumprod`` at their first timestep (the last of the ascending
    ``get_timesteps`` list; UniPC at 999), from ``alphas_cumprod`` when given, else from the
    model's own table.
    """
    name = sampler_name(sampler)
    if kdiffusion_class is not None and isinstance(sampler, kdiffusion_class):
        sigmas = sampler.get_sigmas(p, steps)  # type: ignore[attr-defined]
        first = float(sigmas[0])
        start = first
        if name in MODEL_RANGE_SAMPLERS:
            start = float(sampler.model_wrap.sigmas[-1])  # type: ignore[attr-defined]
        multiplier = math.sqrt(1.0 + first**2) if sgm_noise_multiplier else first
        if not (math.isfinite(start) and start > 0 and math.isfinite(multiplier)):
            return StartInfo(None, name, f"the schedule of {name} starts at sigma {start}")
        kind = "ve_sgm" if sgm_noise_multiplier else "ve"
        return StartInfo(StartConvention(kind, start, multiplier), name)
    if timesteps_class is not None and isinstance(sampler, timesteps_class):
        ac = alphas_cumprod if alphas_cumprod is not None else _alphas_cumprod(sampler, sd_model)
        if ac is None:
            return StartInfo(None, name, "the model exposes no alphas_cumprod")
        if name in FULL_RANGE_TIMESTEP_SAMPLERS:
            t0 = len(ac) - 1
        else:
            t0 = int(sampler.get_timesteps(p, steps)[-1])  # type: ignore[attr-defined]
        abar = float(ac[t0])
        if not 0 < abar < 1:
            return StartInfo(None, name, f"alphas_cumprod at t={t0} is {abar}")
        return StartInfo(StartConvention.vp(abar), name)
    return StartInfo(None, name, f"sampler {name} is of an unknown family")


def model_family(sd_model: object) -> str:
    """``sd1``, ``sd2``, ``sdxl`` or ``unknown`` from the host's model flags."""
    for flag, family in (("is_sdxl", "sdxl"), ("is_sd2", "sd2"), ("is_sd1", "sd1")):
        if getattr(sd_model, flag, False):
            return family
    return "unknown"


def latent_channels(sd_model: object, default: int = 4) -> int:
    forge_vae = getattr(getattr(sd_model, "forge_objects", None), "vae", None)
    for owner in (sd_model, forge_vae):
        value = getattr(owner, "latent_channels", None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def native_resolution(sd_model: object, prediction: str | None = None,
                      family: str | None = None) -> int:
    """512 for SD 1.x, 768 for SD 2.x v-models, 1024 for SDXL; 512 otherwise.

    ``prediction`` (``eps``/``v``) and ``family`` are the host's answers; by default the
    model's ``parameterization`` attribute and flags (A1111).
    """
    family = family or model_family(sd_model)
    if family == "sdxl":
        return 1024
    if prediction is None:
        prediction = "v" if getattr(sd_model, "parameterization", "eps") == "v" else "eps"
    if family == "sd2" and prediction == "v":
        return 768
    return 512


def scale_factor(sd_model: object) -> float:
    value = getattr(sd_model, "scale_factor", None)
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    return 0.13025 if model_family(sd_model) == "sdxl" else 0.18215


def vae_name(sd_model: object, vae_hash: str | None = None, vae_file: str | None = None) -> str:
    """A short name for the VAE in use: the external VAE file, else the checkpoint's hash."""
    if vae_file:
        return str(vae_file).replace("\\", "/").rsplit("/", 1)[-1]
    if vae_hash:
        return f"built-in:{vae_hash}"
    model_hash = getattr(sd_model, "sd_model_hash", None)
    return f"checkpoint:{model_hash}" if model_hash else "unknown"


@contextlib.contextmanager
def _float32_vae(sd_model: object, active: bool) -> Iterator[None]:
    """The model's VAE (``first_stage_model``) in float32 for the duration, then restored."""
    vae = getattr(sd_model, "first_stage_model", None)
    if not active or not isinstance(vae, torch.nn.Module):
        yield
        return
    dtype = next((p.dtype for p in vae.parameters()), torch.float32)
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(dtype)


def vae_encoder(sd_model: object, device: torch.device | str, dtype: torch.dtype,
                seed: int = 0) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[str]]:
    """An encoder for :func:`slb.fitting.fit` built on the loaded model's VAE.

    Uses the host's own ``encode_first_stage`` (so lowvram/medvram wrappers keep working).
    Where it returns the posterior (A1111 SD 1.x/2.x) the mean is taken and multiplied by the
    scale factor; where it returns an already scaled sample (SDXL, Forge) it runs under a
    fixed seed inside a forked RNG state, so fits repeat and the host's random state is left
    alone. The returned list receives ``"mean"`` or ``"sample"`` after the first batch.
    """
    mode: list[str] = []
    scale = scale_factor(sd_model)
    dev = torch.device(device)

    def encode(batch: torch.Tensor) -> torch.Tensor:
        # A float32 batch for a half-precision VAE is fit()'s retry after NaN latents: run
        # the VAE in float32 for this call (as the host's --no-half-vae would).
        upcast = batch.dtype == torch.float32 and dtype in (torch.float16, torch.bfloat16)
        x = batch.to(device=dev, dtype=torch.float32 if upcast else dtype)
        devices = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _float32_vae(sd_model, upcast):
            torch.manual_seed(seed)
            out = sd_model.encode_first_stage(x)  # type: ignore[attr-defined]
        # a posterior object (not a tensor: tensors have a .mode() method too)
        if not isinstance(out, torch.Tensor) and callable(getattr(out, "mode", None)):
            mode[:] = ["mean"]
            return out.mode().float() * scale
        mode[:] = ["sample"]
        return out.float()

    return encode, mode
