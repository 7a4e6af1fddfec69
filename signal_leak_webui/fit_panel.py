"""Fitting a preset with the loaded model's VAE (DESIGN 7.8): the Fit button and the
``POST fit`` route share :func:`run_fit`. Both run under the host's GPU queue lock, so never
during a generation; Stop (the host's interrupt) discards the fit and saves nothing."""

from __future__ import annotations

import html
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr  # module level: Gradio resolves the gr.Progress annotation here
from modules import call_queue, devices, shared

from slb.api import ApiError, FitRequest, parse_fit_request
from slb.files import printable
from slb.fitting import FitInterrupted, FitResult, fit
from slb.image_source import SOURCE_ERRORS, SOURCE_STOPS, names_an_archive, open_image_source
from slb.images import NoUsableImagesError
from slb.preset import PRESET_SUFFIX, PresetError, save_preset

from .options import NATURAL_URL, OPT_NATURAL_URL
from .presets import Presets


def _check_folder(req: FitRequest) -> None:
    """A folder must exist and be readable; zips and URLs are checked when opened."""
    if names_an_archive(req.folder):
        return
    folder = Path(req.folder).expanduser()
    if not folder.is_dir():
        raise ApiError(422, f"folder not found: {printable(req.folder)}")
    try:
        next(iter(folder.iterdir()), None)
    except OSError as exc:
        raise ApiError(422, f"cannot read folder {printable(req.folder)}: "
                       f"{exc.strerror or exc}") from None


def natural_request(presets: Presets, req: FitRequest) -> FitRequest:
    """The one-click natural-image preset: dct+pixel n=3 at the model's native size (unless
    the request names a resolution), named natural-<family>, from the Settings URL unless a
    source is given."""
    host = presets.host
    family = host.model_facts(host.ensure_model()).family
    source = req.folder or str(host.option(OPT_NATURAL_URL, NATURAL_URL) or NATURAL_URL)
    return replace(req, folder=source, name=req.name or f"natural-{family}", kind="dct+pixel",
                   n_components=3, recursive=True)


def run_fit(presets: Presets, req: FitRequest, progress=None) -> tuple[FitResult, Path]:  # noqa: ANN001
    """Fit (a folder, a .zip or an http(s) URL) and save to the user folder; the caller
    holds the GPU queue. Downloads and extractions live in a temporary folder that is
    removed whatever happens; Stop or a failure saves nothing."""
    host = presets.host
    if req.natural:
        req = natural_request(presets, req)
    _check_folder(req)
    target = host.user_presets_dir() / f"{req.name}{PRESET_SUFFIX}"
    if target.exists() and not req.overwrite:
        raise ApiError(409, f"preset {req.name!r} already exists; enable overwrite to replace it")
    sd_model = host.ensure_model()
    facts = host.model_facts(sd_model)
    if facts.prediction == "flow":
        raise ApiError(422, "the loaded model is a flow-matching model: it starts from pure "
                       "noise, so there is no signal leak to fit")
    size = req.resolution or facts.native_resolution
    encode, mode = host.vae_encoder(sd_model)
    shared.state.job = "Signal leak fit"
    shared.state.textinfo = f"Fitting {req.name}"

    def report(done: int, total: int) -> None:
        shared.state.job_count, shared.state.job_no = total, done
        shared.state.textinfo = f"Signal leak fit: {done}/{total} images"
        if progress is not None:
            progress((done, total), desc="Encoding images", unit="images")

    def report_source(phase: str, done: int, total: int | None) -> None:
        unit = "bytes" if phase == "download" else "files"
        shared.state.textinfo = f"Signal leak fit: {phase} {done}/{total or '?'} {unit}"
        if progress is not None:
            progress((done, total) if total else None,
                     desc="Downloading" if phase == "download" else "Extracting", unit=unit)

    try:
        source = open_image_source(req.folder, tempfile.gettempdir(), progress=report_source,
                                   should_stop=host.interrupted)
        with source as folder:
            archive = source.kind != "folder"
            result = fit(folder, encode, req.kind, req.n_components, size=size,
                         crop=req.crop, recursive=req.recursive or archive,
                         batch_size=req.batch_size, device=host.device, dtype=host.vae_dtype,
                         progress=report, should_stop=host.interrupted,
                         source=Path(source.label).stem if archive else str(folder),
                         **host.model_metadata(sd_model))
    except SOURCE_STOPS:
        raise FitInterrupted("fit interrupted; nothing was saved") from None
    except SOURCE_ERRORS as exc:
        raise ApiError(422, printable(exc)) from None
    except OSError as exc:
        raise ApiError(422, f"cannot read the images: {printable(exc)}") from None
    result.preset.metadata["encode"] = mode[0] if mode else "mean"
    try:
        path = save_preset(result.preset, host.user_presets_dir(), req.name,
                           overwrite=req.overwrite)
    except OSError as exc:
        raise ApiError(422, f"cannot save the preset: {printable(exc)}") from None
    devices.torch_gc()
    return result, path


def summary_html(result: FitResult, path: Path) -> str:
    skipped = "".join(f"<li>{html.escape(s.path)}: {html.escape(s.reason)}</li>"
                      for s in result.skipped[:20])
    more = f"<li>… and {len(result.skipped) - 20} more</li>" if len(result.skipped) > 20 else ""
    notes = "".join(f"<br>{html.escape(w)}" for w in result.warnings)
    return (f"Fitted <b>{result.images}</b> images in {result.seconds:.1f} s, "
            f"{len(result.skipped)} skipped; saved to {html.escape(printable(path))}{notes}"
            + (f"<ul>{skipped}{more}</ul>" if skipped else ""))


def _button_fit(presets: Presets, body: dict, progress) -> tuple:  # noqa: ANN001
    """A Fit panel button's work: the request ``body`` fitted and saved, then the new preset
    selected (``natural`` for the natural-image preset: the alias the model resolves);
    returns the dropdown update and the HTML result. Errors and Stop are messages."""
    try:
        req = parse_fit_request(body)
        result, path = run_fit(presets, req, progress)
    except (ApiError, PresetError, NoUsableImagesError, ValueError, OverflowError) as exc:
        message = html.escape(printable(getattr(exc, "detail", exc)))
        return gr.update(), f"<span class='error'>{message}</span>"
    except FitInterrupted:
        return gr.update(), "Stopped: nothing was saved."
    shown = summary_html(result, path)
    if req.natural:
        shown += (f"<br>Selected <b>natural</b>: it resolves to {html.escape(path.stem)} for "
                  "this model family.")
    return (gr.update(choices=presets.dropdown_choices(),
                      value="natural" if req.natural else req.name), shown)


def make_fit_button(presets: Presets):  # noqa: ANN201
    """The Fit button's handler (to wrap in the host's GPU call wrapper)."""

    def fit_button(folder: str, name: str, kind: str, n_components: float, resolution: float,
                   crop: str, crop_seed: float, recursive: bool, overwrite: bool,
                   batch_size: float, progress: gr.Progress = gr.Progress()) -> tuple:
        try:
            body = {
                "folder": str(folder or "").strip(), "name": str(name or "").strip(),
                "kind": kind, "n_components": int(n_components),
                "resolution": int(resolution or 0) or None,
                "crop": "center" if crop == "center" else f"random:{int(crop_seed or 0)}",
                "recursive": bool(recursive), "overwrite": bool(overwrite),
                "batch_size": int(batch_size or 0) or None}
        except (ValueError, OverflowError) as exc:  # a slider value int() cannot take
            return gr.update(), f"<span class='error'>{html.escape(printable(exc))}</span>"
        return _button_fit(presets, body, progress)

    return fit_button


def make_natural_button(presets: Presets):  # noqa: ANN201
    """'Get the natural-image preset': the Settings URL (or the folder box: a folder, .zip
    or URL), fitted as natural-<family>, then selected in the dropdown."""

    def natural_button(folder: str, overwrite: bool,
                       progress: gr.Progress = gr.Progress()) -> tuple:
        return _button_fit(presets, {"folder": str(folder or "").strip(), "natural": True,
                                     "overwrite": bool(overwrite)}, progress)

    return natural_button


def api_fit(presets: Presets, req: FitRequest) -> dict:
    """``POST fit`` (in a worker thread): the new preset's entry and the fit's figures.
    Raises :class:`ApiError` (4xx) for everything the request or its images cause."""
    started = time.perf_counter()
    with call_queue.queue_lock:  # never while a generation runs
        shared.state.begin(job="signal-leak-fit")
        try:
            result, path = run_fit(presets, req)
        except FitInterrupted:
            raise ApiError(409, "fit interrupted; nothing was saved") from None
        except (PresetError, NoUsableImagesError, ValueError) as exc:
            raise ApiError(422, printable(exc)) from None
        finally:
            shared.state.end()
    entry = next(e for e in presets.library().entries() if e.path == path)
    return {**entry.info(), "images": result.images, "skipped": [
        {"path": s.path, "reason": s.reason} for s in result.skipped],
        "seconds": round(time.perf_counter() - started, 3), "path": printable(path)}
