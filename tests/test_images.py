"""Tests for slb.images (DESIGN section 8): listing, hostile files, geometry, batches.

Every file is made here in tmp_path with Pillow/numpy or by hand (for headers Pillow will not
write); the only outside data is the read-only coco128 folder, used when it is present.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, features

from slb import images as images_mod
from slb.images import (
    IMAGE_EXTENSIONS,
    ImageBatches,
    ImageReadError,
    NoUsableImagesError,
    SkippedImage,
    list_image_files,
    load_image,
    open_rgb,
    resize_and_crop,
    to_tensor,
)

COCO = Path("/work/shared/data/coco128")

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


@pytest.fixture(autouse=True)
def _strict_pillow(monkeypatch):
    # Pillow's global switches are process-wide; pin them so a host setting cannot mask failures.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))


# ---------------------------------------------------------------------------------------------
# File makers


def _noise(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose body is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _png_chunk(b"IEND", b""))


def _insert_png_chunk_before_idat(png: bytes, kind: bytes, data: bytes) -> bytes:
    pos = png.index(b"IDAT") - 4
    return png[:pos] + _png_chunk(kind, data) + png[pos:]


def _tiff_rgb48(path: Path, pixels: np.ndarray) -> None:
    """A little-endian baseline TIFF with 16 bits per RGB sample (Pillow cannot write one)."""
    h, w, _ = pixels.shape
    body = pixels.astype("<u2").tobytes()
    n_entries = 10
    ifd_at = 8
    bits_at = ifd_at + 2 + n_entries * 12 + 4
    data_at = bits_at + 6

    def short(tag: int, value: int) -> bytes:
        return struct.pack("<HHIHH", tag, 3, 1, value, 0)

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    entries = [
        short(256, w), short(257, h), entry(258, 3, 3, bits_at), short(259, 1),
        short(262, 2), entry(273, 4, 1, data_at), short(277, 3), short(278, h),
        entry(279, 4, 1, len(body)), short(284, 1),
    ]
    path.write_bytes(b"II*\x00" + struct.pack("<IH", ifd_at, n_entries) + b"".join(entries)
                     + b"\0\0\0\0" + struct.pack("<HHH", 16, 16, 16) + body)


def _two_colour(w: int, h: int, left: tuple, right: tuple) -> Image.Image:
    img = Image.new("RGB", (w, h), left)
    img.paste(Image.new("RGB", (w - w // 2, h), right), (w // 2, 0))
    return img


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _rgb_array(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = (hashlib.sha256(p.read_bytes()).hexdigest()
                      if p.is_file() and not p.is_symlink() else "")
            out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _write_good(folder: Path, names: list[str], size: tuple[int, int] = (40, 30)) -> None:
    for i, name in enumerate(names):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(_noise(*size, seed=i))
        if p.suffix.lower() in (".jpg", ".jpeg"):
            p.write_bytes(_jpeg_bytes(img))
        else:
            img.save(p)


# ---------------------------------------------------------------------------------------------
# Listing


def test_list_sorted_extensions_hidden_and_recursion(tmp_path):
    _write_good(tmp_path, ["b.png", "a.JPG", "c.jpeg", "d.Tiff", "e.bmp", "f.gif", "g.webp",
                           "sub/z.png", "sub/deeper/y.PNG", "a0.tif"])
    _write_good(tmp_path, [".x.png", ".hidden/in_hidden.png", "sub/.h.jpg"])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "image.png.bak").write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()  # a folder with an image name is not a file

    flat = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert flat == ["a.JPG", "a0.tif", "b.png", "c.jpeg", "d.Tiff", "e.bmp", "f.gif", "g.webp"]

    deep = [p.relative_to(tmp_path).as_posix()
            for p in list_image_files(tmp_path, recursive=True)]
    assert deep == sorted(flat + ["sub/z.png", "sub/deeper/y.PNG"])
    assert all(p.parent == tmp_path for p in list_image_files(tmp_path))  # Path(folder)/rel
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"} == set(
        IMAGE_EXTENSIONS)


def test_list_accepts_str_and_is_repeatable(tmp_path):
    _write_good(tmp_path, [f"{i:03d}.png" for i in range(12)])
    assert list_image_files(str(tmp_path)) == list_image_files(tmp_path)


def test_list_missing_and_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        list_image_files(tmp_path / "nope")
    f = tmp_path / "file.png"
    f.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="Not a folder"):
        list_image_files(f)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_list_symlink_loop_and_broken_link(tmp_path):
    _write_good(tmp_path, ["a.png", "sub/b.png"])
    try:
        (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
        (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    except OSError as exc:  # e.g. Windows without the privilege
        pytest.skip(f"cannot create symlinks: {exc}")
    names = [p.relative_to(tmp_path).as_posix()
             for p in list_image_files(tmp_path, recursive=True)]
    assert names == ["a.png", "sub/b.png"]


# ---------------------------------------------------------------------------------------------
# Hostile files: each one is either decoded as section 8 says or refused with a reason


def test_corrupt_bytes(tmp_path):
    p = tmp_path / "noise.jpg"
    p.write_bytes(bytes(random.Random(1).randrange(256) for _ in range(4096)))
    with pytest.raises(ImageReadError) as info:
        open_rgb(p)
    assert str(info.value)


def test_corrupt_png_body(tmp_path):
    png = bytearray(_png_bytes(Image.fromarray(_noise(32, 32))))
    start = png.index(b"IDAT") + 8
    png[start:start + 200] = b"\xff" * 200  # wreck the zlib stream
    p = tmp_path / "broken.png"
    p.write_bytes(bytes(png))
    with pytest.raises(ImageReadError, match="corrupt|truncated|broken|error"):
        open_rgb(p)


def test_truncated_png(tmp_path):
    data = _png_bytes(Image.fromarray(_noise(64, 64)))
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ImageReadError) as info:
        open_rgb(p)
    assert str(info.value)


def test_truncated_jpeg(tmp_path):
    data = _jpeg_bytes(Image.fromarray(_noise(64, 64)))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ImageReadError, match="truncated"):
        open_rgb(p)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        open_rgb(p)


def test_text_file_named_png(tmp_path):
    p = tmp_path / "readme.png"
    p.write_text("This is not a picture.\n" * 20)
    with pytest.raises(ImageReadError, match="not an image"):
        open_rgb(p)


def test_folder_given_to_open_rgb(tmp_path):
    with pytest.raises(ImageReadError):
        open_rgb(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="cannot open"):
        open_rgb(tmp_path / "gone.png")


def test_png_header_claims_huge_size(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_with_header(100_000, 100_000))
    t0 = time.perf_counter()
    with pytest.raises(ImageReadError, match="too large|decompression"):
        open_rgb(p)
    assert time.perf_counter() - t0 < 2.0  # refused from the header, nothing decoded


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_size_guard_between_limit_and_twice_limit(tmp_path, monkeypatch):
    # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; we refuse above 1x.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    p = tmp_path / "big.png"
    Image.new("RGB", (40, 40), RED).save(p)  # 1600 pixels
    with pytest.raises(ImageReadError, match="MAX_IMAGE_PIXELS"):
        open_rgb(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1600)
    assert open_rgb(p).size == (40, 40)


def test_16bit_grey_png_scales_not_clips(tmp_path):
    values = np.array([[0, 257, 1000, 32768, 65535, 65280]], dtype=np.uint16)
    p = tmp_path / "grey16.png"
    Image.fromarray(values).save(p)
    out = _rgb_array(open_rgb(p))
    expected = [0, 1, 4, 128, 255, 254]  # round(v * 255 / 65535)
    assert out.shape == (1, 6, 3)
    assert out[0, :, 0].tolist() == expected
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16bit_grey_png_with_trns_over_white(tmp_path):
    values = np.array([[1000, 30000, 65535]], dtype=np.uint16)
    png = _png_bytes(Image.fromarray(values))
    png = _insert_png_chunk_before_idat(png, b"tRNS", struct.pack(">H", 30000))
    p = tmp_path / "grey16_trns.png"
    p.write_bytes(png)
    out = _rgb_array(open_rgb(p))
    assert out[0, :, 0].tolist() == [4, 255, 255]  # the tRNS grey became white


def test_16bit_grey_tiff(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / "grey16.tif"
    Image.fromarray(values).save(p)
    assert _rgb_array(open_rgb(p))[0, :, 0].tolist() == [0, 128, 255]


def test_16bit_rgb_tiff(tmp_path):
    px = np.array([[[65535, 32768, 0], [2570, 0, 65535]]], dtype=np.uint16)
    p = tmp_path / "rgb48.tiff"
    _tiff_rgb48(p, px)
    try:
        with Image.open(p) as probe:
            probe.load()
    except Exception as exc:  # pragma: no cover - depends on the Pillow build
        pytest.skip(f"this Pillow cannot read 48-bit RGB TIFF: {exc}")
    out = _rgb_array(open_rgb(p))
    # Pillow keeps each sample's high byte: within one level of round(v * 255 / 65535).
    exact = np.rint(px.astype(float) * 255 / 65535)
    assert np.abs(out - exact).max() <= 1
    assert out[0, 0].tolist() == [255, 128, 0]


def test_32bit_int_and_float_grey_tiff(tmp_path):
    p_i = tmp_path / "int32.tif"
    im = Image.new("I", (3, 1))
    im.putdata([0, 100, 200])
    im.save(p_i)
    assert _rgb_array(open_rgb(p_i))[0, :, 0].tolist() == [0, 100, 200]
    p_f = tmp_path / "float.tif"
    im = Image.new("F", (3, 1))
    im.putdata([0.0, 0.5, 1.0])
    im.save(p_f)
    assert _rgb_array(open_rgb(p_f))[0, :, 0].tolist() == [0, 128, 255]


def test_palette_png(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 0, 2, 1, 0, 2])
    p = tmp_path / "pal.png"
    img.save(p)
    out = _rgb_array(open_rgb(p))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [0, 255, 0]
    assert out[0, 2].tolist() == [0, 0, 255]


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    p = tmp_path / "pal_trns.png"
    img.save(p, transparency=0)  # index 0 (red) is fully transparent
    out = _rgb_array(open_rgb(p))
    assert out[0].tolist() == [[255, 255, 255], [0, 255, 0], [0, 0, 255]]
    # Per-index alpha (a tRNS table): index 1 half transparent.
    p2 = tmp_path / "pal_alpha.png"
    img.save(p2, transparency=bytes([255, 128, 0]))
    out2 = _rgb_array(open_rgb(p2))
    assert out2[0, 0].tolist() == [255, 0, 0]
    assert out2[0, 2].tolist() == [255, 255, 255]
    assert abs(out2[0, 1, 0] - 127) <= 1 and out2[0, 1, 1] == 255


def test_rgba_composited_over_white(tmp_path):
    arr = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [255, 0, 0, 128], [0, 0, 0, 0]]],
                   dtype=np.uint8)
    p = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(p)
    out = _rgb_array(open_rgb(p))
    assert out[0, 0].tolist() == [255, 255, 255]  # fully transparent red -> white
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[0, 2, 0] == 255 and abs(out[0, 2, 1] - 127) <= 1
    assert out[0, 3].tolist() == [255, 255, 255]


def test_la_composited_over_white(tmp_path):
    arr = np.array([[[100, 0], [100, 255], [0, 128]]], dtype=np.uint8)
    p = tmp_path / "la.png"
    Image.fromarray(arr, "LA").save(p)
    out = _rgb_array(open_rgb(p))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [100, 100, 100]
    assert abs(out[0, 2, 0] - 127) <= 1


def test_rgb_png_with_trns_colour(tmp_path):
    p = tmp_path / "rgb_trns.png"
    _two_colour(4, 1, RED, BLUE).save(p, transparency=RED)
    out = _rgb_array(open_rgb(p))
    assert out[0].tolist() == [list(WHITE)] * 2 + [list(BLUE)] * 2


def test_grey_and_bilevel_replicated(tmp_path):
    p = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L").save(p)
    out = _rgb_array(open_rgb(p))
    assert out[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]
    p1 = tmp_path / "bilevel.bmp"
    bw = Image.new("1", (2, 1))
    bw.putdata([0, 255])
    bw.save(p1)
    assert _rgb_array(open_rgb(p1))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    with Image.open(p) as probe:
        assert probe.mode == "CMYK"
    out = _rgb_array(open_rgb(p))
    assert np.abs(out - np.array(RED)).max() <= 8


@pytest.mark.parametrize("orientation, top, bottom", [(6, RED, BLUE), (8, BLUE, RED)])
def test_exif_rotated_jpeg(tmp_path, orientation, top, bottom):
    # Stored 40x20 (left red, right blue). Orientation 6 means "rotate 90 clockwise to
    # display", so the red left half ends on top; 8 is the other way round.
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"rot{orientation}.jpg"
    p.write_bytes(_jpeg_bytes(_two_colour(40, 20, RED, BLUE), exif=exif.tobytes()))
    out = open_rgb(p)
    assert out.size == (20, 40)
    arr = _rgb_array(out)
    assert np.abs(arr[5, 10] - np.array(top)).max() <= 10
    assert np.abs(arr[34, 10] - np.array(bottom)).max() <= 10


def test_broken_exif_does_not_reject_image(tmp_path):
    p = tmp_path / "bad_exif.jpg"
    p.write_bytes(_jpeg_bytes(Image.new("RGB", (8, 4), RED), exif=b"Exif\x00\x00garbage!"))
    assert open_rgb(p).size == (8, 4)


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), c) for c in (RED, BLUE, (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(p) as probe:
        assert getattr(probe, "n_frames", 1) == 3
    out = _rgb_array(open_rgb(p))
    assert out.shape == (6, 8, 3)
    assert (out == np.array(RED)).all()


def test_one_by_one_image(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(p)
    t = load_image(p, 16)
    assert t.shape == (3, 16, 16)
    expected = torch.tensor([10, 20, 30], dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(t[:, 7, 7], expected)


def test_jpeg_with_png_extension_and_uppercase_ext(tmp_path):
    p = tmp_path / "actually_jpeg.png"
    p.write_bytes(_jpeg_bytes(Image.new("RGB", (8, 8), BLUE)))
    assert np.abs(_rgb_array(open_rgb(p)) - np.array(BLUE)).max() <= 8
    q = tmp_path / "SHOUT.JPG"
    q.write_bytes(_jpeg_bytes(Image.new("RGB", (8, 8), RED)))
    assert list_image_files(tmp_path) == [tmp_path / "SHOUT.JPG", p]
    assert open_rgb(q).size == (8, 8)


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_with_alpha(tmp_path):
    p = tmp_path / "a.webp"
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255
    Image.fromarray(arr, "RGBA").save(p, lossless=True)
    assert (_rgb_array(open_rgb(p)) == 255).all()  # transparent -> white


def test_extreme_aspect_ratio_is_cheap(tmp_path):
    # 20000x1 passes the pixel guard, but a naive resize to 64 high would be 1.28M x 64.
    p = tmp_path / "strip.png"
    Image.fromarray(_noise(20000, 1)).save(p)
    t0 = time.perf_counter()
    t = load_image(p, 64)
    assert t.shape == (3, 64, 64)
    assert time.perf_counter() - t0 < 5.0


def test_open_rgb_result_is_detached(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (5, 5), RED).save(p)
    img = open_rgb(p)
    p.unlink()  # the file is closed and the pixels are in memory
    assert img.mode == "RGB" and img.getpixel((2, 2)) == RED


# ---------------------------------------------------------------------------------------------
# Geometry and tensors


def _manual(img: Image.Image, size: int) -> tuple[Image.Image, tuple[int, int]]:
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    big = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return big.crop((left, top, left + size, top + size)), (left, top)


@pytest.mark.parametrize("w, h, size, offsets", [
    (300, 200, 128, (32, 0)),    # landscape: 192x128, left 32
    (200, 333, 100, (0, 33)),    # portrait: 100x166, top 33
    (203, 200, 128, (0, 0)),     # 129x128: (1/2) rounds half to even -> 0
    (205, 200, 128, (2, 0)),     # int(131.2)=131: round(1.5) -> 2
    (64, 64, 64, (0, 0)),        # already the right size
    (50, 40, 80, (10, 0)),       # upscaling: 100x80
])
def test_center_crop_bit_exact(w, h, size, offsets):
    img = Image.fromarray(_noise(w, h, seed=w * h))
    expected, got_offsets = _manual(img, size)
    assert got_offsets == offsets
    out = resize_and_crop(img, size)
    assert out.size == (size, size)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_random_crop_repeatable_and_key_dependent():
    img = Image.fromarray(_noise(640, 160, seed=3))  # 256x64 at size 64: 193 positions
    a1 = np.asarray(resize_and_crop(img, 64, "random:7", key="a/b.png"))
    a2 = np.asarray(resize_and_crop(img, 64, "random:7", key="a/b.png"))
    assert np.array_equal(a1, a2)
    others = [np.asarray(resize_and_crop(img, 64, f"random:{s}", key="a/b.png"))
              for s in range(8, 16)]
    assert any(not np.array_equal(a1, o) for o in others)
    keyed = [np.asarray(resize_and_crop(img, 64, "random:7", key=f"{k}.png")) for k in range(8)]
    assert any(not np.array_equal(a1, o) for o in keyed)
    # The crop is a window of the same resized image the centre crop uses.
    big = np.asarray(img.resize((256, 64), Image.BILINEAR))
    rng = random.Random("7:a/b.png")
    left, top = rng.randint(0, 256 - 64), rng.randint(0, 0)
    assert np.array_equal(a1, big[top:top + 64, left:left + 64])


@pytest.mark.parametrize("bad", ["centre", "random", "random:", "random:x", "", "Center"])
def test_bad_crop_strings(bad):
    with pytest.raises(ValueError, match="crop"):
        resize_and_crop(Image.new("RGB", (4, 4)), 2, bad)
    with pytest.raises(ValueError):
        ImageBatches(".", 2, crop=bad, files=[])


def test_bad_size():
    with pytest.raises(ValueError):
        resize_and_crop(Image.new("RGB", (4, 4)), 0)


def test_large_resize_shortcut_matches_full_resize(monkeypatch):
    img = Image.fromarray(_noise(300, 70, seed=5))
    full = np.asarray(resize_and_crop(img, 48, "random:3", key="k")).astype(int)
    monkeypatch.setattr(images_mod, "_MAX_RESIZED_PIXELS", 10)
    cut = np.asarray(resize_and_crop(img, 48, "random:3", key="k")).astype(int)
    assert cut.shape == full.shape
    assert np.abs(cut - full).max() <= 1


def test_to_tensor_mapping():
    arr = np.array([[[0, 255, 128], [127, 1, 254]]], dtype=np.uint8)
    t = to_tensor(Image.fromarray(arr, "RGB"))
    assert t.dtype == torch.float32 and t.shape == (3, 1, 2) and t.is_contiguous()
    assert t[0, 0, 0].item() == -1.0 and t[1, 0, 0].item() == 1.0
    assert torch.equal(t, torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1)
    full = to_tensor(Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
                     .convert("RGB"))
    assert full.min().item() == -1.0 and full.max().item() == 1.0
    with pytest.raises(ValueError, match="RGB"):
        to_tensor(Image.new("L", (2, 2)))


# ---------------------------------------------------------------------------------------------
# Batches


def _hostile_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Seven good files and four bad ones; returns (good, bad) relative names in sorted order."""
    good = ["a.png", "b.JPG", "c.gif", "d.bmp", "e.tif", "f.png", "sub/g.png"]
    _write_good(folder, good)
    (folder / "bad0_empty.png").write_bytes(b"")
    (folder / "bad1_text.jpg").write_text("hello")
    (folder / "bad2_bomb.png").write_bytes(_png_with_header(100_000, 100_000))
    cut = _jpeg_bytes(Image.fromarray(_noise(64, 64)))
    (folder / "bad3_cut.jpg").write_bytes(cut[: len(cut) // 2])
    _write_good(folder, [".hidden.png", ".cache/h.png"])
    (folder / "readme.txt").write_text("ignored")
    bad = ["bad0_empty.png", "bad1_text.jpg", "bad2_bomb.png", "bad3_cut.jpg"]
    return good, bad


@pytest.mark.parametrize("workers, prefetch", [(1, 1), (2, 2), (4, 3)])
def test_image_batches_counts_order_and_skips(tmp_path, workers, prefetch):
    good, bad = _hostile_folder(tmp_path)
    batches = ImageBatches(tmp_path, 32, batch_size=3, recursive=True, workers=workers,
                           prefetch=prefetch)
    assert batches.total == len(good) + len(bad) == len(batches)
    got = list(batches)
    assert [b.shape[0] for b, _ in got] == [3, 3, 1]
    assert all(b.shape[1:] == (3, 32, 32) and b.dtype == torch.float32 for b, _ in got)
    names = [n for _, ns in got for n in ns]
    assert names == sorted(good)
    assert batches.used == len(good)
    assert [s.path for s in batches.skipped] == bad
    assert all(isinstance(s, SkippedImage) and s.reason for s in batches.skipped)
    reasons = {s.path: s.reason for s in batches.skipped}
    assert "empty" in reasons["bad0_empty.png"]
    assert "too large" in reasons["bad2_bomb.png"]
    assert "truncated" in reasons["bad3_cut.jpg"]
    # Each batch row is exactly what load_image gives for that file.
    first_batch, first_names = got[0]
    for row, name in zip(first_batch, first_names, strict=True):
        assert torch.equal(row, load_image(tmp_path / name, 32, key=name))


def test_image_batches_random_crop_independent_of_other_files(tmp_path):
    _write_good(tmp_path, [f"{i}.png" for i in range(6)], size=(90, 40))
    whole = {n: t for b, ns in ImageBatches(tmp_path, 24, 4, crop="random:5")
             for n, t in zip(ns, b, strict=True)}
    shard = list_image_files(tmp_path)[3:]
    part = {n: t for b, ns in ImageBatches(tmp_path, 24, 2, crop="random:5", files=shard)
            for n, t in zip(ns, b, strict=True)}
    assert set(part) == {"3.png", "4.png", "5.png"}
    assert all(torch.equal(part[n], whole[n]) for n in part)


def test_image_batches_reiterable_and_early_stop(tmp_path):
    _write_good(tmp_path, [f"{i:02d}.png" for i in range(20)])
    batches = ImageBatches(tmp_path, 16, batch_size=4, workers=2, prefetch=1)
    it = iter(batches)
    next(it)
    it.close()  # a consumer that stops (interrupt) must not hang or leak work
    assert batches.used == 4
    assert sum(b.shape[0] for b, _ in batches) == 20
    assert batches.used == 20 and batches.skipped == []


def test_image_batches_all_bad_and_empty_folder(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "y.jpg").write_text("no")
    batches = ImageBatches(tmp_path, 8)
    assert list(batches) == []
    assert batches.used == 0 and len(batches.skipped) == 2
    err = NoUsableImagesError.from_skipped(tmp_path, batches.skipped)
    assert isinstance(err, ValueError)
    assert "x.png: empty file" in str(err) and "y.jpg" in str(err)
    assert err.skipped == batches.skipped

    many = [SkippedImage(f"{i}.png", "bad") for i in range(9)]
    assert "(and 4 more)" in str(NoUsableImagesError.from_skipped("f", many))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ImageBatches(empty, 8).total == 0
    assert "no files" in str(NoUsableImagesError.from_skipped(empty, []))


def test_image_batches_bad_arguments(tmp_path):
    for kwargs in ({"batch_size": 0}, {"workers": 0}, {"prefetch": 0}, {"size": 0}):
        args = {"size": 8, **kwargs}
        with pytest.raises(ValueError):
            ImageBatches(tmp_path, **args)
    with pytest.raises(FileNotFoundError):
        ImageBatches(tmp_path / "missing", 8)


def test_nothing_in_folder_is_modified(tmp_path):
    _hostile_folder(tmp_path)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "rot.jpg").write_bytes(_jpeg_bytes(Image.new("RGB", (8, 4)), exif=exif.tobytes()))
    before = _snapshot(tmp_path)
    time.sleep(0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in ImageBatches(tmp_path, 16, batch_size=2, recursive=True, crop="random:1"):
            pass
        for p in list_image_files(tmp_path, recursive=True):
            try:
                open_rgb(p)
            except ImageReadError:
                pass
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(not COCO.is_dir(), reason="coco128 sample folder not present")
def test_image_batches_real_photos():
    files = list_image_files(COCO)[:16]
    assert len(files) == 16
    batches = ImageBatches(COCO, 64, batch_size=6, files=files, workers=3)
    got = list(batches)
    assert [b.shape[0] for b, _ in got] == [6, 6, 4]
    names = [n for _, ns in got for n in ns]
    assert names == [f.name for f in files]
    assert batches.skipped == [] and batches.used == 16 and batches.total == 16
    stacked = torch.cat([b for b, _ in got])
    assert stacked.shape == (16, 3, 64, 64)
    assert stacked.min() >= -1 and stacked.max() <= 1
    assert stacked.std() > 0.1  # real content, not a constant fill
    assert torch.equal(stacked[5], load_image(files[5], 64, key=files[5].name))
