"""Put the trained demo model where a WebUI finds it.

``python -m demo.install_model MODELS_DIR`` (with the WebUI's interpreter, which has
open-clip-torch's BPE file for the tokenizer) checks the committed weights against
``demo/model/SHA256SUMS`` and writes into ``MODELS_DIR`` (a ``models/Stable-diffusion``
folder):

- ``scenes.safetensors`` and ``scenes.yaml``: the model trained on all scenes;
- ``scenes-dark.safetensors`` and ``scenes-dark.yaml``: the same model with the UNet
  fine-tuned on the dark style subset (when ``scenes-dark-unet.safetensors`` exists);
- ``scenes-clip-tokenizer/``: the tokenizer the configs name (CLIP's vocabulary).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "model"
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
import tiny_model  # noqa: E402

from demo.train import SPEC  # noqa: E402

CHECKPOINT = "scenes.safetensors"
STYLE_UNET = "scenes-dark-unet.safetensors"
STYLE_CHECKPOINT = "scenes-dark.safetensors"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sums(folder: Path = MODEL_DIR) -> list[str]:
    """The files listed in SHA256SUMS, after checking each; raises on a mismatch."""
    names = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        actual = sha256(folder / name)
        if actual != expected:
            raise ValueError(f"{name}: sha256 {actual} is not the recorded {expected}")
        names.append(name)
    return names


def scale_factor(checkpoint: Path) -> float:
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        return float(f.metadata()["scale_factor"])


def write_config(path: Path, tokenizer_dir: Path, scale: float) -> None:
    config = tiny_model.model_config(SPEC, tokenizer_dir)
    config["model"]["params"]["scale_factor"] = scale
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def install(models_dir: Path, source: Path = MODEL_DIR, bpe: Path | None = None
            ) -> list[Path]:
    """Write the demo checkpoints, configs and tokenizer; return the checkpoint paths."""
    from safetensors.torch import load_file, save_file

    names = check_sums(source)
    models_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = tiny_model.build_tokenizer(models_dir / "scenes-clip-tokenizer", SPEC, bpe)
    scale = scale_factor(source / CHECKPOINT)
    written = [models_dir / CHECKPOINT]
    shutil.copyfile(source / CHECKPOINT, written[0])
    write_config(models_dir / "scenes.yaml", tokenizer_dir, scale)
    if STYLE_UNET in names:
        weights = load_file(str(source / CHECKPOINT))
        weights.update(load_file(str(source / STYLE_UNET)))
        written.append(models_dir / STYLE_CHECKPOINT)
        save_file(weights, str(written[-1]), metadata={"format": "pt",
                                                       "scale_factor": str(scale)})
        write_config(models_dir / "scenes-dark.yaml", tokenizer_dir, scale)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models_dir", type=Path)
    parser.add_argument("--source", type=Path, default=MODEL_DIR)
    parser.add_argument("--bpe", type=Path, default=None)
    args = parser.parse_args()
    for path in install(args.models_dir.resolve(), args.source, args.bpe):
        print(path)


if __name__ == "__main__":
    main()
