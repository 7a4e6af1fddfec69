"""The ``/signal-leak/v1/`` routes (DESIGN 7.6), registered only when the WebUI API is on.
Every error the request causes is an HTTP 4xx with a ``detail`` message; the logic and
validation live in :mod:`slb.api`."""

from __future__ import annotations

from modules import call_queue, shared

from slb.api import ApiError, parse_fit_request, presets_payload, sample_payload

from .fit_panel import api_fit
from .presets import Presets

try:  # the WebUI always ships FastAPI; module level so route annotations resolve
    from fastapi import HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
except ImportError:  # pragma: no cover - only in test environments without it
    HTTPException = Request = run_in_threadpool = None  # type: ignore[assignment, misc]


def register(presets: Presets, app: object) -> None:
    """``on_app_started`` callback."""
    cmd = shared.cmd_opts
    if not (getattr(cmd, "api", False) or getattr(cmd, "nowebui", False)) or Request is None:
        return

    def fail(exc: ApiError) -> HTTPException:
        return HTTPException(status_code=exc.status, detail=exc.detail)

    async def read_json(request: Request) -> object:
        try:
            return await request.json()
        except Exception:
            raise HTTPException(status_code=422, detail="the body must be JSON") from None

    def get_presets() -> list:
        return presets_payload(presets.library())

    def encode_reference(image: object, width: int, height: int) -> object:
        with call_queue.queue_lock:  # the VAE is the generation's: never at the same time
            return presets.host.encode_image(image, width, height,
                                             presets.host.ensure_model())

    def sample_in_thread(body: object) -> dict:
        try:
            with call_queue.queue_lock:  # may load the selected checkpoint first
                family = presets.host.model_facts(presets.host.ensure_model()).family
            return sample_payload(body, presets.library(), family, encode_reference)
        except ApiError as exc:
            raise fail(exc) from None

    async def post_sample(request: Request) -> dict:
        body = await read_json(request)
        # in a worker thread: a reference image is encoded with the VAE
        return await run_in_threadpool(sample_in_thread, body)

    def fit_in_thread(body: object) -> dict:
        try:
            return api_fit(presets, parse_fit_request(body))
        except ApiError as exc:
            raise fail(exc) from None

    async def post_fit(request: Request) -> dict:
        body = await read_json(request)
        # in a worker thread: on the event loop a fit would stall every other request
        # (progress, interrupt) until it ends
        return await run_in_threadpool(fit_in_thread, body)

    app.add_api_route("/signal-leak/v1/presets", get_presets, methods=["GET"])
    app.add_api_route("/signal-leak/v1/sample", post_sample, methods=["POST"])
    app.add_api_route("/signal-leak/v1/fit", post_fit, methods=["POST"])
