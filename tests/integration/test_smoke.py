"""Phase-1 proof: the WebUI starts with the tiny model and generates deterministically."""

from __future__ import annotations

import base64
import struct
import time

from slb_webui import txt2img_request

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_txt2img_64px_is_an_image_and_repeatable(webui_server):
    images = []
    for _ in range(2):
        started = time.monotonic()
        answer = webui_server.post("/sdapi/v1/txt2img", txt2img_request())
        print(f"[webui] 64x64 3-step txt2img took {time.monotonic() - started:.2f} s")
        assert len(answer["images"]) == 1
        images.append(base64.b64decode(answer["images"][0]))

    assert png_size(images[0]) == (64, 64)
    assert images[0] == images[1], "same request gave different images"
    assert "Seed: 1234" in answer["info"]
