"""The demo model (demo/): its training data, its networks' layout and schedule, and the
trained weights once they are committed in demo/model (skipped, saying so, until then).

The checks that need a WebUI (the host's own ldm modules compute the same function, and a
dark leak darkens the trained model's images in a real generation) are in
tests/integration/test_trained_model.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from demo import install_model, scenes
from demo.ldm_nets import timestep_embedding
from demo.train import SPEC, alphas_cumprod, to_unit, unet_for, vae_for

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import tiny_model  # noqa: E402

MODEL = REPO / "demo" / "model"
needs_weights = pytest.mark.skipif(
    not (MODEL / "SHA256SUMS").is_file(),
    reason="no trained demo weights committed yet (python -m demo.train demo/model)")


def test_scenes_depend_only_on_seed_and_index():
    a = scenes.scenes(6, seed=5, size=32)
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(a, scenes.scenes(6, seed=5, size=32))
    np.testing.assert_array_equal(a[:3], scenes.scenes(3, seed=5, size=32))
    assert not np.array_equal(a, scenes.scenes(6, seed=6, size=32))


def test_scenes_spread_brightness_and_colour_at_least_as_widely_as_photos():
    # coco128 at 128 px: brightness 0.43 +- 0.12, channel means spread 0.12 to 0.15
    bright, colour = scenes.brightness_and_colour(scenes.scenes(300, seed=1, size=48))
    assert 0.35 < bright.mean() < 0.55
    assert bright.std() > 0.12
    assert (colour.std(0) > 0.12).all()
    assert 0 < bright.min() and bright.max() < 1  # from night to noon, never saturated


def test_the_dark_style_is_drawn_the_same_way_but_darker():
    bright, _ = scenes.brightness_and_colour(scenes.scenes(200, seed=1, size=48))
    dark, _ = scenes.brightness_and_colour(scenes.scenes(200, seed=1, size=48, style="dark"))
    assert dark.mean() < bright.mean() - 0.1
    with pytest.raises(ValueError, match="style"):
        scenes.scene(np.random.default_rng(0), 32, "pastel")


def test_the_networks_use_ldms_key_names_and_shapes():
    for prefix, net, keys in (("model.diffusion_model.", unet_for(), tiny_model.unet_keys(SPEC)),
                              ("first_stage_model.", vae_for(), tiny_model.vae_keys(SPEC))):
        got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert got == {k: shape for k, (shape, _) in keys.items()}, prefix


def test_the_networks_shapes_and_the_schedule():
    unet, vae = unet_for().eval(), vae_for().eval()
    with torch.no_grad():
        mean, logvar = vae.encode(torch.zeros(1, 3, 64, 64))
        assert mean.shape == logvar.shape == (1, 4, 8, 8)
        assert vae.decode(mean).shape == (1, 3, 64, 64)
        out = unet(torch.randn(2, 4, 16, 16), torch.tensor([999.0, 0.5]), torch.zeros(2, 77, 32))
        assert out.shape == (2, 4, 16, 16)
    emb = timestep_embedding(torch.tensor([0.0]), 8)
    torch.testing.assert_close(emb, torch.tensor([[1.0] * 4 + [0.0] * 4]))
    abar = alphas_cumprod()
    # SD's schedule: abar at the last training timestep
    assert abar[-1].item() == pytest.approx(0.0047, abs=1e-4)
    assert torch.all(abar[1:] < abar[:-1])


@needs_weights
def test_the_committed_weights_match_their_sums_and_the_layout():
    from safetensors import safe_open

    names = install_model.check_sums(MODEL)
    assert names[0] == "scenes.safetensors"
    assert set(names) <= {"scenes.safetensors", "scenes-dark-unet.safetensors"}
    layout = tiny_model.checkpoint_layout(SPEC)
    with safe_open(str(MODEL / "scenes.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        metadata = f.metadata()
    position_ids = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    assert shapes.pop(position_ids) == (1, 77)
    assert shapes == {k: shape for k, (shape, _) in layout.items()}
    assert metadata["prompt"] == "a landscape" and float(metadata["scale_factor"]) > 0
    if "scenes-dark-unet.safetensors" in names:  # the optional style-tuned UNet
        with safe_open(str(MODEL / "scenes-dark-unet.safetensors"), "pt") as f:
            assert set(f.keys()) == {k for k in layout
                                     if k.startswith("model.diffusion_model.")}


@needs_weights
def test_the_style_stage_starts_from_the_committed_checkpoint_as_stored():
    """``demo.train --base``: the autoencoder and UNet of a checkpoint, fp16 weights in
    fp32, and its scale factor; the style-tuned UNet has the same layout and moved away."""
    from safetensors.torch import load_file

    from demo.train import load_checkpoint

    vae, unet, scale = load_checkpoint(MODEL / "scenes.safetensors")
    assert scale == install_model.scale_factor(MODEL / "scenes.safetensors")
    stored = load_file(str(MODEL / "scenes.safetensors"))
    for model, prefix in ((vae, "first_stage_model."), (unet, "model.diffusion_model.")):
        state = model.state_dict()
        assert set(state) == {k[len(prefix):] for k in stored if k.startswith(prefix)}
        for key, value in state.items():
            assert value.dtype == torch.float32
            assert torch.equal(value, stored[prefix + key].float()), key
    if (MODEL / "scenes-dark-unet.safetensors").is_file():
        tuned = load_file(str(MODEL / "scenes-dark-unet.safetensors"))
        changed = [k for k, v in tuned.items() if not torch.equal(v, stored[k])]
        assert len(changed) > 0.9 * len(tuned), f"only {len(changed)} of {len(tuned)} moved"


@needs_weights
def test_a_changed_weight_file_is_refused(tmp_path):
    for name in ("SHA256SUMS", "scenes.safetensors"):
        (tmp_path / name).write_bytes((MODEL / name).read_bytes())
    (tmp_path / "SHA256SUMS").write_text(
        (MODEL / "SHA256SUMS").read_text().splitlines()[0] + "\n")
    assert install_model.check_sums(tmp_path) == ["scenes.safetensors"]
    with open(tmp_path / "scenes.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ValueError, match="scenes.safetensors: sha256"):
        install_model.check_sums(tmp_path)


@needs_weights
def test_the_scale_factor_gives_the_training_latents_unit_spread():
    from demo.train import load_checkpoint

    vae, _, scale = load_checkpoint(MODEL / "scenes.safetensors")
    images = to_unit(scenes.scenes(64, seed=12, size=128))  # the first training scenes
    with torch.no_grad():
        mean, _ = vae.encode(images)
        recon = vae.decode(mean)
    assert (mean * scale).std().item() == pytest.approx(1.0, abs=0.1)
    # the autoencoder keeps the large-scale content the benchmark measures: the spread and
    # mean of per-image brightness (the committed weights: x1.005, 0.002 off), and each
    # image's mean colour to 0.04 at the median (0.03; the worst of the 64 is 0.18 off:
    # demo/README.md)
    def brightness(x: torch.Tensor) -> torch.Tensor:
        return ((x.clamp(-1, 1) + 1) / 2).mean((1, 2, 3))

    assert brightness(recon).std().item() == pytest.approx(brightness(images).std().item(),
                                                           rel=0.05)
    assert abs(brightness(recon).mean() - brightness(images).mean()).item() < 0.01
    diff = (recon - images).mean((2, 3)).abs().amax(1) / 2  # in [0, 1] units
    assert diff.median().item() < 0.04
