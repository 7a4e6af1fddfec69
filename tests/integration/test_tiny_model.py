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
from slb_webui import family_params

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
        pytest.skip("A1111 only (ldm model from tiny.yaml); Forge: see the next test")
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
    if not webui_setup.forge:
        pytest.skip("Forge only (huggingface_guess and Forge's own modules)")
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
