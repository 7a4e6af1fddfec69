"""Train the demo model: a tiny SD 1.x latent diffusion model on procedural scenes.

Runs on the CPU with fixed seeds, in three stages (on this project's 2-core machine, one
torch thread, shared with other work, the committed run took 50 minutes for the
autoencoder, 10 for encoding the training scenes, 37 for the UNet and 38 for the style
UNet: about two and a quarter hours):

1. the autoencoder (SD's architecture at width 32, 8x downsampling, 4 latent channels) on
   64 px crops of scenes, then on whole 128 px scenes, mean-squared error (of the pixels
   and of 8x8 block means) plus a tiny KL term as SD's; the scale factor is then set so
   that the training latents have unit spread;
2. the UNet (A1111's LDM layout at width 32, eps prediction, SD's linear beta schedule
   0.00085..0.012 over 1000 steps) on the scaled latents of 128 px scenes (16x16 latents),
   conditioned on the tiny text encoder's embedding of ``PROMPT`` (the empty prompt's 10% of
   the time, so classifier-free guidance works), with an EMA of its weights;
3. optionally, the UNet fine-tuned on the "dark" style subset (the paper's case A: a
   style-tuned model), 3000 steps at a peak learning rate of 3e-4 by default.

Output in ``OUT_DIR``: ``scenes.safetensors`` (the full checkpoint in fp16: UNet, VAE and
the tiny seeded text encoder of tests/integration/tiny_model.py) and
``scenes-dark-unet.safetensors`` (the style-tuned UNet only), their ``SHA256SUMS``, and
``train-log.json``. The stages' state is saved as it goes (``stage-*.pt``, not committed):
a run started again with the same arguments continues where the last one stopped.
``demo/install_model.py`` turns them into checkpoints and configs the WebUI loads.

Run with the WebUI's interpreter (it has transformers and open-clip-torch's BPE file)::

    python -m demo.train demo/model
    # stage 3 alone, from a checkpoint this script wrote (how the committed style UNet was
    # made: the run that trained stages 1-2 had stopped before it)
    python -m demo.train demo/model --base demo/model/scenes.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from demo.ldm_nets import Autoencoder, UNet
from demo.scenes import scenes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import tiny_model  # noqa: E402  (the key layout, seeded text encoder and tokenizer)

PROMPT = "a landscape"
SPEC = tiny_model.TinySpec(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                           attention_resolutions=(2, 4), num_heads=4,
                           vae_ch=32, vae_ch_mult=(1, 1, 2, 2), vae_res_blocks=1)
IMAGE_SIZE = 128
SEED = 20261206
SCENE_SEEDS = {"vae": 11, "train": 12, "dark": 13}  # the measurement uses other seeds


def unet_for(spec: tiny_model.TinySpec = SPEC) -> UNet:
    return UNet(spec.latent_channels, spec.model_channels, spec.channel_mult,
                spec.num_res_blocks, spec.attention_resolutions, spec.num_heads,
                spec.context_dim or spec.text_hidden)


def vae_for(spec: tiny_model.TinySpec = SPEC) -> Autoencoder:
    return Autoencoder(spec.vae_ch, spec.vae_ch_mult, spec.vae_res_blocks, spec.latent_channels)


def alphas_cumprod() -> torch.Tensor:
    """SD's schedule: betas linear in sqrt from 0.00085 to 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def text_encoder_weights(spec: tiny_model.TinySpec = SPEC) -> dict[str, torch.Tensor]:
    """The seeded tiny text encoder as stored (fp16), under CLIPTextModel's key names."""
    weights = tiny_model.random_tensors(tiny_model.text_keys(spec), spec.seed,
                                        dtype=torch.float16)
    weights["text_model.embeddings.position_ids"] = torch.arange(
        spec.text_positions, dtype=torch.int64).unsqueeze(0)
    return weights


def prompt_embeddings(tokenizer_dir: Path, prompts: list[str],
                      spec: tiny_model.TinySpec = SPEC) -> torch.Tensor:
    """What A1111's SD 1.x text conditioning gives for ``prompts`` with these weights:
    BOS, the tokens, EOS padding to 77, the last hidden state (emphasis 1 changes nothing)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    model = CLIPTextModel(CLIPTextConfig.from_pretrained(str(tokenizer_dir))).eval()
    weights = {k: v.float() if v.is_floating_point() else v
               for k, v in text_encoder_weights(spec).items()}
    model.load_state_dict(weights, strict=False)
    ids = CLIPTokenizer.from_pretrained(str(tokenizer_dir))(
        prompts, padding="max_length", max_length=spec.text_positions,
        truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w, 3) to float (n, 3, h, w) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def _zero_last_layers(unet: UNet) -> None:
    """ldm's init: each residual branch's last layer starts at zero."""
    for module in unet.modules():
        for name in ("out_layers", "proj_out"):
            layer = getattr(module, name, None)
            conv = layer[-1] if isinstance(layer, torch.nn.Sequential) else layer
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.zeros_(conv.weight)
                torch.nn.init.zeros_(conv.bias)
    torch.nn.init.zeros_(unet.out[-1].weight)
    torch.nn.init.zeros_(unet.out[-1].bias)


def _lr(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _report(stage: str, step: int, steps: int, loss: float, started: float) -> None:
    elapsed = time.time() - started
    print(f"[{stage}] {step}/{steps} loss {loss:.4f} ({elapsed / 60:.1f} min, "
          f"{elapsed / max(step, 1):.2f} s/step)", flush=True)


def _mean_colour_error(vae: Autoencoder, images: torch.Tensor) -> float:
    """The round trip's largest per-image mean-colour error, in [0, 1] units."""
    with torch.no_grad():
        mean, _ = vae.encode(images)
        return ((vae.decode(mean) - images).mean((2, 3)).abs() / 2).max().item()


def train_vae(steps: int, n_scenes: int, log: dict, state: Path, every: int = 250
              ) -> Autoencoder:
    """The autoencoder stage. Its state goes to ``state`` every ``every`` steps, so a run
    started again continues; a finished stage saved there is loaded instead.

    The loss is SD's (pixel MSE, a tiny KL term) plus the MSE of 8x8 block means: what the
    benchmark measures is the images' large-scale content (brightness, colour), which a
    small autoencoder otherwise trades for detail. The first half trains on 64 px crops
    (16 a batch), the second on whole 128 px scenes (4 a batch, the same pixels): GroupNorm
    normalises over the whole image, and at width 32 (32 groups: one channel each) a
    network trained only on crops misjudged the colour of whole scenes (held-out mean
    colour off by 0.06 at the median after 1000 steps)."""
    vae = vae_for()
    torch.manual_seed(SEED)
    opt = torch.optim.AdamW(vae.parameters(), lr=4e-4, weight_decay=0.0)
    gen = torch.Generator().manual_seed(SEED + 1)
    started, running, first = time.time(), 0.0, 0
    if state.is_file():
        saved = torch.load(state, weights_only=True)
        vae.load_state_dict(saved["vae"])
        if "log" in saved:
            log["vae"] = json.loads(saved["log"])
            print(f"[vae] loaded the finished stage from {state}", flush=True)
            return vae.eval()
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        first, running = int(saved["step"]), float(saved["running"])
        started -= float(saved["seconds"])
        print(f"[vae] continuing from step {first} ({state})", flush=True)
    images = to_unit(scenes(n_scenes, SCENE_SEEDS["vae"], IMAGE_SIZE))
    held_out = to_unit(scenes(64, SCENE_SEEDS["train"], IMAGE_SIZE))
    pool = torch.nn.AvgPool2d(8)
    for step in range(first, steps):
        if step and step % every == 0:
            torch.save({"vae": vae.state_dict(), "opt": opt.state_dict(),
                        "gen": gen.get_state(), "step": step, "running": running,
                        "seconds": time.time() - started}, state)
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, 4e-4)
        crop, batch = (64, 16) if step < steps // 2 else (IMAGE_SIZE, 4)
        pick = torch.randint(len(images), (batch,), generator=gen)
        oy, ox = (int(v) for v in torch.randint(IMAGE_SIZE - crop + 1, (2,), generator=gen))
        x = images[pick, :, oy:oy + crop, ox:ox + crop]
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
        rec = vae.decode(z)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean()
        loss = ((rec - x).pow(2).mean() + 4 * (pool(rec) - pool(x)).pow(2).mean()
                + 1e-6 * kl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == steps - 1:
            _report("vae", step, steps, running, started)
        if step % 500 == 0 or step == steps - 1:
            vae.eval()
            print(f"[vae] held-out mean-colour error at most "
                  f"{_mean_colour_error(vae, held_out):.4f}", flush=True)
            vae.train()
    log["vae"] = {"steps": steps, "crops": "64 px x 16, then 128 px x 4", "scenes": n_scenes,
                  "final_loss": running, "minutes": (time.time() - started) / 60,
                  "mean_colour_error_max": _mean_colour_error(vae.eval(), held_out)}
    torch.save({"vae": vae.state_dict(), "log": json.dumps(log["vae"])}, state)
    return vae.eval()


@torch.no_grad()
def encode_all(vae: Autoencoder, images: torch.Tensor, batch: int = 64
               ) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(images), batch):
        mean, logvar = vae.encode(images[i:i + batch])
        means.append(mean)
        stds.append(torch.exp(0.5 * logvar))
    return torch.cat(means), torch.cat(stds)


def train_unet(unet: UNet, latents: tuple[torch.Tensor, torch.Tensor], scale: float,
               contexts: torch.Tensor, steps: int, peak_lr: float, stage: str, seed: int,
               log: dict, state: Path, every: int = 250) -> UNet:
    """eps-prediction training; returns the EMA of the weights. Every ``every`` steps the
    whole state (weights, EMA, optimiser, the data generator) goes to ``state``, and a run
    started again continues from there exactly as if it had not stopped."""
    torch.manual_seed(seed)
    mean, std = latents
    abar = alphas_cumprod()
    ema = unet_for()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=peak_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    batch, started, running, first = 64, time.time(), 0.0, 0
    if state.is_file():
        saved = torch.load(state, weights_only=True)
        unet.load_state_dict(saved["unet"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        first, running = int(saved["step"]), float(saved["running"])
        started -= float(saved["seconds"])
        print(f"[{stage}] continuing from step {first} ({state})", flush=True)
    cond, uncond = contexts[0:1], contexts[1:2]
    for step in range(first, steps):
        if step and step % every == 0:
            torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(),
                        "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                        "running": running, "seconds": time.time() - started}, state)
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, peak_lr)
        pick = torch.randint(len(mean), (batch,), generator=gen)
        x0 = (mean[pick] + std[pick] * torch.randn(mean[pick].shape, generator=gen)) * scale
        t = torch.randint(1000, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        drop = (torch.rand(batch, generator=gen) < 0.1).view(-1, 1, 1)
        context = torch.where(drop, uncond, cond)
        loss = (unet(xt, t, context) - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        running = 0.99 * running + 0.01 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == steps - 1:
            _report(stage, step, steps, running, started)
    log[stage] = {"steps": steps, "batch": batch, "peak_lr": peak_lr, "final_loss": running,
                  "minutes": (time.time() - started) / 60}
    return ema.eval()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoint(unet: UNet, vae: Autoencoder) -> dict[str, torch.Tensor]:
    out = {f"model.diffusion_model.{k}": v.half() for k, v in unet.state_dict().items()}
    out.update({f"first_stage_model.{k}": v.half() for k, v in vae.state_dict().items()})
    out.update({f"cond_stage_model.transformer.{k}": v
                for k, v in text_encoder_weights().items()})
    expected = tiny_model.checkpoint_layout(SPEC)
    missing = set(expected) - set(out)
    if missing:
        raise RuntimeError(f"checkpoint misses {sorted(missing)[:5]}")
    return {k: v.contiguous() for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--vae-steps", type=int, default=2500)
    parser.add_argument("--unet-steps", type=int, default=3000)
    parser.add_argument("--style-steps", type=int, default=3000, help="0: no style model")
    parser.add_argument("--style-lr", type=float, default=3e-4,
                        help="the style stage's peak learning rate")
    parser.add_argument("--scenes", type=int, default=12000, help="UNet training scenes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is steadier on a machine shared with other work)")
    parser.add_argument("--bpe", type=Path, default=None)
    parser.add_argument("--base", type=Path, default=None,
                        help="a checkpoint this script wrote: skip stages 1-2, run stage 3 on it")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"prompt": PROMPT, "seed": SEED, "image_size": IMAGE_SIZE,
                 "torch": torch.__version__}
    tokenizer_dir = tiny_model.build_tokenizer(out / ".clip-tokenizer", SPEC, args.bpe)
    contexts = prompt_embeddings(tokenizer_dir, [PROMPT, ""])

    if args.base:
        vae, ema, scale = load_checkpoint(args.base)
        log = _previous_log(out) | {"style_base": args.base.name}
    else:
        vae, ema, scale = train_base(args, out, contexts, log)
    if args.style_steps:
        train_style(args, out, vae, ema, scale, contexts, log)
    (out / "train-log.json").write_text(json.dumps(log, indent=2) + "\n")
    names = [n for n in ("scenes.safetensors", "scenes-dark-unet.safetensors")
             if (out / n).is_file()]
    (out / "SHA256SUMS").write_text("".join(f"{_sha256(out / n)}  {n}\n" for n in names))
    print(json.dumps(log, indent=2))


def _previous_log(out: Path) -> dict:
    path = out / "train-log.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def load_checkpoint(path: Path) -> tuple[Autoencoder, UNet, float]:
    """The autoencoder, UNet and scale factor of a checkpoint this script wrote (fp16
    weights, computed in fp32 as the WebUI's CPU path does)."""
    from safetensors import safe_open

    vae, unet = vae_for(), unet_for()
    with safe_open(str(path), "pt") as f:
        scale = float(f.metadata()["scale_factor"])
        for model, prefix in ((vae, "first_stage_model."), (unet, "model.diffusion_model.")):
            model.load_state_dict({k[len(prefix):]: f.get_tensor(k).float()
                                   for k in f.keys() if k.startswith(prefix)})
    return vae.eval(), unet.eval(), scale


def train_base(args: argparse.Namespace, out: Path, contexts: torch.Tensor, log: dict
               ) -> tuple[Autoencoder, UNet, float]:
    """Stages 1 and 2; writes scenes.safetensors."""
    from safetensors.torch import save_file

    vae = train_vae(args.vae_steps, 4000, log, out / "stage-vae.pt")
    images = to_unit(scenes(args.scenes, SCENE_SEEDS["train"], IMAGE_SIZE))
    mean, std = encode_all(vae, images)
    scale = float(f"{1 / mean.std().item():.5g}")
    with torch.no_grad():
        rec = vae.decode(mean[:256])
    log["scale_factor"] = scale
    log["vae"]["reconstruction_rmse_128px"] = (rec - images[:256]).pow(2).mean().sqrt().item()
    log["latent_posterior_std_mean"] = std.mean().item()
    rmse = log["vae"]["reconstruction_rmse_128px"]
    print(f"scale factor {scale}; reconstruction RMSE {rmse:.4f}", flush=True)
    del images

    torch.manual_seed(SEED + 4)  # the UNet's initial weights, also when the VAE was loaded
    unet = unet_for()
    _zero_last_layers(unet)
    ema = train_unet(unet, (mean, std), scale, contexts, args.unet_steps, 3e-4, "unet",
                     SEED + 2, log, out / "stage-unet.pt")
    save_file(checkpoint(ema, vae), str(out / "scenes.safetensors"), metadata=_metadata(scale))
    return vae, ema, scale


def _metadata(scale: float) -> dict[str, str]:
    return {"format": "pt", "scale_factor": str(scale), "prompt": PROMPT}


def train_style(args: argparse.Namespace, out: Path, vae: Autoencoder, base: UNet,
                scale: float, contexts: torch.Tensor, log: dict) -> None:
    """Stage 3: the base UNet fine-tuned on dark scenes; writes scenes-dark-unet.safetensors."""
    from safetensors.torch import save_file

    dark = to_unit(scenes(args.scenes // 4, SCENE_SEEDS["dark"], IMAGE_SIZE, "dark"))
    dark_latents = encode_all(vae, dark)
    del dark
    tuned = unet_for()
    tuned.load_state_dict(base.state_dict())
    tuned = train_unet(tuned, dark_latents, scale, contexts, args.style_steps, args.style_lr,
                       "style", SEED + 3, log, out / "stage-style.pt")
    save_file({f"model.diffusion_model.{k}": v.half().contiguous()
               for k, v in tuned.state_dict().items()},
              str(out / "scenes-dark-unet.safetensors"), metadata=_metadata(scale))


if __name__ == "__main__":
    main()
