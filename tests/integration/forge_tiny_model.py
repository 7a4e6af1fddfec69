"""Build random-weight checkpoints that Stable Diffusion WebUI Forge (and its forks) load:
SD 1.5, SDXL and SD 2.x v-prediction, in the original (LDM/SGM) key layout.

Run with any interpreter that has torch and safetensors (the host's, in the suite):

    python forge_tiny_model.py OUT.safetensors [--family sd1|sdxl|sd2v] [--seed N]
        [--fp16] [--levels 1] [--res-blocks 1] [--no-middle-attn]
        [--verify [--forge-dir FORGE]]
    python forge_tiny_model.py --suite MODEL_DIR   # the suite's four checkpoints

``--verify`` imports Forge from ``--forge-dir`` (default: $SLB_FORGE_DIR) and checks the file
against Forge's own detection and modules. The real-host suite's conftest.py builds each
family through :func:`cached_build`: into the folder ``SLB_MODEL_CACHE`` names, reused while
this file and tiny_model.py are unchanged (the file name carries their digest), else into the
run's temporary folder.

What Forge reads, and why the parts have the sizes they have:

- huggingface_guess (repositories/huggingface_guess/huggingface_guess/detection.py,
  detect_unet_config) derives the whole UNet config from the UNet's key names and shapes, and
  model_list matches a family on a few of its entries; block counts are otherwise free:
  - SD15: model_channels 320, context_dim 768 (the first input-block transformer's
    attn2.to_k), conv proj_in, no label_emb. Here: one level with one res block (plus the
    middle block's transformer, which SAG/PAG-style patches address).
  - SDXL: model_channels 320, linear proj_in, context_dim 2048, adm_in_channels 2816
    (label_emb), and input transformer depths exactly [0, 0, 2, 2, 10, 10]. Here: one level
    of six res blocks with those depths, none in the output blocks, one in the middle
    (123M parameters; SD XL's own UNet has 2.6G).
  - SD20: model_channels 320, linear proj_in, context_dim 1024, no label_emb. Here: one
    level with one res block. Forge takes the prediction type from a ``<name>.yaml`` beside
    the checkpoint (``model.params.parameterization: v``, backend/loader.py 530-566), as
    Stability ships SD 2.x 768-v with v2-inference-v.yaml; without one it would use
    model_list.SD20.model_type, which never finds its key there (split_state_dict passes no
    prefix), so it would be eps. The builder writes that yaml for ``sd2v``.
- The VAE and text encoders are built from the fixed configs under
  backend/huggingface/<repo>/{vae,text_encoder,text_encoder_2}/config.json
  (backend/loader.py load_huggingface_component), so they are full size here: the LDM
  AutoencoderKL (ch 128, ch_mult (1,2,4,4), 2 res blocks, z 4; SDXL's scaling factor 0.13025
  comes from its config); CLIP-L (12 layers, 768 wide) for SD 1.5 and SDXL; OpenCLIP
  ViT-bigG (32 layers, 1280 wide) for SDXL and ViT-H (24 layers, 1024 wide; Forge's config
  keeps 23) for SD 2.x, in open-clip's layout (``transformer.resblocks.N.attn.in_proj_*``),
  which Forge converts. The tokenizers come from those folders too.

Weights are seeded random (each tensor from its own generator: seed ^ crc32(key)).
Norm weights are 1 + 0.1*N(0,1) and norm biases 0.1*N(0,1): with the default (1, 0)
LayerNorm the text encoder's output has zero mean and the UNet produces NaNs.
The VAE's quant_conv makes the posterior log-variance a constant -30 (zero weights, bias -30
on its second half), so an encoded image is, to float32 precision, the same latent every
time even though Forge's VAE.encode draws posterior.sample() from the global RNG.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import tiny_model  # noqa: E402  the LDM key layout and seeded weights, shared with A1111's

SEED = 20250626
# family -> default seed (the SDXL refiner of the suite is "sdxl" with another seed)
SEEDS = {"sd1": SEED, "sdxl": 20250627, "sd2v": 20250628}
SDXL_REFINER_SEED = 20250629
# what the real-host suite lays out: file name -> (family, seed, stored as fp16)
SUITE_MODELS = {
    "tiny.safetensors": ("sd1", SEEDS["sd1"], False),
    "tiny-sdxl.safetensors": ("sdxl", SEEDS["sdxl"], True),
    "tiny-sdxl-refiner.safetensors": ("sdxl", SDXL_REFINER_SEED, True),
    "tiny-sd2v.safetensors": ("sd2v", SEEDS["sd2v"], True),
}
UNET = "model.diffusion_model."
VAE = "first_stage_model."
# where each family keeps its text encoders, and in which layout
TEXT_ENCODERS = {
    "sd1": {"cond_stage_model.transformer.": "clip-l"},
    "sdxl": {"conditioner.embedders.0.transformer.": "clip-l",
             "conditioner.embedders.1.model.": "openclip-bigG"},
    "sd2v": {"cond_stage_model.model.": "openclip-H"},
}
# open-clip text towers: width, layers, MLP width
OPEN_CLIP = {"openclip-bigG": (1280, 32, 5120), "openclip-H": (1024, 24, 4096)}
# written as <name>.yaml beside an sd2v checkpoint: Forge reads the prediction type there
V_YAML = "model:\n  params:\n    parameterization: v\n"


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


def family_spec(family: str, seed: int | None = None, levels: int = 1, res_blocks: int = 1,
                middle_attention: bool = True) -> tiny_model.TinySpec:
    """The UNet, VAE and CLIP-L sizes of ``family`` (the module docstring says why)."""
    seed = SEEDS[family] if seed is None else seed
    if family == "sd1":
        return forge_spec(levels, res_blocks, middle_attention, seed)
    base = forge_spec(1, 1, True, seed)
    if family == "sdxl":
        return tiny_model.TinySpec(**{**base.__dict__, "num_res_blocks": 6,
                                      "transformer_depth": (0, 0, 2, 2, 10, 10),
                                      "transformer_depth_output": (0,) * 7,
                                      "linear_proj": True, "context_dim": 2048,
                                      "adm_in_channels": 2816})
    if family == "sd2v":
        return tiny_model.TinySpec(**{**base.__dict__, "linear_proj": True,
                                      "context_dim": 1024})
    raise ValueError(f"unknown family {family!r}")


def open_clip_text_keys(width: int, layers: int, mlp: int, vocab: int = 49408,
                        positions: int = 77) -> tiny_model._Keys:
    """An open-clip text tower's keys (what SD 2.x and SDXL checkpoints hold)."""
    k = tiny_model._Keys()
    k["token_embedding.weight"] = ((vocab, width), "embedding")
    k["positional_embedding"] = ((positions, width), "embedding")
    for i in range(layers):
        p = f"transformer.resblocks.{i}"
        k.norm(f"{p}.ln_1", width)
        k[f"{p}.attn.in_proj_weight"] = ((3 * width, width), "weight")
        k[f"{p}.attn.in_proj_bias"] = ((3 * width,), "bias")
        k.linear(f"{p}.attn.out_proj", width, width)
        k.norm(f"{p}.ln_2", width)
        k.linear(f"{p}.mlp.c_fc", width, mlp)
        k.linear(f"{p}.mlp.c_proj", mlp, width)
    k.norm("ln_final", width)
    k["text_projection"] = ((width, width), "weight_fan_in_first")  # used as x @ W
    return k


def family_layout(family: str, spec: tiny_model.TinySpec) -> dict:
    """Every tensor of a ``family`` checkpoint: key -> (shape, kind)."""
    parts = [(UNET, tiny_model.unet_keys(spec)), (VAE, tiny_model.vae_keys(spec))]
    for prefix, encoder in TEXT_ENCODERS[family].items():
        keys = (tiny_model.text_keys(spec) if encoder == "clip-l"
                else open_clip_text_keys(*OPEN_CLIP[encoder]))
        parts.append((prefix, keys))
    return {prefix + name: value for prefix, keys in parts for name, value in keys.items()}


def state_dict(family: str, spec: tiny_model.TinySpec, fp16: bool = False) -> dict:
    import torch

    sd = tiny_model.random_tensors(family_layout(family, spec), spec.seed,
                                   torch.float16 if fp16 else None)
    tiny_model.fix_vae_logvar(sd, VAE, spec.latent_channels, spec.vae_logvar)
    for prefix, encoder in TEXT_ENCODERS[family].items():
        if encoder == "clip-l":
            sd[f"{prefix}text_model.embeddings.position_ids"] = torch.arange(
                spec.text_positions, dtype=torch.int64).unsqueeze(0)
    return sd


def build(path: str, spec: tiny_model.TinySpec | None = None, fp16: bool = False,
          family: str = "sd1") -> dict:
    """Write a ``family`` checkpoint to ``path`` (atomically), and for ``sd2v`` its yaml;
    return tensor counts."""
    from safetensors.torch import save_file

    spec = spec or family_spec(family)
    sd = state_dict(family, spec, fp16)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    save_file(sd, partial, metadata={"format": "pt"})
    os.replace(partial, path)
    write_yaml(path, family)
    counts = {"unet": sum(1 for k in sd if k.startswith(UNET)),
              "vae": sum(1 for k in sd if k.startswith(VAE))}
    for prefix, encoder in TEXT_ENCODERS[family].items():
        counts[encoder] = sum(1 for k in sd if k.startswith(prefix))
    counts["unet_params"] = sum(v.numel() for k, v in sd.items() if k.startswith(UNET))
    return counts


def write_yaml(checkpoint: str | Path, family: str) -> None:
    if family == "sd2v":
        Path(checkpoint).with_suffix(".yaml").write_text(V_YAML, encoding="utf-8")


def builder_digest() -> str:
    """What the built files depend on: this builder and the layout module."""
    digest = hashlib.sha256()
    for name in ("forge_tiny_model.py", "tiny_model.py"):
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:12]


def cached_build(name: str, folder: Path, family: str, seed: int | None = None,
                 fp16: bool = False, cache: str | None = None) -> Path:
    """``folder/name`` holding a ``family`` checkpoint: a link to the file in the cache
    folder (``cache``, default $SLB_MODEL_CACHE) built once per builder digest, family,
    seed and precision, or built in place when no cache is set."""
    cache = cache if cache is not None else os.environ.get("SLB_MODEL_CACHE")
    target = Path(folder) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    seed = SEEDS[family] if seed is None else seed
    if not cache:
        build(str(target), family_spec(family, seed), fp16, family)
        return target
    stored = Path(cache) / (f"forge-{family}-{seed}-{'fp16' if fp16 else 'fp32'}-"
                            f"{builder_digest()}.safetensors")
    if not stored.is_file():
        build(str(stored), family_spec(family, seed), fp16, family)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(stored)
    write_yaml(target, family)  # Forge looks for it beside the name it lists
    return target


# ----------------------------------------------------------------------------- verification


# the model_list class Forge must detect for each family, and its prediction type
# (sd2v: v-prediction comes from the yaml beside the file, checked by the real-host suite)
DETECTED = {"sd1": ("SD15", "EPS"), "sdxl": ("SDXL", "EPS"), "sd2v": ("SD20", "EPS")}


def verify(path: str, forge_dir: str, family: str = "sd1") -> None:
    """Check the file against Forge's own detection, state-dict split and modules (no
    server needed): the detected class and prediction, and every component's keys and
    shapes against the module Forge builds for it."""
    import torch

    version = Path(forge_dir, "modules_forge", "forge_version.py")
    neo = version.is_file() and 'version = "neo"' in version.read_text()
    sys.argv = [sys.argv[0], "--cpu" if neo else "--always-cpu"]  # Neo has no --always-cpu
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path[:0] = [
        forge_dir,
        os.path.join(forge_dir, "packages_3rdparty"),
        os.path.join(forge_dir, "repositories", "huggingface_guess"),  # Forge
        os.path.join(forge_dir, "modules_forge", "packages"),  # Neo vendors it here
    ]
    from backend.loader import split_state_dict
    from backend.nn.clip import IntegratedCLIP
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    parts, guess = split_state_dict(path)
    detected = (type(guess).__name__, guess.model_type.name)
    assert detected == DETECTED[family], f"detected {detected}, want {DETECTED[family]}"
    shown = ("model_channels", "channel_mult", "num_res_blocks", "transformer_depth",
             "transformer_depth_middle", "transformer_depth_output", "context_dim",
             "adm_in_channels")
    print("detected:", *detected, {k: guess.unet_config.get(k) for k in shown})

    def compare(name: str, module: torch.nn.Module, have: dict, ignore: tuple = ()) -> None:
        def kept(k: str) -> bool:
            return not any(k.startswith(prefix) for prefix in ignore)

        want = {k: tuple(v.shape) for k, v in module.state_dict().items() if kept(k)}
        have = {k: tuple(v.shape) for k, v in have.items() if kept(k)}
        missing, extra = want.keys() - have.keys(), have.keys() - want.keys()
        bad = [k for k in want.keys() & have.keys() if want[k] != have[k]]
        assert not (missing or extra or bad), (name, sorted(missing)[:5], sorted(extra)[:5],
                                               bad[:5])
        print(f"{name}: {len(have)} tensors match Forge's module")

    hf = os.path.join(forge_dir, "backend", "huggingface", guess.huggingface_repo)
    with torch.device("meta"):
        unet = IntegratedUNet2DConditionModel.from_config(guess.unet_config)  # as loader.py
        vae = IntegratedAutoencoderKL.from_config(
            IntegratedAutoencoderKL.load_config(os.path.join(hf, "vae")))
    compare("unet", unet, parts[guess.unet_target])
    compare("vae", vae, parts[guess.vae_target])
    for component in guess.clip_target.values():
        config = CLIPTextConfig.from_pretrained(os.path.join(hf, component))
        with torch.device("meta"):
            clip = IntegratedCLIP(CLIPTextModel, config, add_text_projection=True)
        # what Forge's loader tolerates (backend/loader.py), and the layers its config drops
        # (SD 2.x's penultimate-layer encoder: 24 in the checkpoint, 23 in the config)
        ignore = ("transformer.text_projection.weight", "logit_scale",
                  "transformer.text_model.embeddings.position_ids",
                  *(f"transformer.text_model.encoder.layers.{n}."
                    for n in range(config.num_hidden_layers, 64)))
        compare(component, clip, parts[component], ignore)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output .safetensors path")
    ap.add_argument("--family", choices=sorted(SEEDS), default="sd1")
    ap.add_argument("--levels", type=int, default=1, help="sd1: UNet levels (1-4, default 1)")
    ap.add_argument("--res-blocks", type=int, default=1,
                    help="sd1: res blocks per UNet level (default 1)")
    ap.add_argument("--no-middle-attn", action="store_true",
                    help="sd1: omit the middle-block transformer")
    ap.add_argument("--fp16", action="store_true", help="store float16 (half the file size)")
    ap.add_argument("--seed", type=int, default=None, help="default: the family's")
    ap.add_argument("--verify", action="store_true",
                    help="check against Forge's detection and modules")
    ap.add_argument("--forge-dir", default=os.environ.get("SLB_FORGE_DIR"),
                    help="Forge checkout for --verify (default: $SLB_FORGE_DIR)")
    ap.add_argument("--suite", action="store_true",
                    help="OUT is a folder: build the real-host suite's checkpoints there")
    ap.add_argument("--families", default="sd1,sdxl,sd2",
                    help="with --suite: the families to build (default sd1,sdxl,sd2)")
    a = ap.parse_args()
    if a.suite:
        wanted = {"sd2" if f == "sd2v" else f for f in a.families.split(",")}
        for name, (family, seed, fp16) in SUITE_MODELS.items():
            if ("sd2" if family == "sd2v" else family) not in wanted:
                continue
            path = cached_build(name, Path(a.out), family, seed, fp16)
            print(f"{name} ({family}) -> {path.resolve()}")
        return
    spec = family_spec(a.family, a.seed, a.levels, a.res_blocks, not a.no_middle_attn)
    counts = build(a.out, spec, fp16=a.fp16, family=a.family)
    print(a.out, counts, f"{os.path.getsize(a.out) / 2**20:.0f} MiB")
    if a.verify:
        if not a.forge_dir:
            ap.error("--verify needs --forge-dir or SLB_FORGE_DIR")
        verify(a.out, a.forge_dir, a.family)


if __name__ == "__main__":
    main()
