"""Build a random-weight SD 1.5-layout checkpoint that Stable Diffusion WebUI Forge loads.

Run with Forge's interpreter (only torch and safetensors are needed to build):

    python forge_tiny_model.py OUT.safetensors [--levels 1] [--res-blocks 1] [--fp16]
        [--no-middle-attn] [--verify [--forge-dir FORGE]]

``--verify`` imports Forge from ``--forge-dir`` (default: $SLB_FORGE_DIR); the real-host
suite's conftest.py builds the default variant into its temporary data dir.

What Forge reads, and why the parts have the sizes they have:

- huggingface_guess (repositories/huggingface_guess/huggingface_guess/detection.py,
  detect_unet_config) derives the whole UNet config from the UNet's key names and shapes:
  model_channels = input_blocks.0.0.weight.shape[0], context_dim = the first input-block
  transformer's attn2.to_k.weight.shape[1], use_linear_in_transformer from proj_in's rank,
  channel_mult / num_res_blocks / transformer depths from which blocks exist. model_list.SD15
  matches on context_dim 768, model_channels 320, use_linear_in_transformer False,
  adm_in_channels None (no label_emb) -- block counts are free. So the UNet here has
  model_channels 320, context_dim 768, conv proj_in/proj_out, at least one input-block
  transformer (else context_dim is None and nothing matches), and by default a single
  level with one res block (+ the middle block with its transformer, which SAG/PAG-style
  patches address).
- The VAE and the CLIP-L text encoder are built from fixed configs under
  backend/huggingface/runwayml/stable-diffusion-v1-5/{vae,text_encoder}/config.json
  (backend/loader.py load_huggingface_component), so they are full size here:
  LDM AutoencoderKL ch 128, ch_mult (1,2,4,4), 2 res blocks, z 4; CLIP-L 12 layers,
  hidden 768, ff 3072, vocab 49408, 77 positions. The tokenizer also comes from that folder.

Weights are seeded random (each tensor from its own generator: seed ^ crc32(key)).
Norm weights are 1 + 0.1*N(0,1) and norm biases 0.1*N(0,1): with the default (1, 0)
LayerNorm the text encoder's output has zero mean and the UNet produces NaNs.
The VAE's quant_conv makes the posterior log-variance a constant -30 (zero weights, bias -30
on its second half), so an encoded image is, to float32 precision, the same latent every
time even though Forge's VAE.encode draws posterior.sample() from the global RNG.
"""

from __future__ import annotations

import argparse
import os
import sys

import tiny_model  # the LDM key layout and seeded weights, shared with the A1111 model

SEED = 20250626
PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.transformer.",
}


def forge_spec(
    levels: int = 1, res_blocks: int = 1, middle_attention: bool = True, seed: int = SEED
) -> tiny_model.TinySpec:
    """SD 1.5 sizes where Forge fixes them, a small UNet where it does not (docstring above)."""
    return tiny_model.TinySpec(
        model_channels=320,  # SD15 detection needs 320
        channel_mult=(1, 2, 4, 4)[:levels],
        num_res_blocks=res_blocks,
        attention_resolutions=(1, 2, 4),  # the first three levels, as in SD 1.5
        middle_attention=middle_attention,
        num_heads=8,
        vae_ch=128,
        vae_ch_mult=(1, 2, 4, 4),
        vae_res_blocks=2,
        text_hidden=768,  # also the UNet's context_dim: SD15 detection needs 768
        text_layers=12,
        text_heads=12,
        text_ff=3072,
        seed=seed,
    )


def build(path: str, spec: tiny_model.TinySpec | None = None, fp16: bool = False) -> dict:
    from safetensors.torch import save_file

    sd = tiny_model.random_state_dict(spec or forge_spec())
    if fp16:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(sd, path, metadata={"format": "pt"})
    counts = {p: sum(1 for k in sd if k.startswith(pre)) for p, pre in PREFIXES.items()}
    unet = (v.numel() for k, v in sd.items() if k.startswith(PREFIXES["unet"]))
    counts["unet_params"] = sum(unet)
    return counts


# ----------------------------------------------------------------------------- verification


def verify(path: str, forge_dir: str) -> None:
    """Check the file against Forge's own detection and modules (no server needed)."""
    import torch
    from safetensors.torch import load_file

    sys.argv = [sys.argv[0], "--always-cpu"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path[:0] = [
        forge_dir,
        os.path.join(forge_dir, "packages_3rdparty"),
        os.path.join(forge_dir, "repositories", "huggingface_guess"),
    ]
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL
    from huggingface_guess import detection, model_list
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = load_file(path)
    prefix = detection.unet_prefix_from_state_dict(sd)
    guess = detection.model_config_from_unet(sd, prefix)
    assert guess is not None and type(guess) is model_list.SD15, f"detected {type(guess)}"
    print(
        "detected:",
        type(guess).__name__,
        {
            k: guess.unet_config[k]
            for k in (
                "model_channels",
                "channel_mult",
                "num_res_blocks",
                "transformer_depth",
                "transformer_depth_middle",
                "transformer_depth_output",
                "context_dim",
            )
        },
    )

    def compare(name, module, prefix, ignore=()):
        want = {k: tuple(v.shape) for k, v in module.state_dict().items() if k not in ignore}
        have = {k[len(prefix) :]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)}
        have = {k: v for k, v in have.items() if k not in ignore}
        missing, extra = want.keys() - have.keys(), have.keys() - want.keys()
        bad = [k for k in want.keys() & have.keys() if want[k] != have[k]]
        assert not (missing or extra or bad), (
            name,
            sorted(missing)[:5],
            sorted(extra)[:5],
            bad[:5],
        )
        print(f"{name}: {len(have)} tensors match Forge's module")

    with torch.device("meta"):
        unet = IntegratedUNet2DConditionModel.from_config(guess.unet_config)  # as backend/loader.py
    compare("unet", unet, "model.diffusion_model.")
    hf = os.path.join(forge_dir, "backend", "huggingface", "runwayml", "stable-diffusion-v1-5")
    with torch.device("meta"):
        vae = IntegratedAutoencoderKL.from_config(
            IntegratedAutoencoderKL.load_config(os.path.join(hf, "vae"))
        )
    compare("vae", vae, "first_stage_model.")
    with torch.device("meta"):
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(hf, "text_encoder")))
    compare(
        "text_encoder",
        clip,
        "cond_stage_model.transformer.",
        ignore=("text_model.embeddings.position_ids",),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output .safetensors path")
    ap.add_argument("--levels", type=int, default=1, help="UNet levels (1-4, default 1)")
    ap.add_argument(
        "--res-blocks", type=int, default=1, help="res blocks per UNet level (default 1)"
    )
    ap.add_argument(
        "--no-middle-attn", action="store_true", help="omit the middle-block transformer"
    )
    ap.add_argument("--fp16", action="store_true", help="store float16 (half the file size)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument(
        "--verify", action="store_true", help="check against Forge's detection and modules"
    )
    ap.add_argument(
        "--forge-dir",
        default=os.environ.get("SLB_FORGE_DIR"),
        help="Forge checkout for --verify (default: $SLB_FORGE_DIR)",
    )
    a = ap.parse_args()
    spec = forge_spec(a.levels, a.res_blocks, not a.no_middle_attn, a.seed)
    counts = build(a.out, spec, fp16=a.fp16)
    print(a.out, counts, f"{os.path.getsize(a.out) / 2**20:.0f} MiB")
    if a.verify:
        if not a.forge_dir:
            ap.error("--verify needs --forge-dir or SLB_FORGE_DIR")
        verify(a.out, a.forge_dir)


if __name__ == "__main__":
    main()
