"""Build tiny random-weight SDXL and SD 2.x v-prediction checkpoints for the real-host tests.

Nothing is downloaded. Run with the A1111 WebUI's interpreter::

    python tiny_families.py WEBUI_DIR OUT_DIR

It writes into ``OUT_DIR`` (the WebUI's ``models/Stable-diffusion`` folder of the test data
dir):

- ``clip-tokenizer/``: the CLIP-L tokenizer folder of ``tiny_model.py`` (the SDXL CLIP-L
  text encoder is that tiny config too);
- ``open_clip/``: open-clip model configs for the small OpenCLIP text encoders
  (``SLB-tiny-OpenCLIP-XL``: SDXL's second encoder, ViT-bigG style; ``SLB-tiny-OpenCLIP-H``:
  SD 2.x's, ViT-H style). open-clip only builds architectures it has a config for, so the
  WebUI process registers this folder too (the test probe extension does, at import, when
  ``SLB_TEST_OPEN_CLIP_CONFIGS`` names it). OpenCLIP tokenizes with its own bundled BPE
  file, so it needs nothing else offline;
- ``tiny-sdxl.safetensors`` + ``tiny-sdxl.yaml``: an sgm ``DiffusionEngine`` like SD XL base
  (two text encoders whose penultimate/hidden states are concatenated as the cross-attention
  context, the pooled OpenCLIP output plus size/crop embeddings as the UNet's ``adm``/
  ``label_emb`` vector, eps prediction, ``LegacyDDPMDiscretization``, scale factor 0.13025),
  with small widths;
- ``tiny-sdxl-refiner.safetensors`` + ``.yaml``: the same architecture, other weights (a
  second model for the refiner tests);
- ``tiny-sd2v.safetensors`` + ``tiny-sd2v.yaml``: an ldm ``LatentDiffusion`` like
  ``v2-inference-v.yaml`` (``parameterization: v``, OpenCLIP penultimate layer as context,
  linear-in-transformer UNet, scale factor 0.18215), with small widths.

The yaml files are written as JSON (the YAML loader reads it). Each checkpoint is the
``state_dict()`` of the model that sgm/ldm instantiate from that very yaml, with seeded
random parameters, so its keys and shapes fit by construction. As in ``tiny_model.py``,
norm layers get weights near 1 and non-zero biases (a zero-mean text encoder output makes
A1111's emphasis step divide 0 by 0), and the VAE's posterior log-variance is fixed at -30.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import tiny_model  # noqa: E402

OPEN_CLIP_DIR = "open_clip"
OPEN_CLIP_XL = "SLB-tiny-OpenCLIP-XL"
OPEN_CLIP_H = "SLB-tiny-OpenCLIP-H"
SDXL = "tiny-sdxl"
SDXL_REFINER = "tiny-sdxl-refiner"
SD2V = "tiny-sd2v"
SEEDS = {SDXL: 20240202, SDXL_REFINER: 20240303, SD2V: 20240404}

CLIP_L = tiny_model.TinySpec()  # hidden 32, 3 layers
XL_OPENCLIP_WIDTH = 64
XL_POOLED = 32  # OpenCLIP embed_dim: the pooled text embedding in SDXL's vector
XL_SIZE_OUTDIM = 8  # ConcatTimestepEmbedderND outdim (SDXL: 256); x2 per (h, w) pair
XL_CONTEXT = CLIP_L.text_hidden + XL_OPENCLIP_WIDTH
XL_ADM = XL_POOLED + 3 * 2 * XL_SIZE_OUTDIM
H_OPENCLIP_WIDTH = 64
LOGVAR = -30.0


def open_clip_config(width: int, embed_dim: int) -> dict:
    """A small open-clip CLIP (the vision tower is built, then deleted by the embedders)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 28, "layers": 1, "width": 32, "head_width": 16,
                       "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width,
                     "heads": 2, "layers": 3},
    }


def _small_unet(context_dim: int, **extra: object) -> dict:
    """UNet params shared by the SDXL (sgm) and SD 2.x (ldm) configs: two levels of 32 and
    64 channels, linear projections in the transformers; ``extra`` adds each family's own."""
    return {
        "use_checkpoint": False,
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 32,
        "attention_resolutions": [1, 2],
        "num_res_blocks": 1,
        "channel_mult": [1, 2],
        "num_head_channels": 16,
        "use_spatial_transformer": True,
        "use_linear_in_transformer": True,
        "context_dim": context_dim,
        "legacy": False,
        **extra,
    }


def _vae(target: str) -> dict:
    return {
        "target": target,
        "params": {
            "embed_dim": 4,
            "monitor": "val/rec_loss",
            "ddconfig": {
                "attn_type": "vanilla",
                "double_z": True,
                "z_channels": 4,
                "resolution": 256,
                "in_channels": 3,
                "out_ch": 3,
                "ch": 32,
                "ch_mult": [1, 1, 1, 1],  # four levels: the latent is 8x smaller
                "num_res_blocks": 1,
                "attn_resolutions": [],
                "dropout": 0.0,
            },
            "lossconfig": {"target": "torch.nn.Identity"},
        },
    }


def sdxl_config(tokenizer_dir: Path) -> dict:
    """sgm's sd_xl_base.yaml with small widths."""
    size_embedder = {"target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND",
                     "params": {"outdim": XL_SIZE_OUTDIM}}
    return {"model": {
        "target": "sgm.models.diffusion.DiffusionEngine",
        "params": {
            "scale_factor": 0.13025,
            "disable_first_stage_autocast": True,
            "denoiser_config": {
                "target": "sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser",
                "params": {
                    "num_idx": 1000,
                    "weighting_config": {
                        "target": "sgm.modules.diffusionmodules.denoiser_weighting.EpsWeighting"},
                    "scaling_config": {
                        "target": "sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling"},
                    "discretization_config": {
                        "target": "sgm.modules.diffusionmodules.discretizer."
                                  "LegacyDDPMDiscretization"},
                },
            },
            "network_config": {
                "target": "sgm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": _small_unet(
                    XL_CONTEXT,
                    adm_in_channels=XL_ADM,
                    num_classes="sequential",
                    transformer_depth=[1, 1],
                    spatial_transformer_attn_type="softmax",
                ),
            },
            "conditioner_config": {
                "target": "sgm.modules.GeneralConditioner",
                "params": {"emb_models": [
                    {"is_trainable": False, "input_key": "txt",
                     "target": "sgm.modules.encoders.modules.FrozenCLIPEmbedder",
                     "params": {"version": str(tokenizer_dir), "layer": "hidden",
                                "layer_idx": CLIP_L.text_layers - 1}},
                    {"is_trainable": False, "input_key": "txt",
                     "target": "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2",
                     "params": {"arch": OPEN_CLIP_XL, "version": None, "freeze": True,
                                "layer": "penultimate", "always_return_pooled": True,
                                "legacy": False}},
                    {"is_trainable": False, "input_key": "original_size_as_tuple",
                     **size_embedder},
                    {"is_trainable": False, "input_key": "crop_coords_top_left",
                     **size_embedder},
                    {"is_trainable": False, "input_key": "target_size_as_tuple",
                     **size_embedder},
                ]},
            },
            "first_stage_config": _vae("sgm.models.autoencoder.AutoencoderKLInferenceWrapper"),
        },
    }}


def sd2v_config() -> dict:
    """ldm's v2-inference-v.yaml with small widths."""
    return {"model": {
        "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
        "params": {
            "parameterization": "v",
            "linear_start": 0.00085,
            "linear_end": 0.012,
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "timesteps": 1000,
            "first_stage_key": "jpg",
            "cond_stage_key": "txt",
            "image_size": 64,
            "channels": 4,
            "cond_stage_trainable": False,
            "conditioning_key": "crossattn",
            "monitor": "val/loss_simple_ema",
            "scale_factor": 0.18215,
            "use_ema": False,
            "unet_config": {
                "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": _small_unet(
                    H_OPENCLIP_WIDTH, use_fp16=False, image_size=32, transformer_depth=1
                ),
            },
            "first_stage_config": _vae("ldm.models.autoencoder.AutoencoderKL"),
            "cond_stage_config": {
                "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                "params": {"arch": OPEN_CLIP_H, "version": None, "freeze": True,
                           "layer": "penultimate"},
            },
        },
    }}


# --------------------------------------------------------------------------- in the WebUI env


def prepare_imports(webui_dir: Path, open_clip_dir: Path) -> None:
    """Make sgm and ldm importable, register the open-clip configs, and let transformers
    build the CLIP text model from the tokenizer folder's config (no weights to read)."""
    for repo in ("generative-models", "stable-diffusion-stability-ai"):
        path = str(webui_dir / "repositories" / repo)
        if path not in sys.path:
            sys.path.insert(0, path)
    import open_clip
    from transformers import CLIPTextConfig, CLIPTextModel

    open_clip.add_model_config(open_clip_dir)

    def from_config(cls, path, *args, **kwargs):  # noqa: ANN001, ANN202
        return cls(CLIPTextConfig.from_pretrained(path))

    CLIPTextModel.from_pretrained = classmethod(from_config)


def instantiate(config_path: Path):  # noqa: ANN201
    from omegaconf import OmegaConf

    config = OmegaConf.load(str(config_path))
    target = config.model.target
    if target.startswith("sgm."):
        from sgm.util import instantiate_from_config
    else:
        from ldm.util import instantiate_from_config
    return instantiate_from_config(config.model)


def randomize(model, seed: int) -> dict:  # noqa: ANN001
    """Seeded random values for every parameter (each from its own generator, seeded from
    ``seed`` and its key); buffers as the model built them. Returns the state dict."""
    import torch

    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, param in module.named_parameters(recurse=False):
                key = f"{module_name}.{name}" if module_name else name
                if isinstance(module, norms):
                    kind = "norm_weight" if name == "weight" else "norm_bias"
                elif isinstance(module, torch.nn.Embedding) or "embedding" in name:
                    kind = "embedding"
                elif name == "bias" or param.dim() < 2:
                    kind = "bias"
                elif name == "text_projection":  # used as x @ P: fan-in is its first axis
                    kind = "weight_fan_in_first"
                else:
                    kind = "weight"
                param.copy_(tiny_model.seeded_tensor(seed, key, tuple(param.shape), kind))
        # a narrow VAE posterior (see tiny_model.random_state_dict)
        quant = model.first_stage_model.quant_conv
        quant.weight[4:] = 0.0
        quant.bias[4:] = LOGVAR
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def write_config(path: Path, config: dict) -> None:
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def build(webui_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """Build the tokenizer, open-clip configs and the three checkpoints with their yamls."""
    from safetensors.torch import save_file

    webui_dir, out = Path(webui_dir).resolve(), Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = tiny_model.build_tokenizer(out / "clip-tokenizer", CLIP_L)
    open_clip_dir = out / OPEN_CLIP_DIR
    open_clip_dir.mkdir(exist_ok=True)
    write_config(open_clip_dir / f"{OPEN_CLIP_XL}.json",
                 open_clip_config(XL_OPENCLIP_WIDTH, XL_POOLED))
    write_config(open_clip_dir / f"{OPEN_CLIP_H}.json",
                 open_clip_config(H_OPENCLIP_WIDTH, H_OPENCLIP_WIDTH))
    prepare_imports(webui_dir, open_clip_dir)

    written = []
    for name, config in ((SDXL, sdxl_config(tokenizer_dir)),
                         (SDXL_REFINER, sdxl_config(tokenizer_dir)),
                         (SD2V, sd2v_config())):
        config_path = out / f"{name}.yaml"
        write_config(config_path, config)
        state = randomize(instantiate(config_path), SEEDS[name])
        checkpoint = out / f"{name}.safetensors"
        save_file(state, str(checkpoint), metadata={"format": "pt"})
        written.append(checkpoint)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("webui_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    for path in build(args.webui_dir, args.out_dir):
        print(path)


if __name__ == "__main__":
    main()
