"""The tiny checkpoint fits the model the host builds for it, key for key.

A1111 loads checkpoints with strict=False, so a missing or misnamed key would silently
leave zeros: this compares the written state dict with the model ldm instantiates from
tiny.yaml inside the WebUI's interpreter, and the tokenizer with CLIP's known ids. For
Forge, ``forge_tiny_model.verify`` checks that huggingface_guess detects the file as SD 1.5
and that every tensor matches Forge's own UNet, VAE and text-encoder modules."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from slb_webui import LDM_PATCHED, family_params

HERE = Path(__file__).resolve().parent

# Run by Forge's interpreter: argv = this folder, the checkpoint, the Forge checkout.
FORGE_CHECK = r"""
import sys
sys.path.insert(0, sys.argv[1])
import forge_tiny_model
forge_tiny_model.verify(sys.argv[2], sys.argv[3], sys.argv[4])
print("verified")
"""

# Run by the WebUI's interpreter; prints one JSON line.
CHECK = r"""
import json, sys
sys.path.insert(0, "repositories/stable-diffusion-stability-ai")
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

def from_config(cls, path, **kwargs):
    return cls(CLIPTextConfig.from_pretrained(path))

CLIPTextModel.from_pretrained = classmethod(from_config)
from omegaconf import OmegaConf
from ldm.util import instantiate_from_config
from safetensors.torch import load_file

config = OmegaConf.load(sys.argv[1])
model = instantiate_from_config(config.model)
expected = {k: list(v.shape) for k, v in model.state_dict().items()}
written = {k: list(v.shape) for k, v in load_file(sys.argv[2]).items()}
tokenizer = CLIPTokenizer.from_pretrained(config.model.params.cond_stage_config.params.version)
print(json.dumps({
    "expected": expected,
    "written": written,
    "ids": tokenizer("a photo of a cat")["input_ids"],
    "comma": tokenizer.get_vocab().get(",</w>"),
}))
"""

# Buffers that ldm computes from the config (the noise schedule); not stored.
SCHEDULE_BUFFERS = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
}


def test_checkpoint_keys_match_ldm_model(webui_setup):
    if webui_setup.forge:
        pytest.skip("A1111 only (ldm model from tiny.yaml); the Forge family has its own "
                    "checks below (the Forge checkpoints have no tiny.yaml)")
    run = subprocess.run(
        [webui_setup.python, "-c", CHECK, str(webui_setup.config), str(webui_setup.checkpoint)],
        cwd=webui_setup.webui_dir,
        env=webui_setup.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    expected = {k: v for k, v in result["expected"].items() if k not in SCHEDULE_BUFFERS}
    written = result["written"]
    assert sorted(set(expected) - set(written)) == []
    assert sorted(set(written) - set(expected)) == []
    assert {k: v for k, v in written.items() if expected[k] != v} == {}
    # CLIP's ids for these words: <|startoftext|> a photo of a cat <|endoftext|>
    assert result["ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert result["comma"] == 267


# Forge's checkpoints: file -> (builder family, the model_list class Forge must detect)
FORGE_MODELS = {
    "tiny.safetensors": ("sd1", "SD15"),
    "tiny-sdxl.safetensors": ("sdxl", "SDXL"),
    "tiny-sd2v.safetensors": ("sd2v", "SD20"),
}


@pytest.mark.parametrize("checkpoint", family_params(list(FORGE_MODELS)))
def test_checkpoint_keys_match_forge_modules(webui_setup, checkpoint):
    """huggingface_guess detects each family, and every component's keys and shapes equal
    those of the module Forge builds for it (forge_tiny_model.verify)."""
    if not webui_setup.forge or LDM_PATCHED:
        pytest.skip("Forge and Neo only: huggingface_guess and the backend/ modules; reForge "
                    "and Forge Classic have the older ldm_patched backend (the next test)")
    family, detected = FORGE_MODELS[checkpoint]
    run = subprocess.run(
        [webui_setup.python, "-c", FORGE_CHECK, str(HERE),
         str(webui_setup.model_dir / checkpoint), str(webui_setup.webui_dir), family],
        cwd=webui_setup.webui_dir,
        env=webui_setup.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    print(run.stdout.strip())
    assert f"detected: {detected} " in run.stdout
    parts = {"sd1": ("text_encoder",), "sdxl": ("text_encoder", "text_encoder_2"),
             "sd2v": ("text_encoder",)}[family]
    for part in ("unet", "vae", *parts):
        assert f"\n{part}: " in run.stdout, run.stdout
    assert run.stdout.count("match Forge's module") == 2 + len(parts)
    assert run.stdout.strip().endswith("verified")


# Run by reForge's or Forge Classic's interpreter: argv = the checkout, the checkpoint. Their
# loader detects the UNet with ldm_patched's model_detection and builds it with the detected
# config's get_model (R:modules_forge/forge_loader.py 246, C:95-110), loading with
# strict=False: a misnamed key would be left at its initial value.
LDM_PATCHED_CHECK = r"""
import inspect, os, sys
host_dir, path = sys.argv[1:3]
sys.argv = [sys.argv[0], "--always-cpu"]
sys.path.insert(0, host_dir)
from modules_forge.initialization import initialize_forge
initialize_forge()
import torch
from ldm_patched.modules import model_detection, utils

sd = utils.load_torch_file(path)
prefix = "model.diffusion_model."
if "dtype" in inspect.signature(model_detection.model_config_from_unet).parameters:
    config = model_detection.model_config_from_unet(sd, prefix, torch.float32)  # Classic
else:
    config = model_detection.model_config_from_unet(sd, prefix)
print("detected:", type(config).__name__)
unet = config.get_model(sd, prefix).diffusion_model
want = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
have = {k[len(prefix):]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)}
bad = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
print("missing:", sorted(want.keys() - have.keys())[:5], "extra:",
      sorted(have.keys() - want.keys())[:5], "bad:", bad[:5], "tensors:", len(want))
"""

LDM_PATCHED_MODELS = {
    "tiny.safetensors": "SD15",
    "tiny-sdxl.safetensors": "SDXL",
    "tiny-sd2v.safetensors": "SD20",
}


@pytest.mark.parametrize("checkpoint", family_params(list(LDM_PATCHED_MODELS)))
def test_checkpoint_keys_match_ldm_patched_unet(webui_setup, checkpoint):
    """reForge and Forge Classic: ldm_patched detects each family, and the UNet it builds
    for the detected config has exactly the checkpoint's keys and shapes. (Their VAE and
    text encoders have fixed full-size configs, the same as Forge's, which the Forge run's
    check covers; the family tests generate with all three.)"""
    if not LDM_PATCHED:
        pytest.skip("reForge and Forge Classic only (their ldm_patched backend)")
    run = subprocess.run(
        [webui_setup.python, "-c", LDM_PATCHED_CHECK, str(webui_setup.webui_dir),
         str(webui_setup.model_dir / checkpoint)],
        cwd=webui_setup.webui_dir, env=webui_setup.env, capture_output=True, text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    print(run.stdout.strip().splitlines()[-1])
    assert f"detected: {LDM_PATCHED_MODELS[checkpoint]}\n" in run.stdout, run.stdout
    assert "missing: [] extra: [] bad: [] tensors: " in run.stdout, run.stdout
