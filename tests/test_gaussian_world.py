"""The Gaussian world (DESIGN section 11): the paper's claim, end to end, without weights."""

import math

import pytest
import torch

from slb.dct import dct2
from slb.gaussian_world import (
    GaussianWorld,
    ddim_timesteps,
    euler_sample,
    run_gaussian_world,
    sd_alphas_cumprod,
    uniform_sigmas,
)


@pytest.fixture(scope="module")
def reports():
    reps = run_gaussian_world(steps=30, seed=0)
    for rep in reps:
        print("\n" + "\n".join(rep.lines()))
    return {r.sampler.split()[0]: r for r in reps}


def test_schedule_facts():
    ac = sd_alphas_cumprod()
    assert abs(float(ac[-1]) - 0.0047) < 1e-4
    sig = uniform_sigmas(ac, 20)
    assert abs(float(sig[0]) - 14.6146) < 1e-3 and float(sig[-1]) == 0.0
    ts = ddim_timesteps(20)
    assert int(ts[-1]) == 951 and int(ts[0]) == 1


def test_denoiser_is_the_posterior_mean():
    world = GaussianWorld.default(shape=(4, 8, 8))
    gen = torch.Generator().manual_seed(0)
    x0 = world.sample(20000, gen)
    sigma = 5.0
    x = x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    # E[x0 | x] regression residual is orthogonal to x: check on the DC coordinate
    d = world.denoise(x, sigma)
    resid = dct2(x0 - d)[:, 0, 0, 0]
    xd = dct2(x)[:, 0, 0, 0]
    assert abs(float(torch.corrcoef(torch.stack([resid, xd]))[0, 1])) < 0.03
    assert torch.allclose(dct2(world.denoise(x, sigma)), world.denoise_dct(dct2(x), sigma),
                          atol=1e-9)


def test_euler_from_the_true_marginal_recovers_the_data():
    world = GaussianWorld.default(shape=(4, 8, 8))
    gen = torch.Generator().manual_seed(1)
    sig = uniform_sigmas(sd_alphas_cumprod(), 40)
    x_t = world.sample(4000, gen) + float(sig[0]) * torch.randn((4000, 4, 8, 8), generator=gen,
                                                                dtype=torch.float64)
    out = euler_sample(world.denoise, x_t, sig)
    s = math.sqrt(float(world.dct_var[0, 0, 0]))
    assert abs(float(dct2(out)[:, 0, 0, 0].std()) / s - 1) < 0.05


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_plain_start_shrinks_by_the_closed_form(reports, sampler):
    r = reports[sampler]
    assert abs(r.plain_dc_std / r.predicted_plain_dc_std - 1) < 0.05
    # the mean is shrunk toward zero as predicted (within 5% of the data std)
    assert abs(r.plain_dc_mean - r.predicted_plain_dc_mean) < 0.05 * r.data_dc_std
    assert r.plain_dc_std < 0.7 * r.data_dc_std


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_leak_start_matches_the_data(reports, sampler):
    r = reports[sampler]
    assert abs(r.leak_dc_std / r.data_dc_std - 1) < 0.05
    assert abs(r.leak_dc_mean - r.data_dc_mean) < 0.05 * r.data_dc_std


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_frechet_distance_drops_at_least_five_fold(reports, sampler):
    r = reports[sampler]
    assert r.fd_plain > 5 * r.fd_leak


def test_demo_writes_a_figure(reports, tmp_path):
    pytest.importorskip("matplotlib", reason="the demo figure needs matplotlib (dev install)")
    from PIL import Image

    from slb.demo import _figure

    out = tmp_path / "world.png"
    _figure(list(reports.values()), out, overwrite=False)
    with Image.open(out) as img:
        assert img.width > 600 and img.height > 300
