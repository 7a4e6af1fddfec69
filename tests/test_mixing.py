import math

import pytest
import torch

from slb.dct import lf_coefficients, lowfreq_basis, lowfreq_coords
from slb.mixing import StartConvention, sampler_input, sampler_scaling, swap_lowfreq, vp_target
from slb.sampling import LeakSampler

SIGMA0 = 14.614642


@pytest.fixture
def eps_and_leak():
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(2, 4, 16, 16, generator=gen),
            torch.randn(2, 4, 16, 16, generator=gen) * 0.8 + 0.3)


@pytest.mark.parametrize("strength", [1.0, 0.35, 2.0])
def test_ve_lands_on_leak_plus_sigma_eps(eps_and_leak, strength):
    eps, leak = eps_and_leak
    conv = StartConvention.ve(SIGMA0)
    handed = sampler_input(eps, leak, conv, strength)
    x_start = handed.double() * SIGMA0  # what the k-diffusion sampler does with it
    target = strength * leak.double() + SIGMA0 * eps.double()
    assert (x_start - target).abs().max() / target.abs().max() < 1e-6


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_ve_sgm_lands_on_the_same_latent(eps_and_leak, strength):
    eps, leak = eps_and_leak
    conv = StartConvention.ve(SIGMA0, sgm_multiplier=True)
    handed = sampler_input(eps, leak, conv, strength)
    x_start = handed.double() * math.sqrt(1 + SIGMA0**2)
    target = strength * leak.double() + SIGMA0 * eps.double()
    assert (x_start - target).abs().max() / target.abs().max() < 1e-6
    # and it is the VP target scaled by sqrt(1 + sigma0^2)
    vp = vp_target(eps.double(), leak.double(), conv, strength)
    assert torch.allclose(handed.double(), vp, atol=1e-6)


def test_vp_lands_on_sqrt_abar_mix(eps_and_leak):
    eps, leak = eps_and_leak
    abar = 0.0047
    conv = StartConvention.vp(abar)
    handed = sampler_input(eps, leak, conv)
    target = math.sqrt(abar) * leak.double() + math.sqrt(1 - abar) * eps.double()
    assert (handed.double() - target).abs().max() < 1e-6
    assert sampler_scaling(conv) == 1.0
    assert abs(conv.abar - abar) < 1e-12


def test_ve_and_vp_forms_are_the_same_latent_up_to_scale(eps_and_leak):
    eps, leak = eps_and_leak
    conv = StartConvention.ve(SIGMA0)
    ve = (sampler_input(eps, leak, conv) * sampler_scaling(conv)).double()
    vp = vp_target(eps.double(), leak.double(), conv)
    assert torch.allclose(ve, vp * math.sqrt(1 + SIGMA0**2), atol=1e-4)


@pytest.mark.parametrize("conv", [StartConvention.ve(SIGMA0), StartConvention.ve(SIGMA0, True),
                                  StartConvention.vp(0.0047)])
def test_strength_zero_is_exactly_the_plain_noise(eps_and_leak, conv):
    eps, leak = eps_and_leak
    out = sampler_input(eps, leak, conv, 0.0)
    assert torch.equal(out, eps)
    assert sampler_input(eps, None, conv) is eps


def test_dtype_and_device_are_kept(eps_and_leak):
    eps, leak = eps_and_leak
    out = sampler_input(eps.half(), leak, StartConvention.ve(SIGMA0))
    assert out.dtype == torch.float16


def test_zero_terminal_snr_has_no_effect():
    assert StartConvention.ve(4518.8).has_effect is False
    assert StartConvention.ve(SIGMA0).has_effect is True
    assert abs(StartConvention.ve(SIGMA0).leak_weight - 1 / math.sqrt(1 + SIGMA0**2)) < 1e-12


def test_convention_validation():
    with pytest.raises(ValueError):
        StartConvention("flow", 1.0)
    with pytest.raises(ValueError):
        StartConvention.ve(0.0)
    with pytest.raises(ValueError):
        StartConvention.vp(1.0)


# --- img2img LF swap -------------------------------------------------------------------------

def _setup(n=3):
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(2, 4, 16, 16, generator=gen) + 0.5
    leak = torch.randn(2, 4, 16, 16, generator=gen) * 2 - 1
    basis = lowfreq_basis(lowfreq_coords(n, 16, 16), 16, 16)
    return init, leak, basis


def test_swap_moves_lf_to_leak_and_keeps_hf():
    init, leak, basis = _setup()
    out = swap_lowfreq(init, leak, basis, strength=1.0)
    assert torch.allclose(lf_coefficients(out, basis), lf_coefficients(leak, basis), atol=1e-5)
    hf = lambda x: x - (lf_coefficients(x, basis).transpose(-1, -2) @ basis).view_as(x)  # noqa
    assert torch.allclose(hf(out), hf(init), atol=1e-5)
    half = swap_lowfreq(init, leak, basis, strength=0.5)
    mid = (lf_coefficients(init, basis) + lf_coefficients(leak, basis)) / 2
    assert torch.allclose(lf_coefficients(half, basis), mid, atol=1e-5)


def test_swap_keeps_unmasked_region_bit_identical_fp16():
    init, leak, basis = _setup()
    init = init.half()
    mask = torch.zeros(4, 16, 16)
    mask[:, 4:12, 4:12] = 1.0  # regenerated square
    out = swap_lowfreq(init, leak, basis, 1.0, mask=mask)
    assert out.dtype == torch.float16
    keep = mask == 0
    assert torch.equal(out[:, keep], init[:, keep])
    assert not torch.equal(out[:, ~keep], init[:, ~keep])


def test_swap_soft_mask_scales_the_move():
    init, leak, basis = _setup()
    full = swap_lowfreq(init, leak, basis, 1.0)
    soft = swap_lowfreq(init, leak, basis, 1.0, mask=torch.full((4, 16, 16), 0.25))
    assert torch.allclose(soft - init, 0.25 * (full - init), atol=1e-5)


def test_swap_only_fixed_channels_in_manual_mode():
    init, _, _ = _setup()
    s = LeakSampler(None, (4, 16, 16), means={1: 2.0})
    basis, channels = s.lowfreq_projector()
    out = swap_lowfreq(init, s.draw([0, 1]), basis, 1.0, channels=channels)
    assert torch.equal(out[:, [0, 2, 3]], init[:, [0, 2, 3]])
    assert torch.allclose(out[:, 1].mean(dim=(-2, -1)), torch.full((2,), 2.0), atol=1e-5)
    # the texture of channel 1 is kept
    centred = lambda x: x - x.mean(dim=(-2, -1), keepdim=True)  # noqa: E731
    assert torch.allclose(centred(out[:, 1]), centred(init[:, 1]), atol=1e-5)


def test_swap_strength_zero_returns_init():
    init, leak, basis = _setup()
    assert swap_lowfreq(init, leak, basis, 0.0) is init
