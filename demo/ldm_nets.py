"""The SD 1.x UNet and autoencoder at small width, written here for training.

The modules compute what ldm's ``openaimodel.UNetModel`` (spatial transformers, legacy
off) and ``autoencoder.AutoencoderKL`` compute for the same config, and their state dicts
use ldm's key names, so a checkpoint trained with them loads in the WebUI as-is. The key
layout is checked against ``tests/integration/tiny_model.py`` (which the real-host suite
checks against the model ldm builds), and the outputs against the WebUI's own modules by
``tests/integration/test_trained_model.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _group_norm(channels: int, eps: float) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=eps)


class _GroupNorm32(nn.GroupNorm):
    """The UNet's normalisation: computed in float32 whatever the input's type."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0
                       ) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: cosines, then sines."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


# --------------------------------------------------------------------------- UNet


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_GroupNorm32(c_in), nn.SiLU(),
                                       nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, c_out))
        self.out_layers = nn.Sequential(_GroupNorm32(c_out), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip_connection = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[..., None, None].type(x.dtype)
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, -1, h, d // h).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(d_head), as ldm
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, c: int, context_dim: int, heads: int, depth: int = 1) -> None:
        super().__init__()
        self.norm = _group_norm(c, 1e-6)
        self.proj_in = nn.Conv2d(c, c, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(c, context_dim, heads) for _ in range(depth))
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            y = block(y, context)
        return self.proj_out(y.transpose(1, 2).reshape(b, c, h, w)) + x


class Downsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Blocks(nn.ModuleList):
    """ldm's TimestepEmbedSequential: each layer gets what it needs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor
                ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """ldm's UNetModel for ``use_spatial_transformer=True``, ``transformer_depth=1``,
    ``legacy=False``, no scale-shift norm, ``num_heads`` heads (as tiny_model.TinySpec)."""

    def __init__(self, latent_channels: int, model_channels: int,
                 channel_mult: tuple[int, ...], num_res_blocks: int,
                 attention_resolutions: tuple[int, ...], num_heads: int,
                 context_dim: int) -> None:
        super().__init__()
        mc, emb = model_channels, 4 * model_channels
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))

        def transformer(c: int) -> SpatialTransformer:
            return SpatialTransformer(c, context_dim, num_heads)

        self.input_blocks = nn.ModuleList([_Blocks([nn.Conv2d(latent_channels, mc, 3,
                                                              padding=1)])])
        skips, ch, ds = [mc], mc, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mult * mc, emb)]
                ch = mult * mc
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(_Blocks(layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(_Blocks([Downsample(ch)]))
                skips.append(ch)
                ds *= 2
        self.middle_block = _Blocks([ResBlock(ch, ch, emb), transformer(ch),
                                     ResBlock(ch, ch, emb)])
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), channel_mult[level] * mc, emb)]
                ch = channel_mult[level] * mc
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(_Blocks(layers))
        self.out = nn.Sequential(_GroupNorm32(ch), nn.SiLU(),
                                 nn.Conv2d(mc, latent_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor
                ) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).type(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


# --------------------------------------------------------------------------- autoencoder


class VaeResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(c_in, 1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _group_norm(c_out, 1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = getattr(self, "nin_shortcut", None)
        return (x if shortcut is None else shortcut(x)) + h


class VaeAttention(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _group_norm(c, 1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]  # one head, scale 1/sqrt(c)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class _Mid(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = VaeResBlock(c, c), VaeAttention(c), \
            VaeResBlock(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Down(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # ldm pads right and bottom only


class _Level(nn.Module):
    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None,
                 name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            setattr(self, name, resample)
        self._resample = name if resample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return getattr(self, self._resample)(x) if self._resample else x


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        c = ch
        for level, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(VaeResBlock(c, ch * mult))
                c = ch * mult
            last = level == len(ch_mult) - 1
            self.down.append(_Level(blocks, None if last else _Down(c), "downsample"))
        self.mid = _Mid(c)
        self.norm_out = _group_norm(c, 1e-6)
        self.conv_out = nn.Conv2d(c, 2 * z, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z: int) -> None:
        super().__init__()
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z, c, 3, padding=1)
        self.mid = _Mid(c)
        levels: list[nn.Module] = []
        for level in reversed(range(len(ch_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(VaeResBlock(c, ch * ch_mult[level]))
                c = ch * ch_mult[level]
            levels.insert(0, _Level(blocks, Upsample(c) if level else None, "upsample"))
        self.up = nn.ModuleList(levels)  # indexed by level, as ldm's
        self.norm_out = _group_norm(c, 1e-6)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    """ldm's AutoencoderKL (``double_z``, no attention outside the middle blocks)."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                 latent_channels: int) -> None:
        super().__init__()
        z = latent_channels
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, z)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, z)
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (clamped as ldm's) of images in [-1, 1]."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))
