"""Stand-in for A1111 ``modules/sd_samplers_common.py``: ``SamplerData`` (12-19),
``setup_img2img_steps`` (22-31), ``approximation_indexes`` (34), ``images_tensor_to_samples``
(87-112: [0,1] images -> SCALED latents, one image at a time, in ``devices.dtype_vae``) and
``samples_to_images_tensor`` (37-60; 2 = cheap approximation, others: the tiny VAE).
Stand-in only: the ``Sampler`` base and ``record_call``.
"""

from collections import namedtuple

import torch

from modules import devices, sd_vae_approx, shared

approximation_indexes = {name: i for i, name in enumerate(
    ("Full", "Approx NN", "Approx cheap", "TAESD"))}
standin_log = []


class SamplerData(namedtuple("SamplerData", "name constructor aliases options")):
    def total_steps(self, steps):
        return steps * (2 if self.options.get("second_order") else 1)


def setup_img2img_steps(p, steps=None):
    strength = min(p.denoising_strength, 0.999)
    if steps is None and not shared.opts.img2img_fix_steps:
        return p.steps, int(strength * p.steps)
    requested = steps or p.steps
    return (int(requested / strength) if p.denoising_strength > 0 else 0), requested - 1


def images_tensor_to_samples(image, approximation=None, model=None):
    model = model if model is not None else shared.sd_model
    model.first_stage_model.to(dtype=devices.dtype_vae)
    signed = image.to(shared.device, dtype=devices.dtype_vae) * 2 - 1
    encode = lambda batch: model.get_first_stage_encoding(model.encode_first_stage(batch))  # noqa: E731
    if len(signed) == 1:
        return encode(signed)
    return torch.stack([encode(one[None])[0] for one in signed])


def samples_to_images_tensor(sample, approximation=None, model=None):
    if approximation is None:
        approximation = approximation_indexes.get(shared.opts.show_progress_type, 0)
    if approximation == 2:
        return sd_vae_approx.cheap_approximation(sample)
    model = model if model is not None else shared.sd_model
    return model.decode_first_stage(sample.to(model.first_stage_model.dtype))


class Sampler:
    """What the fake samplers share (A1111's base class also runs the denoiser loop)."""

    def __init__(self, funcname):
        self.funcname = self.func = funcname
        self.config = self.p = self.last_latent = self.stop_at = self.eta = None

    def initialize(self, p):
        self.p = p
        return {}

    def interrupt(self):
        shared.state.interrupted = True

    def draw_ancestral_noise(self, p, sigmas):
        """Ancestral samplers draw from ``p.rng`` once per step not ending at sigma 0 (A1111
        routes k-diffusion's ``randn_like`` to ``p.rng.next()``, 205-226)."""
        if not (self.config and self.config.options.get("ancestral")):
            return 0
        draws = int((sigmas[1:] > 0).sum())
        for _ in range(draws):
            p.rng.next()
        return draws


def pass_name(p):
    if getattr(p, "is_hr_pass", False):
        return "hires"
    return "img2img" if hasattr(p, "init_images") else "txt2img"


def record_call(p, sampler, **fields):
    """Stand-in: keep what a fake sampler received (keys: processing.py docstring)."""
    rec = {"pass": pass_name(p), "batch": getattr(p, "iteration", 0),
           "seeds": None if p.seeds is None else list(p.seeds),
           "sampler": sampler.config.name if sampler.config else sampler.funcname,
           "sampler_object": sampler, "mask": getattr(p, "mask", None),
           "nmask": getattr(p, "nmask", None),
           "sgm_noise_multiplier": bool(shared.opts.sgm_noise_multiplier)}
    rec.update({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in fields.items()})
    p.standin_records.append(rec)
    standin_log.append(rec)
    return rec
