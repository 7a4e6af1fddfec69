"""Build a tiny random-weight SD-1-style model for the real-host (WebUI) tests.

Nothing is downloaded. Given an output folder this writes:

- ``clip-tokenizer/``: a folder that transformers' ``CLIPTokenizer`` and ``CLIPTextConfig``
  read offline (``vocab.json``, ``merges.txt``, tokenizer config, special tokens and a
  small ``config.json`` for the text model). The vocabulary is the standard CLIP one, built
  from the BPE merges file that open-clip-torch ships (``bpe_simple_vocab_16e6.txt.gz``).
- ``tiny.safetensors``: seeded random weights for a LatentDiffusion model (UNet,
  AutoencoderKL, CLIP text encoder) under the key names the ldm modules use.
- ``tiny.yaml``: the model config that A1111 finds beside the checkpoint. It is written as
  JSON, which the YAML loader reads as well.

Only torch and safetensors are needed (plus the gz file). Run it as a script with the
WebUI's interpreter, ``python tiny_model.py OUT_DIR``, or import ``build``.

The key layout is derived here from the config numbers below; the real-host suite checks
it against the model that ldm instantiates from ``tiny.yaml``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # merges used by CLIP: vocab 49408 = 2*256 + merges + 2
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model. Every GroupNorm has 32 groups, so channel counts are
    multiples of 32."""

    # UNet
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (1, 2)
    # a transformer in the middle block (ldm's UNetModel always has one; only the Forge
    # checkpoint of forge_tiny_model.py may leave it out)
    middle_attention: bool = True
    num_heads: int = 2
    # Transformer blocks per input res block and per output block (default: one wherever
    # the level's downsampling factor is in attention_resolutions, as ldm's UNetModel does)
    # and in the middle block. Forge's detection matches SDXL on the input list.
    transformer_depth: tuple[int, ...] | None = None
    transformer_depth_output: tuple[int, ...] | None = None
    transformer_depth_middle: int = 1
    linear_proj: bool = False  # proj_in/proj_out as Linear (SD 2.x, SDXL) or 1x1 conv
    context_dim: int | None = None  # cross-attention context width (default text_hidden)
    adm_in_channels: int | None = None  # SDXL's vector conditioning (label_emb)
    # VAE: four levels, so the latent is 8x smaller than the image
    vae_ch: int = 32
    vae_ch_mult: tuple[int, ...] = (1, 1, 1, 1)
    vae_res_blocks: int = 1
    latent_channels: int = 4
    # log-variance of the VAE posterior (ldm clamps it to [-30, 20]): a real SD VAE's
    # posterior is narrow; random weights would make it wide, and img2img's init latent (a
    # posterior sample from the global RNG) would then change a lot between requests
    vae_logvar: float = -30.0
    # CLIP text encoder
    text_hidden: int = 32
    text_layers: int = 3
    text_heads: int = 2
    text_ff: int = 64
    text_positions: int = 77
    vocab_size: int = 49408
    seed: int = 20240101


# --------------------------------------------------------------------------- tokenizer


def find_bpe_vocab() -> Path:
    """Locate open_clip's (or openai clip's) BPE merges file without importing the package."""
    env = os.environ.get("SLB_BPE_VOCAB")
    if env:
        return Path(env)
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            candidate = Path(location) / BPE_FILE
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{BPE_FILE} not found: install open-clip-torch in this interpreter or set SLB_BPE_VOCAB"
    )


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE, in byte order of the
    printable ones first (as CLIP orders its base vocabulary)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    symbols = [chr(b) for b in printable]
    shifted = 0
    for b in range(256):
        if b not in printable:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def build_tokenizer(folder: Path, spec: TinySpec, bpe_gz: Path | None = None) -> Path:
    """Write a CLIPTokenizer folder (plus the tiny text-model config.json) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.decompress(Path(bpe_gz or find_bpe_vocab()).read_bytes()).decode("utf-8")
    merges = lines.split("\n")[1 : N_MERGES + 1]
    if len(merges) != N_MERGES:
        raise ValueError(f"expected {N_MERGES} merges, got {len(merges)}")

    base = byte_symbols()
    tokens = base + [s + "</w>" for s in base] + ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    if len(tokens) != spec.vocab_size or len(set(tokens)) != len(tokens):
        raise ValueError("vocabulary has the wrong size or duplicate entries")
    vocab = {t: i for i, t in enumerate(tokens)}

    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    tokenizer_config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": spec.text_positions,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    text_config = {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_ff,
        "projection_dim": spec.text_hidden,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "max_position_embeddings": spec.text_positions,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "pad_token_id": 1,
        "bos_token_id": vocab[BOS],
        "eos_token_id": vocab[EOS],
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(text_config, indent=2))
    return folder


# --------------------------------------------------------------------------- key layout
# Each entry: key -> (shape, kind); kind is "weight" (linear/conv), "bias", "norm_weight",
# "norm_bias" or "embedding". Shapes follow ldm's modules for the config in model_config().


class _Keys(dict):
    def linear(self, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
        self[f"{name}.weight"] = ((n_out, n_in), "weight")
        if bias:
            self[f"{name}.bias"] = ((n_out,), "bias")

    def conv(self, name: str, n_in: int, n_out: int, k: int) -> None:
        self[f"{name}.weight"] = ((n_out, n_in, k, k), "weight")
        self[f"{name}.bias"] = ((n_out,), "bias")

    def norm(self, name: str, n: int) -> None:
        self[f"{name}.weight"] = ((n,), "norm_weight")
        self[f"{name}.bias"] = ((n,), "norm_bias")


def _unet_resblock(k: _Keys, p: str, c_in: int, c_out: int, emb: int) -> None:
    k.norm(f"{p}.in_layers.0", c_in)
    k.conv(f"{p}.in_layers.2", c_in, c_out, 3)
    k.linear(f"{p}.emb_layers.1", emb, c_out)
    k.norm(f"{p}.out_layers.0", c_out)
    k.conv(f"{p}.out_layers.3", c_out, c_out, 3)
    if c_in != c_out:
        k.conv(f"{p}.skip_connection", c_in, c_out, 1)


def _unet_transformer(k: _Keys, p: str, c: int, context: int, depth: int = 1,
                      linear: bool = False) -> None:
    k.norm(f"{p}.norm", c)
    if linear:
        k.linear(f"{p}.proj_in", c, c)
    else:
        k.conv(f"{p}.proj_in", c, c, 1)
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        for attn, ctx in (("attn1", c), ("attn2", context)):
            k.linear(f"{b}.{attn}.to_q", c, c, bias=False)
            k.linear(f"{b}.{attn}.to_k", ctx, c, bias=False)
            k.linear(f"{b}.{attn}.to_v", ctx, c, bias=False)
            k.linear(f"{b}.{attn}.to_out.0", c, c)
        k.linear(f"{b}.ff.net.0.proj", c, 4 * c * 2)  # GEGLU
        k.linear(f"{b}.ff.net.2", 4 * c, c)
        for i in (1, 2, 3):
            k.norm(f"{b}.norm{i}", c)
    if linear:
        k.linear(f"{p}.proj_out", c, c)
    else:
        k.conv(f"{p}.proj_out", c, c, 1)


def transformer_depths(s: TinySpec) -> tuple[list[int], list[int]]:
    """Transformer blocks per input res block and per output block, in block order."""
    factors = [2**level for level in range(len(s.channel_mult))]  # downsampling per level
    inputs = [int(ds in s.attention_resolutions) for ds in factors
              for _ in range(s.num_res_blocks)]
    outputs = [int(ds in s.attention_resolutions) for ds in reversed(factors)
               for _ in range(s.num_res_blocks + 1)]
    return (list(s.transformer_depth) if s.transformer_depth is not None else inputs,
            list(s.transformer_depth_output) if s.transformer_depth_output is not None
            else outputs)


def unet_keys(s: TinySpec) -> _Keys:
    k = _Keys()
    mc, emb = s.model_channels, 4 * s.model_channels
    ctx = s.context_dim or s.text_hidden
    depths_in, depths_out = transformer_depths(s)
    if len(depths_in) != len(s.channel_mult) * s.num_res_blocks or \
            len(depths_out) != len(s.channel_mult) * (s.num_res_blocks + 1):
        raise ValueError("transformer depths do not match the UNet's blocks")
    k.linear("time_embed.0", mc, emb)
    k.linear("time_embed.2", emb, emb)
    if s.adm_in_channels:
        k.linear("label_emb.0.0", s.adm_in_channels, emb)
        k.linear("label_emb.0.2", emb, emb)
    k.conv("input_blocks.0.0", s.latent_channels, mc, 3)
    skips, ch, ds, block = [mc], mc, 1, 1
    last = len(s.channel_mult) - 1
    for level, mult in enumerate(s.channel_mult):
        for _ in range(s.num_res_blocks):
            _unet_resblock(k, f"input_blocks.{block}.0", ch, mult * mc, emb)
            ch = mult * mc
            depth = depths_in.pop(0)
            if depth:
                _unet_transformer(k, f"input_blocks.{block}.1", ch, ctx, depth, s.linear_proj)
            skips.append(ch)
            block += 1
        if level != last:
            k.conv(f"input_blocks.{block}.0.op", ch, ch, 3)
            skips.append(ch)
            ds *= 2
            block += 1
    _unet_resblock(k, "middle_block.0", ch, ch, emb)
    if s.middle_attention:
        _unet_transformer(k, "middle_block.1", ch, ctx, s.transformer_depth_middle,
                          s.linear_proj)
        _unet_resblock(k, "middle_block.2", ch, ch, emb)
    block = 0
    for level in reversed(range(len(s.channel_mult))):
        mult = s.channel_mult[level]
        for i in range(s.num_res_blocks + 1):
            _unet_resblock(k, f"output_blocks.{block}.0", ch + skips.pop(), mult * mc, emb)
            ch = mult * mc
            sub = 1
            depth = depths_out.pop(0)
            if depth:
                _unet_transformer(k, f"output_blocks.{block}.1", ch, ctx, depth, s.linear_proj)
                sub = 2
            if level and i == s.num_res_blocks:
                k.conv(f"output_blocks.{block}.{sub}.conv", ch, ch, 3)
                ds //= 2
            block += 1
    k.norm("out.0", ch)
    k.conv("out.2", mc, s.latent_channels, 3)
    return k


def _vae_resblock(k: _Keys, p: str, c_in: int, c_out: int) -> None:
    k.norm(f"{p}.norm1", c_in)
    k.conv(f"{p}.conv1", c_in, c_out, 3)
    k.norm(f"{p}.norm2", c_out)
    k.conv(f"{p}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        k.conv(f"{p}.nin_shortcut", c_in, c_out, 1)


def _vae_middle(k: _Keys, p: str, c: int) -> None:
    _vae_resblock(k, f"{p}.mid.block_1", c, c)
    k.norm(f"{p}.mid.attn_1.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        k.conv(f"{p}.mid.attn_1.{name}", c, c, 1)
    _vae_resblock(k, f"{p}.mid.block_2", c, c)


def vae_keys(s: TinySpec) -> _Keys:
    k = _Keys()
    z, mults, levels = s.latent_channels, s.vae_ch_mult, len(s.vae_ch_mult)
    # encoder
    k.conv("encoder.conv_in", 3, s.vae_ch, 3)
    c = s.vae_ch
    for level in range(levels):
        out = s.vae_ch * mults[level]
        for b in range(s.vae_res_blocks):
            _vae_resblock(k, f"encoder.down.{level}.block.{b}", c, out)
            c = out
        if level != levels - 1:
            k.conv(f"encoder.down.{level}.downsample.conv", c, c, 3)
    _vae_middle(k, "encoder", c)
    k.norm("encoder.norm_out", c)
    k.conv("encoder.conv_out", c, 2 * z, 3)
    # decoder
    c = s.vae_ch * mults[-1]
    k.conv("decoder.conv_in", z, c, 3)
    _vae_middle(k, "decoder", c)
    for level in reversed(range(levels)):
        out = s.vae_ch * mults[level]
        for b in range(s.vae_res_blocks + 1):
            _vae_resblock(k, f"decoder.up.{level}.block.{b}", c, out)
            c = out
        if level != 0:
            k.conv(f"decoder.up.{level}.upsample.conv", c, c, 3)
    k.norm("decoder.norm_out", c)
    k.conv("decoder.conv_out", c, 3, 3)
    k.conv("quant_conv", 2 * z, 2 * z, 1)
    k.conv("post_quant_conv", z, z, 1)
    return k


def text_keys(s: TinySpec) -> _Keys:
    k = _Keys()
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


def checkpoint_layout(s: TinySpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """All learned tensors of the LatentDiffusion model, under checkpoint key names."""
    layout: dict[str, tuple[tuple[int, ...], str]] = {}
    for prefix, keys in (
        ("model.diffusion_model.", unet_keys(s)),
        ("first_stage_model.", vae_keys(s)),
        ("cond_stage_model.transformer.", text_keys(s)),
    ):
        layout.update({prefix + name: value for name, value in keys.items()})
    return layout


# --------------------------------------------------------------------------- weights


def seeded_tensor(seed: int, key: str, shape: tuple[int, ...], kind: str):
    """Random values for one tensor from its own generator (seeded from ``seed`` and the key,
    so values do not depend on key order). ``kind``: "weight" (scaled by the fan-in of the
    axes after the first), "weight_fan_in_first" (a matrix used as ``x @ W``), "norm_weight",
    "norm_bias", "bias" or "embedding".

    Norm weights are 1 plus a small perturbation and norm biases are non-zero: with the
    default (1, 0) the text encoder's output has exactly zero mean and A1111's prompt
    emphasis rescaling divides 0 by 0."""
    import torch

    gen = torch.Generator().manual_seed(seed ^ zlib.crc32(key.encode()))
    noise = torch.randn(shape, generator=gen, dtype=torch.float32)
    if kind == "weight":
        fan_in = 1
        for n in shape[1:]:
            fan_in *= n
        return noise / fan_in**0.5
    if kind == "weight_fan_in_first":
        return noise / shape[0] ** 0.5
    if kind == "norm_weight":
        return 1.0 + noise * 0.1
    if kind == "norm_bias":
        return noise * 0.1
    return noise * 0.02  # bias, embedding


def random_tensors(layout: dict[str, tuple[tuple[int, ...], str]], seed: int,
                   dtype: object = None) -> dict:
    """Seeded random tensors (:func:`seeded_tensor`) for a key layout, each converted to
    ``dtype`` as soon as it is drawn (a multi-GB model never exists twice in memory)."""
    out = {}
    for key, (shape, kind) in layout.items():
        tensor = seeded_tensor(seed, key, shape, kind).contiguous()
        out[key] = tensor if dtype is None else tensor.to(dtype)
    return out


def fix_vae_logvar(sd: dict, prefix: str, latent_channels: int, logvar: float) -> None:
    """Zero weights and a ``logvar`` bias on the second half of ``quant_conv``'s output: the
    VAE posterior's log-variance is the constant ``logvar``."""
    sd[f"{prefix}quant_conv.weight"][latent_channels:] = 0.0
    sd[f"{prefix}quant_conv.bias"][latent_channels:] = logvar


def random_state_dict(s: TinySpec) -> dict:
    """Seeded random tensors (:func:`seeded_tensor`) for checkpoint_layout(s).

    The VAE's ``quant_conv`` gives a constant log-variance ``s.vae_logvar`` (the second half
    of its output channels: zero weights, that bias), so the posterior's std is about 3e-7
    and an encoded image is, to float32 precision, the same latent in every request."""
    import torch

    position_ids = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    out = random_tensors(checkpoint_layout(s), s.seed)
    fix_vae_logvar(out, "first_stage_model.", s.latent_channels, s.vae_logvar)
    out[position_ids] = torch.arange(s.text_positions, dtype=torch.int64).unsqueeze(0)
    return out


# --------------------------------------------------------------------------- config


def model_config(s: TinySpec, tokenizer_dir: Path) -> dict:
    """The ldm LatentDiffusion config (what A1111 reads from ``<checkpoint>.yaml``)."""
    return {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.00085,
                "linear_end": 0.012,
                "num_timesteps_cond": 1,
                "log_every_t": 200,
                "timesteps": 1000,
                "first_stage_key": "jpg",
                "cond_stage_key": "txt",
                "image_size": 64,
                "channels": s.latent_channels,
                "cond_stage_trainable": False,
                "conditioning_key": "crossattn",
                "monitor": "val/loss_simple_ema",
                "scale_factor": 0.18215,
                "use_ema": False,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": 32,
                        "in_channels": s.latent_channels,
                        "out_channels": s.latent_channels,
                        "model_channels": s.model_channels,
                        "attention_resolutions": list(s.attention_resolutions),
                        "num_res_blocks": s.num_res_blocks,
                        "channel_mult": list(s.channel_mult),
                        "num_heads": s.num_heads,
                        "use_spatial_transformer": True,
                        "transformer_depth": 1,
                        "context_dim": s.text_hidden,
                        "use_checkpoint": False,
                        "legacy": False,
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.AutoencoderKL",
                    "params": {
                        "embed_dim": s.latent_channels,
                        "monitor": "val/rec_loss",
                        "ddconfig": {
                            "double_z": True,
                            "z_channels": s.latent_channels,
                            "resolution": 256,
                            "in_channels": 3,
                            "out_ch": 3,
                            "ch": s.vae_ch,
                            "ch_mult": list(s.vae_ch_mult),
                            "num_res_blocks": s.vae_res_blocks,
                            "attn_resolutions": [],
                            "dropout": 0.0,
                        },
                        "lossconfig": {"target": "torch.nn.Identity"},
                    },
                },
                "cond_stage_config": {
                    "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                    "params": {"version": str(tokenizer_dir)},
                },
            },
        }
    }


# --------------------------------------------------------------------------- entry points


def build(out_dir: Path | str, spec: TinySpec | None = None, bpe_gz: Path | None = None) -> Path:
    """Build tokenizer, checkpoint and config in ``out_dir``; return the checkpoint path."""
    from safetensors.torch import save_file

    spec = spec or TinySpec()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = build_tokenizer(out / "clip-tokenizer", spec, bpe_gz)
    checkpoint = out / "tiny.safetensors"
    save_file(random_state_dict(spec), str(checkpoint), metadata={"format": "pt"})
    config = json.dumps(model_config(spec, tokenizer_dir), indent=2)
    (out / "tiny.yaml").write_text(config + "\n", encoding="utf-8")
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--bpe", type=Path, default=None, help=f"path of {BPE_FILE}")
    args = parser.parse_args()
    print(build(args.out_dir, bpe_gz=args.bpe))


if __name__ == "__main__":
    main()
