"""slb.host, tested with plain objects standing in for the WebUI's (no host import)."""

import math
from types import SimpleNamespace

import pytest
import torch

from slb import host
from slb.gaussian_world import sd_alphas_cumprod


class KSampler:
    def __init__(self, name, sigmas, model_sigmas=None):
        self.config = SimpleNamespace(name=name)
        self._sigmas = torch.tensor(sigmas)
        self.model_wrap = SimpleNamespace(sigmas=torch.tensor(model_sigmas or [0.03, 14.6146]))
        self.calls = []

    def get_sigmas(self, p, steps):
        self.calls.append(steps)
        return self._sigmas


class TSampler:
    def __init__(self, name, steps_list):
        self.config = SimpleNamespace(name=name)
        self._t = torch.tensor(steps_list)

    def get_timesteps(self, p, steps):
        return self._t


MODEL = SimpleNamespace(alphas_cumprod=sd_alphas_cumprod().float(), is_sd1=True)


def info(sampler, sgm=False, model=MODEL):
    return host.start_info(object(), sampler, 20, sgm_noise_multiplier=sgm,
                           kdiffusion_class=KSampler, timesteps_class=TSampler, sd_model=model)


def test_kdiffusion_first_sigma_from_the_sampler():
    s = KSampler("Euler", [14.6146, 7.0, 0.0])
    i = info(s)
    assert s.calls == [20]
    assert i.convention.kind == "ve" and i.convention.sigma0 == pytest.approx(14.6146)
    assert i.sampler == "Euler" and i.reason == ""


def test_sgm_multiplier():
    i = info(KSampler("Euler", [10.0, 0.0]), sgm=True)
    assert i.convention.kind == "ve_sgm"
    assert i.convention.multiplier == pytest.approx(math.sqrt(101))


def test_dpm_fast_starts_at_model_sigma_max():
    i = info(KSampler("DPM fast", [5.0, 0.0], [0.03, 14.6146]))
    assert i.convention.sigma0 == pytest.approx(14.6146)
    assert i.convention.multiplier == pytest.approx(5.0)


def test_timestep_samplers():
    ac = MODEL.alphas_cumprod
    ddim = info(TSampler("DDIM", list(range(1, 1000, 50))))
    assert ddim.convention.kind == "vp"
    assert ddim.convention.abar == pytest.approx(float(ac[951]), rel=1e-5)
    unipc = info(TSampler("UniPC", [1, 500]))
    assert unipc.convention.abar == pytest.approx(float(ac[999]), rel=1e-5)


def test_timestep_sampler_without_alphas_uses_forge_sigmas():
    s = TSampler("DDIM", [1, 951])
    s.model_wrap = SimpleNamespace(sigmas=torch.linspace(0.03, 14.6, 1000))
    i = info(s, model=SimpleNamespace())
    assert i.convention is not None and 0 < i.convention.abar < 0.01


def test_unknown_sampler_family_has_a_reason():
    i = info(object())
    assert i.convention is None and "unknown family" in i.reason


def test_nonfinite_schedule_has_a_reason():
    i = info(KSampler("Euler", [float("inf"), 0.0]))
    assert i.convention is None and "starts at sigma" in i.reason


@pytest.mark.parametrize("flags, family, res", [
    ({"is_sd1": True}, "sd1", 512), ({"is_sd2": True}, "sd2", 512),
    ({"is_sd2": True, "parameterization": "v"}, "sd2", 768), ({"is_sdxl": True}, "sdxl", 1024),
    ({}, "unknown", 512)])
def test_model_family_and_native_resolution(flags, family, res):
    model = SimpleNamespace(**flags)
    assert host.model_family(model) == family
    assert host.native_resolution(model) == res


def test_latent_channels_and_scale_factor():
    assert host.latent_channels(SimpleNamespace(latent_channels=16)) == 16
    forge = SimpleNamespace(forge_objects=SimpleNamespace(vae=SimpleNamespace(latent_channels=4)))
    assert host.latent_channels(forge) == 4
    assert host.latent_channels(SimpleNamespace()) == 4
    assert host.scale_factor(SimpleNamespace(scale_factor=0.5)) == 0.5
    assert host.scale_factor(SimpleNamespace(is_sdxl=True)) == 0.13025


def test_vae_name():
    assert host.vae_name(None, vae_file="C:\\vae\\my.vae.pt") == "my.vae.pt"
    assert host.vae_name(SimpleNamespace(sd_model_hash="abc")) == "checkpoint:abc"
    assert host.vae_name(SimpleNamespace()) == "unknown"


class Posterior:
    def __init__(self, mean):
        self.mean = mean

    def mode(self):
        return self.mean


def test_vae_encoder_takes_posterior_mean_times_scale():
    model = SimpleNamespace(scale_factor=0.18215, is_sd1=True,
                            encode_first_stage=lambda x: Posterior(x[:, :1] * 2))
    encode, mode = host.vae_encoder(model, "cpu", torch.float32)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(encode(x), x[:, :1] * 2 * 0.18215)
    assert mode == ["mean"]


def test_vae_encoder_sample_is_repeatable_and_leaves_global_rng_alone():
    model = SimpleNamespace(is_sdxl=True,
                            encode_first_stage=lambda x: x[:, :1] + torch.randn_like(x[:, :1]))
    encode, mode = host.vae_encoder(model, "cpu", torch.float32)
    x = torch.rand(2, 3, 8, 8)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b = encode(x), encode(x)
    assert torch.equal(a, b) and mode == ["sample"]
    assert torch.equal(torch.rand(3), expected_next)  # the host's random state is untouched
