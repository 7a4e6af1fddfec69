"""Stand-in for A1111 ``modules/sd_samplers_kdiffusion.py`` and ``sd_schedulers.py``.

``model_wrap.sigmas`` = ``sqrt((1 - ac) / ac)`` of ``shared.sd_model`` at construction,
ASCENDING (k-diffusion external.py:41-57; ``[-1]`` ~ 14.6146 for SD). ``get_sigmas`` (79-131):
discard-penultimate, ``hr_scheduler`` in the hires pass, "Automatic" = the sampler's default,
``sampler_noise_scheduler_override``, ``opts.sigma_min/sigma_max/rho`` overrides and their
infotext keys. ``sample`` (190-235): ``x * sigmas[0]``, or ``x * sqrt(1 + sigmas[0]^2)`` with
``opts.sgm_noise_multiplier``; DPM fast/adaptive then run over the model's own range.
``sample_img2img`` (134-188): ``xi = x + noise * sigmas[steps - t_enc - 1]``. Schedules:
k-diffusion sampling.py:17-29. The fake run returns ``x_start / sqrt(1 + sigma_start^2)``.
"""

import dataclasses
import math
import types

import torch

from modules import devices, sd_samplers_common, shared
from modules.sd_samplers_common import Sampler, setup_img2img_steps


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: object
    default_rho: float = -1
    need_inner_model: bool = False


def karras(n, sigma_min, sigma_max, rho=7.0, device="cpu"):
    top, bottom = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    ramp = (top + torch.linspace(0, 1, n) * (bottom - top)) ** rho
    return torch.cat([ramp, ramp.new_zeros(1)]).to(device)


def exponential(n, sigma_min, sigma_max, device="cpu"):
    ramp = torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp()
    return torch.cat([ramp, ramp.new_zeros(1)]).to(device)


schedulers = [Scheduler("automatic", "Automatic", None),
              Scheduler("karras", "Karras", karras, default_rho=7.0),
              Scheduler("exponential", "Exponential", exponential)]
schedulers_map = {key: s for s in schedulers for key in (s.name, s.label)}

samplers_k_diffusion = [
    ("DPM++ 2M", "sample_dpmpp_2m", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("Euler a", "sample_euler_ancestral", ["k_euler_a"], {"uses_ensd": True, "ancestral": True}),
    ("Euler", "sample_euler", ["k_euler"], {}),
    ("DPM fast", "sample_dpm_fast", ["k_dpm_fast"], {"uses_ensd": True}),
    ("DPM adaptive", "sample_dpm_adaptive", ["k_dpm_ad"], {"uses_ensd": True}),
]
samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, lambda model, f=func: KDiffusionSampler(f, model),
                                   aliases, options)
    for label, func, aliases, options in samplers_k_diffusion]


class ModelSigmas(torch.nn.Module):
    """The model's discrete noise levels, as k-diffusion's DiscreteSchedule holds them."""

    def __init__(self, alphas_cumprod, kind="eps"):
        super().__init__()
        self.parameterization = kind
        self.register_buffer("sigmas", ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)
        self.register_buffer("log_sigmas", self.sigmas.log())

    def t_to_sigma(self, t):
        t = torch.as_tensor(t, dtype=torch.float32)
        lo, hi = t.floor().long(), t.ceil().long()
        return torch.lerp(self.log_sigmas[lo], self.log_sigmas[hi], t - lo).exp()

    def get_sigmas(self, n):
        levels = self.t_to_sigma(torch.linspace(len(self.sigmas) - 1, 0, n))
        return torch.cat([levels, levels.new_zeros(1)])


class KDiffusionSampler(Sampler):
    def __init__(self, funcname, model, options=None):  # A1111 reads shared.sd_model too
        super().__init__(funcname)
        self.options = options or {}
        model = shared.sd_model
        self.model_wrap = ModelSigmas(model.alphas_cumprod, model.parameterization)
        self.model_wrap_cfg = types.SimpleNamespace(inner_model=self.model_wrap, init_latent=None)

    def get_sigmas(self, p, steps):
        opts, extra = shared.opts, p.extra_generation_params
        own = self.config.options if self.config else {}
        discard = bool(own.get("discard_next_to_last_sigma"))
        if opts.always_discard_next_to_last_sigma and not discard:
            discard = extra["Discard penultimate sigma"] = True
        steps += int(discard)
        chosen = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
        scheduler = schedulers_map.get(own.get("scheduler") if chosen == "Automatic" else chosen)
        low, high = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        override = p.sampler_noise_scheduler_override
        if override:
            sigmas = override(steps)
        elif getattr(scheduler, "function", None) is None:  # e.g. Euler: the model's schedule
            sigmas = self.model_wrap.get_sigmas(n=steps)
        else:
            if scheduler.label != "Automatic" and not p.is_hr_pass:
                extra["Schedule type"] = scheduler.label
            elif scheduler.label != extra.get("Schedule type"):
                extra["Hires schedule type"] = scheduler.label
            old = opts.use_old_karras_scheduler_sigmas
            kwargs = {"sigma_min": 0.1 if old else low, "sigma_max": 10 if old else high}
            for key, label, native in (("sigma_min", "Schedule min sigma", low),
                                       ("sigma_max", "Schedule max sigma", high)):
                if getattr(opts, key) not in (0, native):
                    kwargs[key] = extra[label] = getattr(opts, key)
            if scheduler.default_rho != -1 and opts.rho not in (0, scheduler.default_rho):
                kwargs["rho"] = extra["Schedule rho"] = opts.rho
            sigmas = scheduler.function(n=steps, **kwargs, device=devices.cpu)
        if discard:  # drop the next-to-last entry
            sigmas = sigmas[[i for i in range(len(sigmas)) if i != len(sigmas) - 2]]
        return sigmas.cpu()

    def _finish(self, p, x_start, sigma_start, run_sigmas, **fields):
        draws = self.draw_ancestral_noise(p, run_sigmas)
        output = x_start / (1.0 + float(sigma_start) ** 2) ** 0.5
        sd_samplers_common.record_call(
            p, self, kind="kdiffusion", x_start=x_start, sigma_start=float(sigma_start),
            timesteps=None, t0=None, rng_draws=draws, output=output, **fields)
        self.last_latent = output
        return output

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None,
               image_conditioning=None):
        self.initialize(p)
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        if shared.opts.sgm_noise_multiplier:
            p.extra_generation_params.update({"SGM noise multiplier": True})
            scale = torch.sqrt(1.0 + sigmas[0] ** 2.0)
        else:
            scale = sigmas[0]
        model_range = self.funcname in ("sample_dpm_fast", "sample_dpm_adaptive")
        start = self.model_wrap.sigmas[-1] if model_range else sigmas[0]
        return self._finish(
            p, x * scale, start, sigmas, sigmas=sigmas, method="sample", steps=steps,
            t_enc=None, received_x=x, received_noise=None, noise=x, init_latent=None,
            sigma0=float(sigmas[0]), sigma_sched=sigmas, scale=float(scale),
            image_conditioning=image_conditioning)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning,
                       steps=None, image_conditioning=None):
        self.initialize(p)
        steps, t_enc = setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        first = steps - t_enc - 1
        sigma_sched = sigmas[first:]
        xi = x + noise * sigma_sched[0]  # (the "Extra noise" option is not mirrored)
        self.model_wrap_cfg.init_latent = x
        return self._finish(
            p, xi, sigma_sched[0], sigma_sched, sigmas=sigmas, method="sample_img2img",
            steps=steps, t_enc=t_enc, received_x=x, received_noise=noise, noise=noise,
            init_latent=x, sigma0=float(sigma_sched[0]), sigma_sched=sigma_sched, scale=None,
            image_conditioning=image_conditioning)
