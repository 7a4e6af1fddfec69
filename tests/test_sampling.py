import math

import numpy as np
import pytest
import torch

from slb.dct import dct2, lf_coefficients, lowfreq_basis, lowfreq_coords
from slb.preset import Preset
from slb.sampling import (
    IncompatiblePresetError,
    LeakSampler,
    leak_normals,
    leak_seed,
    resize_map,
    slerp,
)
from tests.conftest import make_preset

N = 4000  # draws for statistical checks; tolerances below are ~5 standard errors


def correlated_preset(n=3, c=4, hw=(16, 16), seed=0):
    """A dct+pixel preset with a strongly correlated random LF covariance."""
    gen = torch.Generator().manual_seed(seed)
    d = n * c
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    cov = a @ a.T / d + torch.diag(torch.rand(d, generator=gen, dtype=torch.float64)) * 0.1
    cov *= 25.0
    tensors = {"lf_mean": torch.randn(d, generator=gen) * 3,
               "lf_cov": cov.float(),
               "lf_coords": torch.tensor(lowfreq_coords(n, *hw)),
               "hf_mean": torch.randn(c, *hw, generator=gen) * 0.1,
               "hf_var": torch.rand(c, *hw, generator=gen) * 0.3 + 0.05}
    return Preset.create("dct+pixel", tensors, image_size=(hw[0] * 8, hw[1] * 8), images=100)


def lf_z(leaks, coords):
    h, w = leaks.shape[-2:]
    basis = lowfreq_basis(coords, h, w, dtype=leaks.dtype)
    z = lf_coefficients(leaks, basis)  # (B, n, C)
    return z.reshape(z.shape[0], -1).double()


# --- seeds ---------------------------------------------------------------------------------

def test_same_seed_same_leak_and_different_seeds_differ(dct_preset):
    s = LeakSampler(dct_preset, (4, 16, 16))
    assert torch.equal(s.draw([7]), s.draw([7]))
    assert torch.equal(LeakSampler(dct_preset, (4, 16, 16)).draw([7]), s.draw([7]))
    assert not torch.allclose(s.draw([7]), s.draw([8]))


def test_batch_draw_equals_individual_draws(dct_preset):
    s = LeakSampler(dct_preset, (4, 16, 16))
    batch = s.draw([3, 4, 5])
    for i, seed in enumerate([3, 4, 5]):
        assert torch.allclose(batch[i], s.draw([seed])[0], atol=1e-6)


def test_batch_leaks_are_independent():
    xi = torch.stack([leak_normals(20000, seed) for seed in range(8)])
    corr = torch.corrcoef(xi)
    off = corr - torch.eye(8)
    assert off.abs().max() < 4 / math.sqrt(20000)


def test_leak_uncorrelated_with_webui_noise_of_same_seed():
    for seed in (0, 1, 12345, 2**32 - 1):
        ours = leak_normals(4 * 64 * 64, seed)
        gen = torch.Generator().manual_seed(seed)
        theirs = torch.randn(4 * 64 * 64, generator=gen)
        r = float(torch.corrcoef(torch.stack([ours, theirs]))[0, 1])
        assert abs(r) < 4 / math.sqrt(ours.numel())
        assert leak_seed(seed) != seed


def test_normals_are_drawn_on_cpu_in_float32(dct_preset):
    s = LeakSampler(dct_preset, (4, 16, 16), dtype=torch.float64)
    xi = s.normals([1, 2])
    assert xi.device.type == "cpu" and xi.dtype == torch.float32
    assert xi.shape == (2, s.draw_size)


def test_dtype_does_not_change_the_leak(dct_preset):
    a = LeakSampler(dct_preset, (4, 16, 16), dtype=torch.float32).draw([5])
    b = LeakSampler(dct_preset, (4, 16, 16), dtype=torch.float64).draw([5])
    assert b.dtype == torch.float64
    assert torch.allclose(a.double(), b, atol=1e-4)


# --- variation seeds -----------------------------------------------------------------------

def test_variation_strength_zero_one_and_small(dct_preset):
    s = LeakSampler(dct_preset, (4, 16, 16))
    base, other = s.draw([10]), s.draw([99])
    assert torch.equal(s.draw([10], [99], 0.0), base)
    assert torch.allclose(s.draw([10], [99], 1.0), other, atol=1e-5)
    small = s.draw([10], [99], 0.05)
    mid = s.draw([10], [99], 0.5)
    d_small = (small - base).norm() / base.norm()
    d_mid = (mid - base).norm() / base.norm()
    assert 0 < d_small < 0.15
    assert d_mid > 3 * d_small


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(1000), torch.randn(1000)
    assert torch.allclose(slerp(0.0, a, b), a, atol=1e-6)
    assert torch.allclose(slerp(1.0, a, b), b, atol=1e-5)
    mid = slerp(0.5, a, b)
    assert abs(mid.norm() - (a.norm() + b.norm()) / 2) / a.norm() < 0.05  # stays on the shell


# --- pixel ---------------------------------------------------------------------------------

def test_pixel_leak_moments(pixel_preset):
    s = LeakSampler(pixel_preset, (4, 16, 16), dtype=torch.float64)
    leaks = s.draw(list(range(N)))
    mu, var = pixel_preset.tensors["mean"].double(), pixel_preset.tensors["var"].double()
    se = (var / N).sqrt()
    assert ((leaks.mean(0) - mu).abs() <= 5 * se + 1e-9).all()
    ratio = leaks.var(0) / var
    assert (ratio - 1).abs().max() < 5 * math.sqrt(2 / N) + 0.02


def test_pixel_same_size_is_bit_exact(pixel_preset):
    s = LeakSampler(pixel_preset, (4, 16, 16))
    xi = s.normals([3])
    expected = pixel_preset.tensors["mean"] + pixel_preset.tensors["var"].double().sqrt().float(
    ) * xi.view(1, 4, 16, 16)
    assert torch.equal(s._mean, pixel_preset.tensors["mean"])
    assert torch.allclose(s.from_normals(xi), expected, atol=1e-6, rtol=1e-6)


def test_pixel_zero_lf_removes_channel_means(pixel_preset):
    leaks = LeakSampler(pixel_preset, (4, 16, 16), lf_mode="zero").draw([1, 2, 3])
    assert leaks.mean(dim=(-2, -1)).abs().max() < 1e-6


def test_pixel_fixed_means_shift_only_those_channels(pixel_preset):
    free = LeakSampler(pixel_preset, (4, 16, 16)).draw([4])
    fixed = LeakSampler(pixel_preset, (4, 16, 16), means={1: 1.25}).draw([4])
    assert abs(float(fixed[0, 1].mean()) - 1.25) < 1e-6
    for ch in (0, 2, 3):
        assert torch.equal(fixed[0, ch], free[0, ch])
    # the pattern of channel 1 is kept, only its mean moves
    assert torch.allclose(fixed[0, 1] - fixed[0, 1].mean(), free[0, 1] - free[0, 1].mean(),
                          atol=1e-6)


# --- dct+pixel -----------------------------------------------------------------------------

def test_dct_leak_lf_moments_match_preset():
    preset = correlated_preset()
    s = LeakSampler(preset, (4, 16, 16), dtype=torch.float64)
    z = lf_z(s.draw(list(range(N))), preset.coords)
    mu = preset.tensors["lf_mean"].double()
    cov = preset.tensors["lf_cov"].double()
    se = torch.diagonal(cov).div(N).sqrt()
    assert ((z.mean(0) - mu).abs() <= 5 * se).all()
    emp = torch.cov(z.T)
    assert torch.linalg.norm(emp - cov) / torch.linalg.norm(cov) < 0.08


def test_dct_leak_hf_moments_match_preset():
    preset = correlated_preset()
    s = LeakSampler(preset, (4, 16, 16), dtype=torch.float64)
    leaks = s.draw(list(range(N)))
    basis = lowfreq_basis(preset.coords, 16, 16, dtype=torch.float64)
    lf = (lf_coefficients(leaks, basis).transpose(-1, -2) @ basis).view_as(leaks)
    hf = leaks - lf
    var = preset.tensors["hf_var"].double()
    # the LF projection removes n of h*w directions from the remainder: a small, known loss
    assert abs(float((hf.var(0) / var).mean()) - 1) < 0.05
    assert (hf.mean(0) - preset.tensors["hf_mean"].double()).abs().mean() < 0.05


def test_dct_zero_lf_mode_has_no_lf_content():
    preset = correlated_preset()
    leaks = LeakSampler(preset, (4, 16, 16), lf_mode="zero").draw([1, 2])
    assert lf_z(leaks, preset.coords).abs().max() < 1e-4
    leaks = LeakSampler(preset, (4, 16, 16), lf_mode="zero", means={0: 1.5}).draw([1])
    z = lf_z(leaks, preset.coords)[0]
    assert abs(float(z[0]) - 1.5 * 16) < 1e-4  # DC of channel 0 = m * sqrt(H*W)
    assert z[1:].abs().max() < 1e-4
    assert abs(float(leaks[0, 0].mean()) - 1.5) < 1e-6


def test_fixed_means_hit_exactly_and_rest_is_the_conditional_gaussian():
    preset = correlated_preset()
    c, n = 4, 3
    means = {0: 1.5, 2: -0.5}
    s = LeakSampler(preset, (4, 16, 16), dtype=torch.float64, means=means)
    leaks = s.draw(list(range(N)))
    for ch, m in means.items():
        assert (leaks[:, ch].mean(dim=(-2, -1)) - m).abs().max() < 1e-9
    z = lf_z(leaks, preset.coords)
    # independent reference: the Schur complement, in numpy
    mu = preset.tensors["lf_mean"].double().numpy()
    cov = preset.tensors["lf_cov"].double().numpy()
    fi = [0 * c + 0, 0 * c + 2]  # DC pair is component 0
    ri = [i for i in range(n * c) if i not in fi]
    x_f = np.array([1.5 * 16, -0.5 * 16])
    gain = cov[np.ix_(ri, fi)] @ np.linalg.inv(cov[np.ix_(fi, fi)])
    cmu = mu[ri] + gain @ (x_f - mu[fi])
    ccov = cov[np.ix_(ri, ri)] - gain @ cov[np.ix_(fi, ri)]
    zr = z[:, ri].numpy()
    se = np.sqrt(np.diag(ccov) / N)
    assert np.all(np.abs(zr.mean(0) - cmu) <= 5 * se)
    assert np.linalg.norm(np.cov(zr, rowvar=False) - ccov) / np.linalg.norm(ccov) < 0.08
    # the conditioning matters here: the unconditional mean is far from the conditional one
    assert np.abs(mu[ri] - cmu).max() > 20 * se.max()


def test_fixed_means_with_singular_covariance():
    preset = make_preset("dct+pixel", 6, count=5)  # 5 samples, 24 LF values: rank 4
    s = LeakSampler(preset, (4, 16, 16), means={0: 0.7, 3: -1.0})
    leaks = s.draw(list(range(50)))
    assert torch.isfinite(leaks).all()
    assert (leaks[:, 0].mean(dim=(-2, -1)) - 0.7).abs().max() < 1e-5
    assert (leaks[:, 3].mean(dim=(-2, -1)) + 1.0).abs().max() < 1e-5


def test_manual_mode_is_constant_means():
    leak = LeakSampler(None, (4, 8, 8), means={0: 1.5, 2: -0.5}).draw([3])[0]
    assert torch.equal(leak[0], torch.full((8, 8), 1.5))
    assert torch.equal(leak[2], torch.full((8, 8), -0.5))
    assert torch.equal(leak[1], torch.zeros(8, 8)) and torch.equal(leak[3], torch.zeros(8, 8))


# --- resolution ----------------------------------------------------------------------------

def test_resize_map_same_size_is_identity_and_modes():
    x = torch.rand(4, 16, 16)
    assert resize_map(x, 16, 16) is x
    big = resize_map(x, 32, 32)
    small = resize_map(x, 8, 8)
    assert big.shape == (4, 32, 32) and small.shape == (4, 8, 8)
    assert torch.allclose(small, torch.nn.functional.avg_pool2d(x[None], 2)[0])  # area
    assert torch.allclose(big.mean(dim=(1, 2)), x.mean(dim=(1, 2)), atol=1e-5)
    mixed = resize_map(x, 32, 8)
    assert mixed.shape == (4, 32, 8) and (mixed >= 0).all()


def test_same_size_uses_fitted_maps_bit_exact():
    preset = correlated_preset()
    s = LeakSampler(preset, (4, 16, 16))
    assert torch.equal(s._hf_mean, preset.tensors["hf_mean"])
    assert torch.equal(s._hf_std, preset.tensors["hf_var"].double().sqrt().float())


def test_lf_amplitude_is_preserved_at_twice_the_size():
    preset = correlated_preset()
    seeds = list(range(200))
    small = LeakSampler(preset, (4, 16, 16), dtype=torch.float64).draw(seeds)
    big = LeakSampler(preset, (4, 32, 32), dtype=torch.float64).draw(seeds)
    # same seed, same low frequencies: channel means identical across resolutions
    assert torch.allclose(small.mean(dim=(-2, -1)), big.mean(dim=(-2, -1)), atol=1e-9)
    # the LF image keeps its spatial pattern and amplitude
    lf_small = _lf_image(small, preset.coords)
    lf_big = _lf_image(big, preset.coords)
    pooled = torch.nn.functional.avg_pool2d(lf_big, 2)
    rel = (pooled - lf_small).norm() / lf_small.norm()
    assert rel < 0.02
    assert abs(float(lf_big.std() / lf_small.std()) - 1) < 0.02


def _lf_image(x, coords):
    h, w = x.shape[-2:]
    basis = lowfreq_basis(coords, h, w, dtype=x.dtype)
    return (lf_coefficients(x, basis).transpose(-1, -2) @ basis).view_as(x)


def test_lf_statistics_scale_with_area():
    preset = correlated_preset()
    big = LeakSampler(preset, (4, 32, 32), dtype=torch.float64).draw(list(range(N)))
    z = lf_z(big, preset.coords)
    mu = preset.tensors["lf_mean"].double() * 2  # sqrt(32*32 / (16*16))
    se = torch.diagonal(preset.tensors["lf_cov"].double() * 4).div(N).sqrt()
    assert ((z.mean(0) - mu).abs() <= 5 * se).all()


def test_non_square_and_smaller_targets_work(dct_preset, pixel_preset):
    for preset in (dct_preset, pixel_preset):
        for shape in ((4, 24, 16), (4, 8, 8), (4, 96, 64)):
            leak = LeakSampler(preset, shape).draw([1])
            assert leak.shape == (1, *shape) and torch.isfinite(leak).all()


# --- errors --------------------------------------------------------------------------------

def test_incompatible_channel_count_is_refused(dct_preset):
    with pytest.raises(IncompatiblePresetError, match="4 latent channels.*16"):
        LeakSampler(dct_preset, (16, 16, 16))


def test_bad_means_and_modes_rejected(dct_preset):
    with pytest.raises(ValueError, match="out of range"):
        LeakSampler(dct_preset, (4, 16, 16), means={4: 1.0})
    with pytest.raises(ValueError, match="finite"):
        LeakSampler(dct_preset, (4, 16, 16), means={0: float("nan")})
    with pytest.raises(ValueError, match="LF mode"):
        LeakSampler(dct_preset, (4, 16, 16), lf_mode="half")
    with pytest.raises(IncompatiblePresetError):
        LeakSampler(make_preset("dct+pixel", 10, shape=(4, 16, 16)), (4, 2, 2))


def test_dc_coefficient_matches_channel_mean(dct_preset):
    leak = LeakSampler(dct_preset, (4, 16, 16)).draw([2])[0].double()
    assert torch.allclose(dct2(leak)[:, 0, 0] / 16, leak.mean(dim=(1, 2)))
