"""Low-frequency control (DESIGN 5, fixed LF components): fixed components are hit exactly at
any size, free ones follow the conditional Gaussian, manual patterns follow the formula, a
colour target reproduces itself through the linear map, a reference image's LF becomes the
leak's, and in the Gaussian world a fixed gradient steers the generated images' gradient."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from slb.dct import dct2, idct2, lf_coefficients, lowfreq_basis
from slb.fitting import FitAccumulator
from slb.gaussian_world import (
    GaussianWorld,
    ddim_sample,
    ddim_timesteps,
    euler_sample,
    sd_alphas_cumprod,
    uniform_sigmas,
)
from slb.infotext import infotext_entries, settings_from_infotext
from slb.lowfreq import (
    amplitudes,
    colour_means,
    format_components,
    parse_colour,
    parse_components,
    reference_components,
)
from slb.mixing import StartConvention, sampler_input, sampler_scaling
from slb.preview import linear_rgb_table
from slb.sampling import IncompatiblePresetError, LeakSampler, amplitude_scale
from slb.settings import LeakSettings, settings_from_args, settings_from_dict
from tests.conftest import make_preset

ROOT = Path(__file__).resolve().parents[1]
FIXED = {(0, 0, 1): 0.7, (1, 1, 0): -0.4, (2, 0, 1): 1.2}


@pytest.fixture(scope="module")
def dct6():
    return make_preset("dct+pixel", 6, shape=(4, 16, 16), model_family="sd1")


@pytest.mark.parametrize("kind", ["dct+pixel", "pixel", "manual"])
@pytest.mark.parametrize("size", [(16, 16), (24, 40), (64, 48), (9, 13)])
def test_fixed_components_are_hit_exactly_at_any_size(dct6, kind, size):
    preset = {"dct+pixel": dct6, "manual": None,
              "pixel": make_preset("pixel", shape=(4, 16, 16))}[kind]
    sampler = LeakSampler(preset, (4, *size), means={3: -0.8}, components=FIXED)
    leaks = sampler.draw([1, 2, 3])
    for leak in leaks:
        got = amplitudes(leak, [*FIXED, (3, 0, 0)])
        for key, want in {**FIXED, (3, 0, 0): -0.8}.items():
            assert got[key] == pytest.approx(want, abs=1e-5), (key, got[key])  # float32


def test_a_component_outside_the_preset_set_is_refused(dct6):
    with pytest.raises(IncompatiblePresetError, match=r"\(2,2\) are not in preset"):
        LeakSampler(dct6, (4, 16, 16), components={(0, 2, 2): 1.0})


def test_manual_patterns_equal_the_formula():
    h, w = 12, 20
    leak = LeakSampler(None, (4, h, w), means={0: 0.3}, components={
        (0, 0, 1): 0.5, (1, 1, 0): -0.25, (1, 2, 3): 0.1}).draw([0])[0].double()
    y = torch.arange(h, dtype=torch.float64)[:, None]
    x = torch.arange(w, dtype=torch.float64)[None, :]

    def pattern(u, v):
        return torch.cos(math.pi * (2 * y + 1) * u / (2 * h)) * torch.cos(
            math.pi * (2 * x + 1) * v / (2 * w))

    assert torch.allclose(leak[0], 0.3 + 0.5 * pattern(0, 1), atol=1e-6)
    assert torch.allclose(leak[1], -0.25 * pattern(1, 0) + 0.1 * pattern(2, 3), atol=1e-6)
    assert torch.count_nonzero(leak[2:]) == 0
    assert leak[0, :, 0].mean() > leak[0, :, -1].mean()  # (0,1) > 0: brighter on the left


def test_free_components_follow_the_conditional_gaussian(dct6):
    """With (0,0,1) fixed, the other LF values are the conditional Gaussian (Schur complement
    computed here independently, in float64, from the preset's own mean and covariance)."""
    value = 1.5
    sampler = LeakSampler(dct6, (4, 16, 16), components={(0, 0, 1): value})
    leaks = sampler.draw(list(range(6000))).double()
    coords = dct6.coords
    z = lf_coefficients(leaks, lowfreq_basis(coords, 16, 16, dtype=torch.float64))
    z = z.reshape(len(leaks), -1)  # component-major, as the file
    mu = dct6.tensors["lf_mean"].double()
    cov = dct6.tensors["lf_cov"].double()
    fixed = coords.index((0, 1)) * 4 + 0
    free = [i for i in range(len(mu)) if i != fixed]
    gain = cov[free][:, [fixed]] / cov[fixed, fixed]
    z_fixed = value / amplitude_scale(0, 1, 16, 16)
    want_mu = mu[free] + gain[:, 0] * (z_fixed - mu[fixed])
    want_cov = cov[free][:, free] - gain @ cov[[fixed]][:, free]
    assert torch.allclose(z[:, fixed], torch.full_like(z[:, fixed], z_fixed), atol=1e-4)
    got_mu = z[:, free].mean(0)
    got_cov = torch.cov(z[:, free].T)
    se = (want_cov.diagonal() / len(leaks)).sqrt()
    assert torch.all((got_mu - want_mu).abs() < 5 * se + 1e-6)
    scale = want_cov.diagonal().sqrt()
    assert torch.allclose(got_cov / torch.outer(scale, scale),
                          want_cov / torch.outer(scale, scale), atol=0.08)


def test_colour_solve_reproduces_the_target_through_the_linear_map():
    table = torch.tensor(linear_rgb_table("sd1"), dtype=torch.float64)
    for colour in ("#aa6633", "#3366cc", "#808080"):
        means, predicted = colour_means(colour, "sd1")
        m = torch.tensor([means[c] for c in range(4)], dtype=torch.float64)
        assert torch.allclose(table.T @ m, torch.tensor(parse_colour(colour),
                                                          dtype=torch.float64), atol=1e-9)
        assert predicted == colour
        # least norm: no solution of the 3 equations is shorter
        null = torch.linalg.svd(table.T).Vh[-1]
        assert float(m @ null) == pytest.approx(0.0, abs=1e-9)
    means, _ = colour_means("#aa6633", "sdxl", fixed={0: 0.5})
    assert 0 not in means and set(means) == {1, 2, 3}


def test_reference_components_read_back_from_a_latent():
    latent = torch.randn(4, 16, 24, generator=torch.Generator().manual_seed(0))
    values = reference_components(latent, None)
    assert set(values) == {(c, u, v) for c in range(4) for u, v in ((0, 0), (0, 1), (1, 0))}
    assert values[(2, 0, 0)] == pytest.approx(float(latent[2].mean()), abs=1e-6)
    dc = {c: values[(c, 0, 0)] for c in range(4)}
    rest = {k: a for k, a in values.items() if k[1:] != (0, 0)}
    leak = LeakSampler(None, (4, 16, 24), means=dc, components=rest).draw([0])[0]
    assert amplitudes(leak, list(values)) == pytest.approx(values, abs=1e-5)


def test_text_forms_round_trip_and_settings_carry_components():
    comps = {(0, 0, 1): 0.5, (3, 1, 0): -0.25}
    assert parse_components(format_components(comps)) == comps
    d = settings_from_dict({"components": {"0:0,1": 0.5, "3:1,0": -0.25, "1:0,0": 0.4},
                            "colour": "#aa6633"})
    assert d.components == comps and d.means == {1: 0.4} and d.colour == "#aa6633"
    p = settings_from_args([True, "manual (no preset)", 1.0, "sampled", False, 0.0, True, 0.4,
                            False, 0.0, False, 0.0, -1, True, 0.5, False, 0.0, *[False, 0.0] * 4,
                            False, 0.0, True, -0.25, True, "#aa6633"])
    assert p.components == comps and p.means == {1: 0.4} and p.colour == "#aa6633"
    entries = infotext_entries(d)
    assert entries["Signal leak components"] == "0:0,1=0.5;3:1,0=-0.25"
    back = settings_from_infotext({k: str(v) for k, v in entries.items()})
    assert back.components == comps and back.colour == "#aa6633"
    assert LeakSettings().to_args()[13:] == [False, 0.0] * 8 + [False, "#808080", None]


@pytest.mark.parametrize("bad", [{"components": {"0:0": 1}}, {"components": {"0:0,1": 9}},
                                 {"components": {"7:0,1": 1}}, {"colour": "orange"},
                                 {"reference_image": "not base64!"}, {"components": [1]}])
def test_bad_lowfreq_arguments_are_clear_errors(bad):
    from slb.settings import SettingsError

    with pytest.raises(SettingsError):
        settings_from_dict(bad)


# --- the Gaussian world: a fixed gradient steers the generated gradient ----------------------

@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_gaussian_world_generated_gradient_follows_the_fixed_one(sampler):
    """Data with a known Gaussian law and its exact denoiser. Fixing the leak's (0,1) gradient
    of channel 0 to ``a`` moves the generated images' gradient to the closed-form value
    ``a * g`` with the model's posterior gain ``g = sqrt(lam / (lam + sigma0^2))`` (the
    component is independent of the others here), and a plain start gives 0 on average."""
    world = GaussianWorld.default(shape=(4, 16, 16))
    gen = torch.Generator().manual_seed(1)
    acc = FitAccumulator("dct+pixel", world.shape, 3)
    acc.update(world.sample(4096, gen))
    preset = acc.to_preset(image_size=(128, 128))
    ac = sd_alphas_cumprod()
    steps = 30
    if sampler == "euler":
        sigmas = uniform_sigmas(ac, steps)
        conv = StartConvention.ve(float(sigmas[0]))

        def run(x):
            return idct2(euler_sample(world.denoise_dct, dct2(x), sigmas))
    else:
        ts = ddim_timesteps(steps)
        conv = StartConvention.vp(float(ac[ts[-1]]))

        def run(x):
            return idct2(ddim_sample(world.denoise_dct, dct2(x), ac, ts))
    n = 1024
    eps = torch.randn((n, *world.shape), generator=gen, dtype=torch.float64)
    lam = float(world.dct_var[0, 0, 1])
    gain = math.sqrt(lam / (lam + conv.sigma0**2))
    scale = sampler_scaling(conv)
    results = {}
    for a in (-2.0, 0.0, 2.0):
        leaks = LeakSampler(preset, world.shape, dtype=torch.float64,
                            components={(0, 0, 1): a}).draw(list(range(n)))
        out = run(sampler_input(eps, leaks, conv) * scale)
        got = torch.tensor([amplitudes(o, [(0, 0, 1)])[(0, 0, 1)] for o in out])
        results[a] = float(got.mean())
        spread = float(got.std()) / math.sqrt(n)
        print(f"[{sampler}] fixed gradient {a:+.1f}: generated {results[a]:+.4f}, "
              f"closed form {a * gain:+.4f} (gain {gain:.3f})")
        assert results[a] == pytest.approx(a * gain, abs=5 * spread + 0.02 * abs(a * gain))
    assert results[-2.0] < results[0.0] < results[2.0]
