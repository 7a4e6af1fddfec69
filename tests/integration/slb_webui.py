"""Request builders and result readers shared by the real-host tests (not a test module).

Every request built here sets, in ``override_settings``, each WebUI option a test's outcome
depends on: the WebUI keeps API overrides into later requests (HOST-NOTES 12), so a test
must never rely on an option's default.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]

# Which host the suite runs against (conftest.py starts it): the first of these whose
# checkout variable is set, forks before the host they come from (SLB_NEO_DIR, then
# SLB_CLASSIC_DIR, SLB_REFORGE_DIR, SLB_FORGE_DIR, SLB_WEBUI_DIR); none: every test is
# skipped. FORGE: a Forge-family host (p.modified_noise, inference-mode tensors, Forge's
# checkpoints); NEO: Forge Neo; LDM_PATCHED: reForge or Forge Classic, the forks that kept
# Forge's older ldm_patched backend (no backend/ package, A1111's loader and samplers).
HOSTS = {"neo": "SLB_NEO_DIR", "classic": "SLB_CLASSIC_DIR", "reforge": "SLB_REFORGE_DIR",
         "forge": "SLB_FORGE_DIR", "a1111": "SLB_WEBUI_DIR"}
HOST = next((host for host, variable in HOSTS.items() if os.environ.get(variable)), None)
HOST_NAMES = {"neo": "Forge Neo", "classic": "Forge Classic", "reforge": "reForge",
              "forge": "WebUI Forge", "a1111": "AUTOMATIC1111"}
FORGE = HOST in ("forge", "neo", "reforge", "classic")
NEO = HOST == "neo"
REFORGE = HOST == "reforge"
CLASSIC = HOST == "classic"
LDM_PATCHED = REFORGE or CLASSIC
# the adapter signal_leak_webui.host.detect() must pick on this host
HOST_ADAPTERS = {"neo": "NeoHost", "classic": "ClassicHost", "reforge": "ReForgeHost",
                 "forge": "ForgeHost", "a1111": "A1111Host"}
SCRIPT = "signal leak bias"  # the extension's title, as the API names alwayson scripts
PROBE = "slb probe"  # tests/integration/probe_extension
XYZ = "x/y/z plot"
MANUAL = "manual (no preset)"
SEED = 1234
SIZE = 64  # image side; the tiny UNet needs multiples of 16, the VAE divides by 8
LATENT = SIZE // 8
SD_SIGMA_MAX = 14.614641  # largest sigma of the SD 1.x schedule the tiny model uses
KDIFFUSION_SAMPLERS = ("Euler", "DPM++ 2M")
if NEO:  # Neo runs UniPC as a k-diffusion sampler (N:modules/sd_samplers_kdiffusion.py:30)
    KDIFFUSION_SAMPLERS += ("UniPC",)
# first timestep of the timestep samplers at 4 steps (HOST-NOTES 3): DDIM's
# arange(0, 1000, 250) + 1 ends at 751; UniPC starts at 999
FIRST_TIMESTEP_AT_4_STEPS = {"DDIM": 751, "UniPC": 999}

# Presets the `presets` fixture writes with the library before any fit through the API:
# name -> (latent channels, model family); the tiny model is SD 1.x with 4 latent channels.
TEST_PRESETS = {
    "test-sd1": (4, "sd1"),
    "test-sdxl": (4, "sdxl"),  # another latent space: refused unless the setting allows it
    "test-3ch": (3, "sd1"),  # wrong channel count: always refused
}
BROKEN_PRESET = "test-broken"  # not a safetensors file: listed as unusable, with the reason

# Checkpoints the suite builds into models/Stable-diffusion (conftest.py): on A1111 small
# models with their yaml (tiny_model.py, tiny_families.py); on Forge a small UNet with the
# full-size VAE and text encoders Forge builds from fixed configs (forge_tiny_model.py).
SD1_CHECKPOINT = "tiny.safetensors"
SDXL_CHECKPOINT = "tiny-sdxl.safetensors"
SDXL_REFINER_CHECKPOINT = "tiny-sdxl-refiner.safetensors"
SD2V_CHECKPOINT = "tiny-sd2v.safetensors"
# Neo only: the SDXL file under a name that makes Neo run it as a rectified-flow model
RECTIFIED_CHECKPOINT = "tiny-sdxl-rectified.safetensors"
# family -> (checkpoint, the `presets` fixture's preset of its latent space); SD 2.x shares
# SD 1.x's VAE and latent space
FAMILY_MODELS = {
    "sd1": (SD1_CHECKPOINT, "test-sd1"),
    "sdxl": (SDXL_CHECKPOINT, "test-sdxl"),
    "sd2": (SD2V_CHECKPOINT, "test-sd1"),
}
# why this host runs no SD 2.x model of the suite's (None: it does)
WHY_NO_SD2 = {
    "neo": "Forge Neo dropped SD 2.x (HOST-NOTES 14)",
    # a real SD 2.x checkpoint has that block; the small UNet has two levels
    "classic": "Forge Classic cannot load the suite's small SD 2.x-v checkpoint: it tells "
               "SD 2.x eps from v by a tensor of UNet output block 11, which only a "
               "full-size SD 2.x UNet has (C:ldm_patched/modules/supported_models.py 73-79: "
               "KeyError); reForge reads it with .get and loads it",
}.get(HOST or "")
NO_SD2 = pytest.mark.skipif(WHY_NO_SD2 is not None, reason=WHY_NO_SD2 or "")
# the families this host runs (the suite builds no SD 2.x model where it is skipped)
HOST_FAMILIES = [f for f in FAMILY_MODELS if not (WHY_NO_SD2 and f == "sd2")]


def family_params(values: list | None = None) -> list:
    """``values`` (default: the families) as pytest parameters, SD 2.x's skipped where the
    host cannot run it (``WHY_NO_SD2``), with the reason; a value names its family, or is
    that family's checkpoint."""
    by_checkpoint = {checkpoint: family for family, (checkpoint, _) in FAMILY_MODELS.items()}
    return [pytest.param(v, marks=NO_SD2) if by_checkpoint.get(v, v) == "sd2" else v
            for v in (values or list(FAMILY_MODELS))]

# Options whose value changes what a request produces (see the module docstring). Forge
# (dfdcbab6) has every one of them under the same name (modules/shared_options.py).
SETTINGS = {
    "signal_leak_allow_other_families": False,
    "sgm_noise_multiplier": False,
    "randn_source": "GPU",
    "eta_noise_seed_delta": 0,
    "overlay_inpaint": False,  # inpainting: return decoded pixels, not the pasted original
    "img2img_color_correction": False,
    "img2img_fix_steps": False,
    "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full",
    "return_grid": True,
    "samples_save": False,
    "grid_save": False,
    "enable_pnginfo": True,
    "sd_noise_schedule": "Default",  # "Zero Terminal SNR" changes every start
    # several test checkpoints: every request names the one it runs on (the host loads it
    # before the job, A:modules/processing.py:828-836, F:825-836); family tests override it
    "sd_model_checkpoint": SD1_CHECKPOINT,
}


def on_model(family: str, settings: dict | None = None) -> dict:
    """``override_settings`` that run a request on ``family``'s checkpoint."""
    return {"sd_model_checkpoint": FAMILY_MODELS[family][0], **(settings or {})}


def txt2img_request(leak: object = None, *, settings: dict | None = None, **fields: object
                    ) -> dict:
    """A 64x64, 3-step Euler txt2img request; ``leak`` (a dict or a positional list) enables
    the extension with those arguments."""
    request = {
        "prompt": "a photo of a (cat:1.2), detailed",
        "negative_prompt": "blurry",
        "seed": SEED,
        "subseed": -1,
        "subseed_strength": 0,
        "steps": 3,
        "width": SIZE,
        "height": SIZE,
        "cfg_scale": 7,
        "sampler_name": "Euler",
        "scheduler": "Automatic",
        "batch_size": 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "override_settings": {**SETTINGS, **(settings or {})},
        "override_settings_restore_afterwards": True,
    }
    request.update(fields)
    if leak is not None:
        with_leak(request, leak)
    return request


def xyz_info(server, is_img2img: bool = False) -> dict:
    """The X/Y/Z script's entry in ``GET /sdapi/v1/script-info`` for the tab."""
    return next(s for s in server.get("/sdapi/v1/script-info")
                if s["name"] == XYZ and s["is_img2img"] == is_img2img)


# X/Y/Z arguments set by label (the rest keep the host's defaults)
XYZ_CHOICES = {"Draw legend": False, "Keep -1 for seeds": False, "Include Sub Images": True,
               "Include Sub Grids": False, "Use text inputs instead of dropdowns": True}


def xyz_args(server, x_type: int, x_values: str, is_img2img: bool = False) -> list:
    """The X/Y/Z script's positional arguments for one X axis (no Y or Z), built from the
    host's own argument list: the hosts differ in it (Neo's has a grid ``row_count`` slider
    between the seed options and the margins that Forge's lacks)."""
    info = xyz_info(server, is_img2img)
    labels = [arg.get("label") for arg in info["args"]]
    args = [arg.get("value") for arg in info["args"]]
    # x_type, x_values, x_values_dropdown, then the same for Y and Z
    args[:9] = [x_type, x_values, None, 0, "", None, 0, "", None]
    for label, value in XYZ_CHOICES.items():
        assert label in labels, f"the host's X/Y/Z has no {label!r}: {labels}"
        args[labels.index(label)] = value
    return args


def hires_fields(**fields: object) -> dict:
    """Request fields that turn hires fix on (2x "Latent" upscale, 2 second-pass steps,
    denoising 0.5), plus ``fields``. Forge's API answers HTTP 500 on hires fix unless the
    request names its additional modules (it iterates ``hr_additional_modules``, which
    defaults to None: Forge modules/processing.py:1197 and 1405); A1111 has no such field."""
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
             "hr_second_pass_steps": 2, "denoising_strength": 0.5}
    if NEO:  # the Neo tree tested has no latent upscaler ("Could not find upscaler")
        hires["hr_upscaler"] = "None"
    if FORGE and not LDM_PATCHED:  # reForge's and Classic's hires has no such field
        hires["hr_additional_modules"] = ["Use same choices"]
    hires.update(fields)
    return hires


def init_image() -> np.ndarray:
    """A smooth 64x64 RGB test picture (gradients), uint8."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([xx * 4, yy * 4, 255 - 2 * xx - 2 * yy], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


def right_half_mask() -> np.ndarray:
    """Inpaint mask: white (regenerate) on the right half, black (keep) on the left."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2:] = 255
    return mask


def img2img_request(leak: object = None, *, mask: np.ndarray | None = None,
                    settings: dict | None = None, **fields: object) -> dict:
    """A 64x64, 4-step img2img of :func:`init_image` (inpainting when ``mask`` is given:
    no blur, "original" fill, whole picture)."""
    request = txt2img_request(settings=settings, steps=4, init_images=[png_b64(init_image())],
                              denoising_strength=0.75, resize_mode=0, **fields)
    if mask is not None:
        request.update(mask=png_b64(mask), mask_blur=0, inpainting_fill=1,
                       inpaint_full_res=False, inpainting_mask_invert=0)
    if leak is not None:
        with_leak(request, leak)
    return request


def with_leak(request: dict, leak: object) -> dict:
    args = [leak] if isinstance(leak, dict) else list(leak)  # type: ignore[call-overload]
    request.setdefault("alwayson_scripts", {})[SCRIPT] = {"args": args}
    return request


def with_probe(request: dict, folder: Path) -> dict:
    request.setdefault("alwayson_scripts", {})[PROBE] = {"args": [str(folder)]}
    return request


# --------------------------------------------------------------------------- results


def png_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_bytes(answer: dict, index: int = 0) -> bytes:
    return base64.b64decode(answer["images"][index])


def pixels(answer: dict, index: int = 0) -> np.ndarray:
    """Image ``index`` of an answer as an int16 (H, W, 3) array (differences stay signed)."""
    with Image.open(io.BytesIO(image_bytes(answer, index))) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def infotexts(answer: dict) -> list[str]:
    return json.loads(answer["info"])["infotexts"]


def info(answer: dict) -> dict:
    return json.loads(answer["info"])


def kept_region(mask: np.ndarray) -> np.ndarray:
    """Where ``p.mask`` (as the probe saved it) keeps the image, as a ``(C, H, W)`` boolean
    array; Neo's ``p.mask`` has a batch axis (HOST-NOTES 14), A1111's and Forge's not."""
    kept = mask == 1.0
    return kept[0] if kept.ndim == 4 else kept


def load_probe(folder: Path, name: str) -> np.ndarray:
    """A tensor the probe extension saved (see its docstring for the names)."""
    path = Path(folder) / f"{name}.npy"
    written = sorted(p.name for p in path.parent.iterdir())
    assert path.is_file(), f"the probe wrote no {path.name}; it wrote {written}"
    return np.load(path)


def probe_calls(folder: Path) -> list[str]:
    """The probe's ``process_before_every_sampling`` calls, in order (``"<pass> <i>"``)."""
    path = Path(folder) / "calls.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def sample_leak(server, preset: str, seed: int, shape=(4, LATENT, LATENT)) -> np.ndarray:
    """The leak of ``preset`` for ``seed`` from our /sample route (strength 1)."""
    answer = server.post("/signal-leak/v1/sample", {"preset": preset, "shape": list(shape),
                                                     "seed": seed, "format": "npy"})
    return np.load(io.BytesIO(base64.b64decode(answer["data"])))


def fit_start(start: np.ndarray, leak: np.ndarray, noise: np.ndarray) -> tuple[float, float,
                                                                               float]:
    """Least-squares ``a, b`` with ``start = a * leak + b * noise``; returns ``(a, b, max
    residual)``. The tensors are (C, H, W) or anything of one shape."""
    design = np.stack([leak.ravel(), noise.ravel()], axis=1).astype(np.float64)
    target = start.ravel().astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = float(np.abs(design @ np.array([a, b]) - target).max())
    return float(a), float(b), residual


def assert_design_start(start: np.ndarray, leak: np.ndarray, noise: np.ndarray, sampler: str,
                        label: str) -> None:
    """``start`` (what ``sampler`` was handed at 4 steps) is DESIGN 6's start for ``leak`` and
    the host's ``noise`` on SD's schedule: k-diffusion ``eps + L/sigma0`` (sigma0 = 14.6146);
    timestep samplers ``sqrt(abar_T) L + sqrt(1 - abar_T) eps`` at their first timestep T."""
    a, b, residual = fit_start(start, leak, noise)
    print(f"[{label}] start = {a:.6f} * L + {b:.6f} * eps (residual {residual:.2e})")
    assert residual < 1e-5
    if sampler in KDIFFUSION_SAMPLERS:
        assert b == pytest.approx(1.0, abs=1e-5)
        assert 1.0 / a == pytest.approx(SD_SIGMA_MAX, rel=1e-4)
    else:
        abar = sd_alphas_cumprod()[FIRST_TIMESTEP_AT_4_STEPS[sampler]]
        assert a == pytest.approx(abar**0.5, rel=1e-4)
        assert b == pytest.approx((1.0 - abar) ** 0.5, rel=1e-4)


def sd_alphas_cumprod() -> np.ndarray:
    """``alphas_cumprod`` of the SD 1.x schedule (linear in sqrt(beta), 0.00085..0.012)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def import_slb() -> None:
    """Make this repository's ``slb`` importable in the test process (it needs torch)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def mark_opt_in_suite(config: pytest.Config, items: list[pytest.Item], folder: Path,
                      marker: str, skip_reason: str | None) -> None:
    """Collection hook body of an opt-in suite in ``folder`` (real host, browser).

    Configured (``skip_reason`` None): every test there carries ``marker``, which the
    project's default ``-m`` expression deselects, so it runs with ``-m marker``. Not
    configured: each is skipped with the reason, and carries the marker only when the ``-m``
    expression asks for it, so that a plain run reports the tests skipped rather than
    deselecting them silently."""
    wanted = f"not {marker}" not in (config.getoption("markexpr", "") or "")
    for item in items:
        try:
            inside = Path(str(item.path)).resolve().is_relative_to(folder)
        except (OSError, ValueError):
            inside = False
        if not inside:
            continue
        if skip_reason is None or wanted:
            item.add_marker(getattr(pytest.mark, marker))
        if skip_reason is not None:
            item.add_marker(pytest.mark.skip(reason=skip_reason))

