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
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    model_channels: int = 320  # must be 320 for SD15 detection
    context_dim: int = 768  # must be 768 (CLIP-L) for SD15 detection
    levels: int = 1  # UNet levels; channel_mult = (1, 2, 4, 4)[:levels]
    res_blocks: int = 1  # res blocks per level
    attn_levels: int = 3  # levels (from the top) with a transformer, as in SD 1.5
    middle_attn: bool = True
    num_heads: int = 8
    latent_channels: int = 4
    # full-size VAE (SD 1.5)
    vae_ch: int = 128
    vae_ch_mult: tuple = (1, 2, 4, 4)
    vae_res_blocks: int = 2
    vae_logvar: float = -30.0
    # full-size CLIP-L
    text_hidden: int = 768
    text_layers: int = 12
    text_ff: int = 3072
    text_positions: int = 77
    vocab_size: int = 49408
    seed: int = 20250626

    @property
    def channel_mult(self):
        return (1, 2, 4, 4, 4, 4)[: self.levels]


class Keys(dict):
    def linear(self, name, n_in, n_out, bias=True):
        self[f"{name}.weight"] = ((n_out, n_in), "weight")
        if bias:
            self[f"{name}.bias"] = ((n_out,), "bias")

    def conv(self, name, n_in, n_out, k):
        self[f"{name}.weight"] = ((n_out, n_in, k, k), "weight")
        self[f"{name}.bias"] = ((n_out,), "bias")

    def norm(self, name, n):
        self[f"{name}.weight"] = ((n,), "norm_weight")
        self[f"{name}.bias"] = ((n,), "norm_bias")


# ----------------------------------------------------------------------------- UNet (LDM)


def _resblock(k, p, c_in, c_out, emb):
    k.norm(f"{p}.in_layers.0", c_in)
    k.conv(f"{p}.in_layers.2", c_in, c_out, 3)
    k.linear(f"{p}.emb_layers.1", emb, c_out)
    k.norm(f"{p}.out_layers.0", c_out)
    k.conv(f"{p}.out_layers.3", c_out, c_out, 3)
    if c_in != c_out:
        k.conv(f"{p}.skip_connection", c_in, c_out, 1)


def _transformer(k, p, c, ctx):
    k.norm(f"{p}.norm", c)
    k.conv(f"{p}.proj_in", c, c, 1)  # conv (4-D): use_linear_in_transformer False
    b = f"{p}.transformer_blocks.0"
    for attn, kv in (("attn1", c), ("attn2", ctx)):
        k.linear(f"{b}.{attn}.to_q", c, c, bias=False)
        k.linear(f"{b}.{attn}.to_k", kv, c, bias=False)
        k.linear(f"{b}.{attn}.to_v", kv, c, bias=False)
        k.linear(f"{b}.{attn}.to_out.0", c, c)
    k.linear(f"{b}.ff.net.0.proj", c, 8 * c)  # GEGLU: 2 * 4c
    k.linear(f"{b}.ff.net.2", 4 * c, c)
    for i in (1, 2, 3):
        k.norm(f"{b}.norm{i}", c)
    k.conv(f"{p}.proj_out", c, c, 1)


def unet_keys(s: Spec) -> Keys:
    k = Keys()
    mc, emb, ctx = s.model_channels, 4 * s.model_channels, s.context_dim
    k.linear("time_embed.0", mc, emb)
    k.linear("time_embed.2", emb, emb)
    k.conv("input_blocks.0.0", s.latent_channels, mc, 3)
    skips, ch, block = [mc], mc, 1
    last = len(s.channel_mult) - 1
    for level, mult in enumerate(s.channel_mult):
        for _ in range(s.res_blocks):
            _resblock(k, f"input_blocks.{block}.0", ch, mult * mc, emb)
            ch = mult * mc
            if level < s.attn_levels:
                _transformer(k, f"input_blocks.{block}.1", ch, ctx)
            skips.append(ch)
            block += 1
        if level != last:
            k.conv(f"input_blocks.{block}.0.op", ch, ch, 3)
            skips.append(ch)
            block += 1
    _resblock(k, "middle_block.0", ch, ch, emb)
    if s.middle_attn:
        _transformer(k, "middle_block.1", ch, ctx)
        _resblock(k, "middle_block.2", ch, ch, emb)
    block = 0
    for level in reversed(range(len(s.channel_mult))):
        mult = s.channel_mult[level]
        for i in range(s.res_blocks + 1):
            _resblock(k, f"output_blocks.{block}.0", ch + skips.pop(), mult * mc, emb)
            ch = mult * mc
            sub = 1
            if level < s.attn_levels:
                _transformer(k, f"output_blocks.{block}.1", ch, ctx)
                sub = 2
            if level and i == s.res_blocks:
                k.conv(f"output_blocks.{block}.{sub}.conv", ch, ch, 3)
            block += 1
    k.norm("out.0", ch)
    k.conv("out.2", mc, s.latent_channels, 3)
    return k


# ----------------------------------------------------------------------------- VAE (LDM)


def _vae_res(k, p, c_in, c_out):
    k.norm(f"{p}.norm1", c_in)
    k.conv(f"{p}.conv1", c_in, c_out, 3)
    k.norm(f"{p}.norm2", c_out)
    k.conv(f"{p}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        k.conv(f"{p}.nin_shortcut", c_in, c_out, 1)


def _vae_mid(k, p, c):
    _vae_res(k, f"{p}.mid.block_1", c, c)
    k.norm(f"{p}.mid.attn_1.norm", c)
    for n in ("q", "k", "v", "proj_out"):
        k.conv(f"{p}.mid.attn_1.{n}", c, c, 1)
    _vae_res(k, f"{p}.mid.block_2", c, c)


def vae_keys(s: Spec) -> Keys:
    k = Keys()
    z, mults, n = s.latent_channels, s.vae_ch_mult, len(s.vae_ch_mult)
    k.conv("encoder.conv_in", 3, s.vae_ch, 3)
    c = s.vae_ch
    for level in range(n):
        out = s.vae_ch * mults[level]
        for b in range(s.vae_res_blocks):
            _vae_res(k, f"encoder.down.{level}.block.{b}", c, out)
            c = out
        if level != n - 1:
            k.conv(f"encoder.down.{level}.downsample.conv", c, c, 3)
    _vae_mid(k, "encoder", c)
    k.norm("encoder.norm_out", c)
    k.conv("encoder.conv_out", c, 2 * z, 3)
    c = s.vae_ch * mults[-1]
    k.conv("decoder.conv_in", z, c, 3)
    _vae_mid(k, "decoder", c)
    for level in reversed(range(n)):
        out = s.vae_ch * mults[level]
        for b in range(s.vae_res_blocks + 1):
            _vae_res(k, f"decoder.up.{level}.block.{b}", c, out)
            c = out
        if level != 0:
            k.conv(f"decoder.up.{level}.upsample.conv", c, c, 3)
    k.norm("decoder.norm_out", c)
    k.conv("decoder.conv_out", c, 3, 3)
    k.conv("quant_conv", 2 * z, 2 * z, 1)
    k.conv("post_quant_conv", z, z, 1)
    return k


# ----------------------------------------------------------------------------- CLIP-L (HF)


def text_keys(s: Spec) -> Keys:
    k = Keys()
    h = s.text_hidden
    k["text_model.embeddings.token_embedding.weight"] = ((s.vocab_size, h), "embedding")
    k["text_model.embeddings.position_embedding.weight"] = ((s.text_positions, h), "embedding")
    for i in range(s.text_layers):
        p = f"text_model.encoder.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            k.linear(f"{p}.self_attn.{proj}", h, h)
        k.norm(f"{p}.layer_norm1", h)
        k.linear(f"{p}.mlp.fc1", h, s.text_ff)
        k.linear(f"{p}.mlp.fc2", s.text_ff, h)
        k.norm(f"{p}.layer_norm2", h)
    k.norm("text_model.final_layer_norm", h)
    return k


PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.transformer.",
}


def layout(s: Spec) -> dict:
    out = {}
    for part, keys in (
        ("unet", unet_keys(s)),
        ("vae", vae_keys(s)),
        ("text_encoder", text_keys(s)),
    ):
        out.update({PREFIXES[part] + name: v for name, v in keys.items()})
    return out


def state_dict(s: Spec, dtype=None) -> dict:
    import torch

    dtype = dtype or torch.float32
    sd = {}
    for key, (shape, kind) in layout(s).items():
        gen = torch.Generator().manual_seed(s.seed ^ zlib.crc32(key.encode()))
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if kind == "weight":
            fan_in = 1
            for n in shape[1:]:
                fan_in *= n
            t = noise / fan_in**0.5
        elif kind == "bias":
            t = noise * 0.02
        elif kind == "norm_weight":
            t = 1.0 + noise * 0.1
        elif kind == "norm_bias":
            t = noise * 0.1
        else:
            t = noise * 0.02
        sd[key] = t
    z = s.latent_channels
    sd["first_stage_model.quant_conv.weight"][z:] = 0.0
    sd["first_stage_model.quant_conv.bias"][z:] = s.vae_logvar
    sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(
        s.text_positions, dtype=torch.int64
    ).unsqueeze(0)
    return sd


def build(path: str, spec: Spec | None = None, fp16: bool = False) -> dict:
    import torch
    from safetensors.torch import save_file

    spec = spec or Spec()
    sd = state_dict(spec, torch.float16 if fp16 else torch.float32)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(sd, path, metadata={"format": "pt"})
    counts = {p: sum(1 for k in sd if k.startswith(pre)) for p, pre in PREFIXES.items()}
    counts["unet_params"] = sum(v.numel() for k, v in sd.items() if k.startswith(PREFIXES["unet"]))
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
    ap.add_argument("--seed", type=int, default=Spec.seed)
    ap.add_argument(
        "--verify", action="store_true", help="check against Forge's detection and modules"
    )
    ap.add_argument(
        "--forge-dir",
        default=os.environ.get("SLB_FORGE_DIR"),
        help="Forge checkout for --verify (default: $SLB_FORGE_DIR)",
    )
    a = ap.parse_args()
    spec = Spec(
        levels=a.levels, res_blocks=a.res_blocks, middle_attn=not a.no_middle_attn, seed=a.seed
    )
    counts = build(a.out, spec, fp16=a.fp16)
    print(a.out, counts, f"{os.path.getsize(a.out) / 2**20:.0f} MiB")
    if a.verify:
        if not a.forge_dir:
            ap.error("--verify needs --forge-dir or SLB_FORGE_DIR")
        verify(a.out, a.forge_dir)


if __name__ == "__main__":
    main()
