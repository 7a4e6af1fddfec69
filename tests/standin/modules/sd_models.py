"""Stand-in for A1111 ``modules/sd_models.py`` with a fake checkpoint, ``FakeSdModel``.

Flags and fields as in sd_models.py:379-407 (``is_sd1/2/xl``, ``latent_channels`` 4,
``parameterization``); ``scale_factor`` 0.18215 (SD1/2) or 0.13025 (SDXL); ``alphas_cumprod``
= SD scaled-linear betas 0.00085..0.012 (float32). The VAE is a tiny fixed-weight conv pair;
SD1/2 ``encode_first_stage`` returns a posterior (``sample()`` uses the GLOBAL torch RNG) and
``get_first_stage_encoding`` = ``sample() * scale_factor``; SDXL encodes to a scaled sample
and ``get_first_stage_encoding`` is the identity (sd_models_xl.py:46-52; HOST-NOTES 5).
``apply_alpha_schedule_override`` (647-667): fp16 downcast and "Zero Terminal SNR".
"""

import hashlib

import torch

from modules import devices, shared

checkpoints_list, reload_calls = {}, []


def scaled_linear_alphas_cumprod(start=0.00085, end=0.012, steps=1000):
    betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = self.name = filename
        self.name_for_extra = self.model_name = filename.rsplit(".", 1)[0]
        self.sha256 = hashlib.sha256(filename.encode()).hexdigest()
        self.shorthash, self.hash = self.sha256[:10], self.sha256[:8]
        self.title = f"{filename} [{self.shorthash}]"

    def register(self):
        checkpoints_list[self.title] = self


class Posterior:
    """A diagonal Gaussian over latents, like ldm's ``DiagonalGaussianDistribution``."""

    def __init__(self, moments):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std, self.var = (0.5 * self.logvar).exp(), self.logvar.exp()

    def sample(self):
        return self.mean + self.std * torch.randn(self.mean.shape).to(self.mean)

    def mode(self):
        return self.mean


class TinyVAE(torch.nn.Module):
    """Three stride-2 convs down to mean/logvar; nearest upsample and a 1x1 conv back."""

    def __init__(self, channels=4, returns_sample=False):
        super().__init__()
        self.returns_sample = returns_sample
        self.down = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 4, 2, 1), torch.nn.SiLU(), torch.nn.Conv2d(8, 8, 4, 2, 1),
            torch.nn.SiLU(), torch.nn.Conv2d(8, 2 * channels, 4, 2, 1))
        self.up = torch.nn.Conv2d(channels, 3, 1)
        weights = torch.Generator().manual_seed(20240610)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=weights) * 0.2)
            self.down[-1].bias[channels:] = -4.0  # a small posterior variance

    @property
    def dtype(self):
        return self.up.weight.dtype

    def encode(self, x):
        posterior = Posterior(self.down(x.to(self.dtype)))
        return posterior.sample() if self.returns_sample else posterior

    def decode(self, z):
        z = torch.nn.functional.interpolate(z.to(self.dtype), scale_factor=8, mode="nearest")
        return torch.tanh(self.up(z))


class FakeSdModel:
    """A checkpoint without a UNet: family flags, schedule, VAE and hashes."""

    def __init__(self, family="sd1", *, inpainting=False, parameterization="eps"):
        if family not in ("sd1", "sd2", "sdxl"):
            raise ValueError(f"unknown model family {family!r}")
        self.is_sd1, self.is_sd2, self.is_sdxl = (family == f for f in ("sd1", "sd2", "sdxl"))
        self.is_ssd = self.is_sd3 = False
        self.latent_channels, self.parameterization = 4, parameterization
        self.scale_factor = 0.13025 if self.is_sdxl else 0.18215
        self.cond_stage_key = "txt"
        self.alphas_cumprod_original = scaled_linear_alphas_cumprod()
        self.alphas_cumprod = self.alphas_cumprod_original.clone()
        unet = type("UNet", (), {"in_channels": 9 if inpainting else 4})()
        self.model = type("DiffusionWrapper", (), {"diffusion_model": unet})()
        self.model.conditioning_key = "hybrid" if inpainting else "crossattn"
        self.first_stage_model = TinyVAE(self.latent_channels, returns_sample=self.is_sdxl)
        name = f"standin-{family}{'-inpainting' if inpainting else ''}.safetensors"
        self.sd_checkpoint_info = CheckpointInfo(name)
        self.sd_model_checkpoint, self.sd_model_hash = name, self.sd_checkpoint_info.shorthash
        self.device, self.dtype = devices.device, devices.dtype

    def get_learned_conditioning(self, prompts):
        width = 2048 if self.is_sdxl else (1024 if self.is_sd2 else 768)
        cross = torch.zeros(len(prompts), 77, width)
        return {"crossattn": cross, "vector": torch.zeros(len(prompts), 2816)} \
            if self.is_sdxl else cross

    def encode_first_stage(self, x):
        encoded = self.first_stage_model.encode(x)
        return encoded * self.scale_factor if self.is_sdxl else encoded

    def get_first_stage_encoding(self, encoded):
        return encoded if self.is_sdxl else encoded.sample() * self.scale_factor

    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor)


def zero_terminal_snr(abar):
    """Shift and stretch sqrt(abar) to end at 0 but start where it did (Lin et al.)."""
    root = abar.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    rescaled = ((root - last) * (first / (first - last))) ** 2
    rescaled[-1] = 4.8973451890853435e-08  # A1111's value for the last step
    return rescaled


def apply_alpha_schedule_override(sd_model, p=None):
    if not hasattr(sd_model, "alphas_cumprod_original"):
        return
    extra = {} if p is None else p.extra_generation_params
    ac = sd_model.alphas_cumprod_original.to(shared.device)
    if shared.opts.use_downcasted_alpha_bar:
        extra["Downcast alphas_cumprod"], ac = True, ac.half()
    if shared.opts.sd_noise_schedule == "Zero Terminal SNR":
        extra["Noise Schedule"], ac = "Zero Terminal SNR", zero_terminal_snr(ac)
    sd_model.alphas_cumprod = ac


def reload_model_weights(sd_model=None, info=None, **_):
    """A1111 reloads the selected checkpoint at every batch start; here the call is noted."""
    reload_calls.append(info)
    return shared.sd_model
