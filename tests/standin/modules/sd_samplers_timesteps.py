"""Stand-in for A1111 ``modules/sd_samplers_timesteps.py`` (DDIM, PLMS, UniPC).

``get_timesteps`` (86-96): ``clip(arange(0, 1000, 1000 // steps) + 1, 0, 999)``. ``sample``
(141-163) takes ``x`` UNSCALED; DDIM/PLMS start at ``timesteps[-1]`` (951 at 20 steps), UniPC
at 999 (timesteps_impl.py:170-176). ``sample_img2img`` (98-139): ``t = timesteps[t_enc]``,
``xi = x sqrt(ac[t]) + noise sqrt(1 - ac[t])``. The fake run returns ``x_start sqrt(ac[t0])``.
"""

import types

import torch

from modules import devices, sd_samplers_common, shared
from modules.sd_samplers_common import Sampler, setup_img2img_steps

samplers_data_timesteps = [
    sd_samplers_common.SamplerData(label, lambda model, f=func: CompVisSampler(f, model),
                                   [func], {})
    for label, func in (("DDIM", "ddim"), ("PLMS", "plms"), ("UniPC", "unipc"))]


class CompVisSampler(Sampler):
    def __init__(self, funcname, model):
        super().__init__(funcname)
        self.eta_option_field, self.eta_infotext_field = "eta_ddim", "Eta DDIM"
        model = shared.sd_model
        self.model_wrap = types.SimpleNamespace(inner_model=model,
                                                parameterization=model.parameterization)
        self.model_wrap_cfg = types.SimpleNamespace(inner_model=self.model_wrap,
                                                    alphas=model.alphas_cumprod, init_latent=None)

    def get_timesteps(self, p, steps):
        discard = bool(self.config and self.config.options.get("discard_next_to_last_sigma"))
        if shared.opts.always_discard_next_to_last_sigma and not discard:
            discard = p.extra_generation_params["Discard penultimate sigma"] = True
        stride = 1000 // (steps + int(discard))
        return torch.clip(torch.arange(0, 1000, stride, device=devices.device) + 1, 0, 999)

    def _finish(self, p, x_start, t0, **fields):
        output = x_start * shared.sd_model.alphas_cumprod[t0].sqrt().to(x_start.dtype)
        sd_samplers_common.record_call(
            p, self, kind="timesteps", x_start=x_start, t0=t0, sigmas=None, sigma_sched=None,
            sigma0=None, sigma_start=None, scale=None, rng_draws=0, output=output, **fields)
        self.last_latent = output
        return output

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None,
               image_conditioning=None):
        self.initialize(p)
        steps = steps or p.steps
        schedule = self.get_timesteps(p, steps)
        t0 = 999 if self.funcname == "unipc" else int(schedule[-1])
        return self._finish(p, x, t0, method="sample", steps=steps, t_enc=None,
                            timesteps=schedule, received_x=x, received_noise=None, noise=x,
                            init_latent=None, image_conditioning=image_conditioning)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning,
                       steps=None, image_conditioning=None):
        self.initialize(p)
        steps, t_enc = setup_img2img_steps(p, steps)
        schedule = self.get_timesteps(p, steps)
        t = int(schedule[t_enc])
        abar = shared.sd_model.alphas_cumprod[t]
        xi = x * abar.sqrt() + noise * (1 - abar).sqrt()
        self.model_wrap_cfg.init_latent = x
        return self._finish(p, xi, t, method="sample_img2img", steps=steps, t_enc=t_enc,
                            timesteps=schedule, received_x=x, received_noise=noise, noise=noise,
                            init_latent=x, image_conditioning=image_conditioning)
