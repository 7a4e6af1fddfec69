"""Benchmark: the paper's effect on the trained demo model, measured in a real A1111.

Starts A1111 (``--webui-dir``, its interpreter ``--python``) with this extension and the
demo checkpoints (demo/install_model.py), fits presets through the extension's fit route
on training scenes, generates through ``/sdapi/v1/txt2img`` (20 steps, 128 px, the training
prompt, CFG 1 so the model's own distribution is measured) and prints, against the
training data:

- the mean and spread (standard deviation over images) of per-image brightness and of each
  channel's mean, and the spread as a ratio of the data's;
- a Frechet distance between Gaussians fitted to the low-frequency DCT components (each
  channel's 3x3 lowest, orthonormal DCT of the 128 px image) of generated and data images;
- the style preset (fitted on dark scenes) on the all-scenes model (the paper's case B)
  and on the dark-tuned model (case A): how much of the brightness gap it closes (these
  rows' spread ratio and LF Frechet distance are against the dark scenes);
- manual control: mean brightness against a fixed channel-0 leak mean.

The same seeds are used for every configuration, so rows differ only by the leak. The
autoencoder's round trip of data images is printed too: it bounds what any generation
through this VAE can reach. Writes everything to ``--out`` (JSON) and sample grids to
``--grids``. This is a benchmark that prints numbers, never a test.

    .venv/bin/python -m demo.measure --webui-dir A1111 --python A1111/venv/bin/python
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import linalg
from scipy.fft import dctn

from demo.scenes import brightness_and_colour, scenes

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a landscape"  # the training prompt (demo/train.py)
STEPS = 20
SIZE = 128
SEED = 500000  # image i of every configuration uses seed SEED + i
LF_K = 3
DATA_SEED, DARK_SEED = 12, 13  # the training scenes' seeds (demo/train.py SCENE_SEEDS)
FIT_IMAGES = 1024


def lf_components(images: np.ndarray, k: int = LF_K) -> np.ndarray:
    """Each channel's k x k lowest orthonormal DCT coefficients of uint8 images, flattened."""
    x = images.astype(np.float64) / 255
    h, w = x.shape[1:3]
    # as amplitudes (DESIGN 5): the DC component is then the channel's mean brightness
    coeffs = dctn(x, axes=(1, 2), norm="ortho")[:, :k, :k, :] / np.sqrt(h * w)
    return coeffs.reshape(len(images), -1)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and of ``b``."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def statistics(images: np.ndarray, data: dict) -> dict:
    bright, colour = brightness_and_colour(images)
    out = {"n": len(images), "brightness_mean": bright.mean(), "brightness_spread": bright.std(),
           "channel_means": colour.mean(0).tolist(), "channel_spreads": colour.std(0).tolist()}
    if data:
        out["spread_ratio"] = out["brightness_spread"] / data["brightness_spread"]
        out["channel_spread_ratios"] = (colour.std(0) / np.array(data["channel_spreads"])
                                        ).tolist()
        out["lf_frechet"] = frechet(lf_components(images), data["_lf"])
    return out


class Session:
    """One A1111 server with the extension and the demo checkpoints."""

    def __init__(self, server: object) -> None:
        self.server = server

    def fit(self, folder: Path, name: str, kind: str) -> dict:
        answer = self.server.post("/signal-leak/v1/fit", {
            "folder": str(folder), "name": name, "kind": kind, "resolution": SIZE,
            "overwrite": True})
        print(f"[fit] {name}: {kind}, {answer['images']} images, {answer['seconds']:.1f} s",
              flush=True)
        return answer

    def generate(self, checkpoint: str, sampler: str, n: int, leak: dict | None,
                 seed: int = SEED) -> np.ndarray:
        """``n`` images, image i with seed ``seed + i``; each batch's infotext must name the
        checkpoint and, with a leak, its preset."""
        images = []
        batch = 16
        for first in range(0, n, batch):
            request = {
                "prompt": PROMPT, "negative_prompt": "", "seed": seed + first,
                "subseed": -1, "subseed_strength": 0, "steps": STEPS, "width": SIZE,
                "height": SIZE, "cfg_scale": 1.0, "sampler_name": sampler,
                "scheduler": "Automatic", "batch_size": min(batch, n - first), "n_iter": 1,
                "send_images": True, "save_images": False,
                "override_settings": {"sd_model_checkpoint": checkpoint, "return_grid": False,
                                      "sgm_noise_multiplier": False, "randn_source": "GPU",
                                      "eta_noise_seed_delta": 0,
                                      "sd_noise_schedule": "Default"},
                "override_settings_restore_afterwards": True,
            }
            if leak is not None:
                request["alwayson_scripts"] = {"signal leak bias": {"args": [leak]}}
            answer = self.server.post("/sdapi/v1/txt2img", request)
            info = json.loads(answer["info"])["infotexts"][0]
            if f"Model: {Path(checkpoint).stem}," not in info:
                raise RuntimeError(f"not generated with {checkpoint}: {info}")
            if leak is not None and f"Signal leak: {leak['preset']}," not in info:
                raise RuntimeError(f"the leak was not applied: {info}")
            for data in answer["images"]:
                with Image.open(io.BytesIO(base64.b64decode(data))) as image:
                    images.append(np.asarray(image.convert("RGB")))
        return np.stack(images)


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return folder


def grid(images: np.ndarray, cols: int = 8) -> Image.Image:
    rows = (len(images) + cols - 1) // cols
    out = Image.new("RGB", (cols * SIZE, rows * SIZE))
    for i, image in enumerate(images):
        out.paste(Image.fromarray(image), ((i % cols) * SIZE, (i // cols) * SIZE))
    return out


def figure(columns: dict[str, np.ndarray], rows: int = 6) -> Image.Image:
    """The README figure: one column per configuration, one row per seed (the same seeds in
    every column), each column titled."""
    from PIL import ImageDraw

    title, pad = 28, 4
    out = Image.new("RGB", (len(columns) * (SIZE + pad) - pad, title + rows * (SIZE + pad)),
                    "white")
    draw = ImageDraw.Draw(out)
    for c, (name, images) in enumerate(columns.items()):
        x = c * (SIZE + pad)
        for line, text in enumerate(name.split("\n")[:2]):
            draw.text((x + 2, 2 + 12 * line), text, fill="black")
        for r, image in enumerate(images[:rows]):
            out.paste(Image.fromarray(image), (x, title + r * (SIZE + pad)))
    return out


def vae_round_trip(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    """Data images through the checkpoint's autoencoder (posterior mean), as A1111 does."""
    import torch

    from demo.train import load_checkpoint, to_unit

    vae = load_checkpoint(checkpoint)[0]
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            y = vae.decode(vae.encode(to_unit(images[i:i + 64]))[0]).clamp(-1, 1)
            out.append(((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def run(args: argparse.Namespace) -> dict:
    os.environ["SLB_WEBUI_DIR"] = str(args.webui_dir)
    os.environ["SLB_WEBUI_PYTHON"] = args.python
    for variable in ("SLB_FORGE_DIR", "SLB_NEO_DIR"):
        os.environ.pop(variable, None)
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import conftest  # the suite's own host start (flags, offline environment)

    root = Path(tempfile.mkdtemp(prefix="slb-demo-"))
    setup = conftest.WebUISetup(args.webui_dir.resolve(), args.python,
                                conftest.offline_env(), root)
    conftest.lay_out_data_dir(setup, checkpoint="scenes.safetensors")
    # with the WebUI's interpreter: it has open-clip-torch's BPE file for the tokenizer
    done = subprocess.run([args.python, "-m", "demo.install_model", str(setup.model_dir),
                           "--source", str(args.source.resolve())], cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"installing the demo model failed:\n{done.stdout}{done.stderr}")
    installed = [Path(line) for line in done.stdout.split()]
    print(f"[setup] {root}: {', '.join(p.name for p in installed)}", flush=True)

    n = args.images
    data_images = scenes(args.data, DATA_SEED, SIZE)
    data = statistics(data_images, {})
    data["_lf"] = lf_components(data_images)
    dark_images = scenes(args.data // 4, DARK_SEED, SIZE, "dark")
    dark = statistics(dark_images, {})
    dark["_lf"] = lf_components(dark_images)
    fit_dir = write_pngs(data_images[:FIT_IMAGES], root / "fit-scenes")
    dark_dir = write_pngs(dark_images[:FIT_IMAGES // 2], root / "fit-dark")
    results: dict = {"data": {k: v for k, v in data.items() if k != "_lf"},
                     "dark_data": {k: v for k, v in dark.items() if k != "_lf"},
                     "settings": {"steps": STEPS, "size": SIZE, "cfg_scale": 1.0,
                                  "prompt": PROMPT, "images": n, "fit_images": FIT_IMAGES,
                                  "data_images": args.data}}
    round_trip = vae_round_trip(setup.model_dir / "scenes.safetensors", data_images[:512])
    results["vae_round_trip"] = statistics(round_trip, data)
    grids: dict[str, np.ndarray] = {"data": data_images[:16]}

    def row(name: str, images: np.ndarray, reference: dict = data) -> None:
        """``reference``: the data the spread ratio and LF Frechet distance compare with
        (the dark style's for the style rows)."""
        results[name] = statistics(images, reference)
        grids[name] = images[:16]
        r = results[name]
        print(f"{name:34s} brightness {r['brightness_mean']:.3f} +- "
              f"{r['brightness_spread']:.3f} (x{r['spread_ratio']:.2f})  "
              f"LF Frechet {r['lf_frechet']:.4f}", flush=True)

    started = time.time()
    with conftest.start_server(setup, expect="scenes") as server:
        session = Session(server)
        results["fits"] = {
            "scenes-dct": session.fit(fit_dir, "scenes-dct", "dct+pixel"),
            "scenes-pixel": session.fit(fit_dir, "scenes-pixel", "pixel"),
            "dark-dct": session.fit(dark_dir, "dark-dct", "dct+pixel"),
        }
        model, tuned = "scenes.safetensors", "scenes-dark.safetensors"
        for sampler in ("Euler", "DDIM"):
            row(f"{sampler} plain noise", session.generate(model, sampler, n, None))
            row(f"{sampler} dct+pixel leak",
                session.generate(model, sampler, n, {"preset": "scenes-dct"}))
            row(f"{sampler} pixel leak",
                session.generate(model, sampler, n, {"preset": "scenes-pixel"}))
        row("B: all-scenes model + dark leak",
            session.generate(model, "Euler", n, {"preset": "dark-dct"}), dark)
        if any(p.name == tuned for p in installed):
            row("A: dark-tuned model, plain noise", session.generate(tuned, "Euler", n, None),
                dark)
            row("A: dark-tuned model + dark leak",
                session.generate(tuned, "Euler", n, {"preset": "dark-dct"}), dark)
        manual = []
        for mean in args.channel0:
            images = session.generate(model, "Euler", n // 4,
                                      {"preset": "scenes-dct", "means": {"0": mean}})
            manual.append({"channel0_mean": mean,
                           "brightness_mean": float(brightness_and_colour(images)[0].mean())})
            grids[f"channel 0 = {mean:+.2f}"] = images[:8]
        results["manual_channel0"] = manual
    results["generation_minutes"] = (time.time() - started) / 60
    summarise(results, dark)
    if args.grids:
        args.grids.mkdir(parents=True, exist_ok=True)
        for name, images in grids.items():
            signs = name.lower().replace("+", "plus").replace("= -", "= minus")
            slug = "".join(c if c.isalnum() else "-" for c in signs).strip("-")
            grid(images).save(args.grids / f"{slug}.png")
    if args.figure:
        low, high = min(args.channel0), max(args.channel0)
        columns = {"plain noise": grids["Euler plain noise"],
                   "natural leak\n(dct+pixel fit)": grids["Euler dct+pixel leak"],
                   "dark style leak": grids["B: all-scenes model + dark leak"],
                   f"manual: channel 0\nmean {low:+.1f}": grids[f"channel 0 = {low:+.2f}"],
                   f"manual: channel 0\nmean {high:+.1f}": grids[f"channel 0 = {high:+.2f}"]}
        if "A: dark-tuned model, plain noise" in grids:
            columns["dark-tuned model\nplain noise"] = grids["A: dark-tuned model, plain noise"]
            columns["dark-tuned model\n+ dark leak"] = grids["A: dark-tuned model + dark leak"]
        figure(columns).save(args.figure)
    return results


def summarise(results: dict, dark: dict) -> None:
    """The issue's goals, each with its number, met or not."""
    data = results["data"]
    goals = {}
    for sampler in ("Euler", "DDIM"):
        plain, leak = results[f"{sampler} plain noise"], results[f"{sampler} dct+pixel leak"]
        goals[f"{sampler}: plain-noise spread <= 0.85x data"] = (
            plain["spread_ratio"], plain["spread_ratio"] <= 0.85)
        goals[f"{sampler}: dct+pixel spread within 10% of data"] = (
            leak["spread_ratio"], abs(leak["spread_ratio"] - 1) <= 0.10)
        gain = plain["lf_frechet"] / leak["lf_frechet"]
        goals[f"{sampler}: LF Frechet >= 5x lower with dct+pixel"] = (gain, gain >= 5)
    plain = results["Euler plain noise"]["brightness_mean"]
    styled = results["B: all-scenes model + dark leak"]["brightness_mean"]
    closed = (plain - styled) / (plain - dark["brightness_mean"])
    goals["B: dark leak closes >= 70% of the brightness gap"] = (closed, closed >= 0.70)
    if "A: dark-tuned model, plain noise" in results:
        plain_a = results["A: dark-tuned model, plain noise"]["brightness_mean"]
        styled_a = results["A: dark-tuned model + dark leak"]["brightness_mean"]
        results["A_gap_closed"] = (plain_a - styled_a) / (plain_a - dark["brightness_mean"])
        goals["A: dark leak closes >= 70% of the brightness gap (tuned model)"] = (
            results["A_gap_closed"], results["A_gap_closed"] >= 0.70)
    manual = [m["brightness_mean"] for m in results["manual_channel0"]]
    steps = np.diff(manual)
    monotone = bool(np.all(steps > 0) or np.all(steps < 0))
    goals["manual: brightness monotone in channel-0 mean"] = (
        float(np.corrcoef(results_channel0(results), manual)[0, 1]), monotone)
    results["goals"] = {k: {"value": float(v), "met": bool(ok)} for k, (v, ok) in goals.items()}
    print(f"\ndata: brightness {data['brightness_mean']:.3f} +- {data['brightness_spread']:.3f}; "
          f"dark style {dark['brightness_mean']:.3f}; VAE round trip spread "
          f"x{results['vae_round_trip']['spread_ratio']:.2f}, LF Frechet "
          f"{results['vae_round_trip']['lf_frechet']:.4f}")
    print("manual channel-0 means -> brightness: " + ", ".join(
        f"{m['channel0_mean']:+.2f} -> {m['brightness_mean']:.3f}"
        for m in results["manual_channel0"]))
    for name, (value, ok) in goals.items():
        print(f"{'met    ' if ok else 'NOT met'}  {name}: {value:.3f}")


def results_channel0(results: dict) -> list[float]:
    return [m["channel0_mean"] for m in results["manual_channel0"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webui-dir", type=Path, required=True)
    parser.add_argument("--python", required=True, help="the WebUI's interpreter")
    parser.add_argument("--images", type=int, default=256, help="images per configuration")
    parser.add_argument("--data", type=int, default=2048, help="data images for the reference")
    parser.add_argument("--channel0", type=float, nargs="+",
                        default=[-1.0, -0.5, 0.0, 0.5, 1.0])
    parser.add_argument("--source", type=Path, default=REPO / "demo" / "model",
                        help="folder of the trained weights and SHA256SUMS")
    parser.add_argument("--out", type=Path, default=Path("demo-results.json"))
    parser.add_argument("--grids", type=Path, default=None, help="folder for sample grids")
    parser.add_argument("--figure", type=Path, default=None,
                        help="the README figure (Euler; same seeds in every column)")
    args = parser.parse_args()
    results = run(args)
    results.get("data", {}).pop("_lf", None)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
