"""slb.archive: extracting the images of a zip safely, with real and hostile archives.

Every refused archive must leave nothing behind: the extraction parent stays empty and no
file appears outside it (zip slip targets are checked by name)."""

from __future__ import annotations

import io
import os
import stat
import struct
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from slb.archive import (
    ArchiveError,
    ArchiveLimits,
    ExtractionStopped,
    extract_images,
)
from slb.images import list_image_files

PREFIX = "coco128/images/train2017/"


def tree(root: Path) -> set[str]:
    """Every path under ``root``, relative, for before/after comparisons."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def photos(coco128):
    return list_image_files(coco128)[:5]


@pytest.fixture
def dest(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def write_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]],
              method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def coco_zip(path: Path, photos: list[Path], extra: list[tuple[str | zipfile.ZipInfo, bytes]]
             = ()) -> Path:
    """A coco128-shaped archive: images, labels, a README, plus ``extra`` entries."""
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = [("coco128/", b""), (PREFIX, b"")]
    for p in photos:
        entries.append((PREFIX + p.name, p.read_bytes()))
        entries.append((f"coco128/labels/train2017/{p.stem}.txt", b"0 0.5 0.5 0.2 0.2\n"))
    entries.append(("coco128/README.txt", b"coco128\n"))
    entries.extend(extra)
    return write_zip(path, entries)


def assert_refused(archive: Path, dest: Path, match: str, **kwargs) -> ArchiveError:
    before = tree(archive.parent)
    with pytest.raises(ArchiveError, match=match) as info:
        extract_images(archive, dest, **kwargs)
    assert list(dest.iterdir()) == [], "the extraction folder was not removed"
    assert tree(archive.parent) == before, "something was written outside the work folder"
    return info.value


# ---------------------------------------------------------------------------------------------
# Real archives


def test_extracts_only_images_and_reports_skips(tmp_path, dest, photos):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("hidden_inside.jpg", photos[0].read_bytes())
    archive = coco_zip(tmp_path / "coco.zip", photos, extra=[
        ("coco128/.DS_Store", b"\0\0"),
        ("__MACOSX/coco128/._README.txt", b"\0"),
        (PREFIX + "._" + photos[0].name, b"\0"),  # an AppleDouble file: hidden
        ("coco128/.hidden/x.jpg", photos[1].read_bytes()),  # in a hidden folder
        ("coco128/inner.zip", inner.getvalue()),  # nested: never opened
    ])
    calls = []
    summary = extract_images(archive, dest, progress=lambda d, t: calls.append((d, t)))
    try:
        assert summary.folder.parent == dest
        assert summary.image_root == summary.folder / "coco128" / "images" / "train2017"
        assert summary.images == len(photos)
        assert summary.skipped == {"not an image": len(photos) + 2, "hidden": 4}
        assert summary.entries == summary.images + summary.skipped_total
        assert summary.bytes == sum(p.stat().st_size for p in photos)
        assert "5 image(s)" in summary.describe() and "hidden" in summary.describe()
        found = list_image_files(summary.folder, recursive=True)
        assert [f.name for f in found] == [p.name for p in photos]
        for p in photos:  # byte-identical copies
            assert (summary.image_root / p.name).read_bytes() == p.read_bytes()
        # only the images (and their folders) were written
        assert tree(summary.folder) == {"coco128", "coco128/images",
                                        "coco128/images/train2017"} | {
            PREFIX + p.name for p in photos}
        assert calls[0] == (0, len(photos)) and calls[-1] == (len(photos), len(photos))
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    finally:
        import shutil
        shutil.rmtree(summary.folder)


def test_flat_archive_and_stored_entries(tmp_path, dest, photos):
    archive = write_zip(tmp_path / "flat.zip", [(p.name.upper(), p.read_bytes())
                                                 for p in photos], zipfile.ZIP_STORED)
    summary = extract_images(archive, dest)
    assert summary.image_root == summary.folder  # no common sub-folder
    assert len(list_image_files(summary.image_root)) == len(photos)


def test_duplicate_and_case_clashing_names_are_skipped(tmp_path, dest, photos):
    archive = tmp_path / "dups.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_zip(archive, [("a.jpg", photos[0].read_bytes()), ("a.jpg", photos[1].read_bytes()),
                            ("A.JPG", photos[2].read_bytes()), ("b.jpg", photos[3].read_bytes())])
    summary = extract_images(archive, dest)
    assert summary.images == 2 and summary.skipped == {"duplicate name": 2}
    assert (summary.folder / "a.jpg").read_bytes() == photos[0].read_bytes()


def test_file_and_folder_of_the_same_name(tmp_path, dest, photos):
    jpg = photos[0].read_bytes()
    archive = write_zip(tmp_path / "clash.zip", [("x.jpg", jpg), ("x.jpg/y.jpg", jpg),
                                                 ("d.png/z.jpg", jpg), ("d.png", jpg)])
    summary = extract_images(archive, dest)
    assert summary.images == 2 and summary.skipped == {"duplicate name": 2}
    assert (summary.folder / "x.jpg").is_file() and (summary.folder / "d.png/z.jpg").is_file()


def test_encrypted_entry_is_skipped(tmp_path, dest, photos):
    archive = write_zip(tmp_path / "enc.zip", [("locked.jpg", b"x" * 100),
                                               ("ok.jpg", photos[0].read_bytes())])
    data = bytearray(archive.read_bytes())  # zipfile cannot write encrypted entries:
    cd = data.find(b"PK\x01\x02")  # set the "encrypted" flag of the first one by hand
    data[cd + 8] |= 0x1
    archive.write_bytes(bytes(data))
    summary = extract_images(archive, dest)
    assert summary.images == 1 and summary.skipped == {"encrypted": 1}


def test_no_images_is_a_clear_error(tmp_path, dest):
    archive = write_zip(tmp_path / "docs.zip", [("a.txt", b"x"), ("b.csv", b"y"),
                                                ("inner.zip", b"PK")])
    assert_refused(archive, dest, r"docs.zip holds no images .*3 not an image")
    empty = write_zip(tmp_path / "empty.zip", [])
    assert_refused(empty, dest, r"empty.zip holds no images .*: it is empty")


def test_stop_mid_extraction_leaves_nothing(tmp_path, dest, photos):
    archive = coco_zip(tmp_path / "coco.zip", photos)
    seen = []

    def stop() -> bool:
        return len(seen) >= 2  # after two images were written

    before = tree(tmp_path)
    with pytest.raises(ExtractionStopped, match="stopped"):
        extract_images(archive, dest, progress=lambda d, t: seen.append(d), should_stop=stop)
    assert list(dest.iterdir()) == []
    assert tree(tmp_path) == before


def test_stop_inside_a_large_entry(tmp_path, dest):
    # 8 MiB of noise in one entry: the stop is seen between chunks, once part is written
    archive = write_zip(tmp_path / "big.zip", [("big.bmp", os.urandom(8 << 20))],
                        zipfile.ZIP_STORED)
    partial = []

    def stop() -> bool:
        sizes = [f.stat().st_size for f in dest.rglob("*.bmp")]
        partial.extend(s for s in sizes if 0 < s < 8 << 20)
        return bool(partial)

    with pytest.raises(ExtractionStopped):
        extract_images(archive, dest, should_stop=stop)
    assert partial  # it really stopped mid-entry
    assert list(dest.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Hostile archives


@pytest.mark.parametrize("name, why", [
    ("../evil.jpg", "'..' component"),
    ("coco128/../../evil.jpg", "'..' component"),
    ("..\\evil.jpg", "'..' component"),
    ("C:/evil.jpg", "drive letter"),
    ("c:evil.jpg", "drive letter"),
])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, dest, photos, name, why):
    # the hostile entry comes after good images: nothing at all may be written
    archive = coco_zip(tmp_path / "slip.zip", photos, extra=[(name, b"evil")])
    err = assert_refused(archive, dest, why)
    assert "zip slip" in str(err)
    assert not (tmp_path / "evil.jpg").exists()


def test_absolute_path_is_refused(tmp_path, dest, photos):
    target = Path("/tmp") / f"slb-evil-{uuid.uuid4().hex}.jpg"
    archive = coco_zip(tmp_path / "abs.zip", photos, extra=[(str(target), b"evil")])
    assert_refused(archive, dest, "absolute path")
    assert not target.exists()


def test_symlink_entry_is_refused(tmp_path, dest, photos):
    link = zipfile.ZipInfo(PREFIX + "link.jpg")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = coco_zip(tmp_path / "link.zip", photos, extra=[(link, b"/etc/passwd")])
    assert_refused(archive, dest, "symbolic link")


def test_zip_bomb_by_ratio_is_refused(tmp_path, dest):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros.png", "w") as out:  # 100 MB of zeros, ~100 KB on disk
            block = bytes(1 << 20)
            for _ in range(100):
                out.write(block)
    assert archive.stat().st_size < 1 << 20
    start = time.perf_counter()
    assert_refused(archive, dest, r"zip bomb: entry 'zeros.png' expands \d+:1 \(limit 200:1\)")
    assert time.perf_counter() - start < 3.0  # refused from the headers, nothing inflated


def test_zip_bomb_overall_ratio_is_refused(tmp_path, dest):
    # 8 entries of exactly 1 MiB: none is checked alone (at the floor), together they are
    archive = write_zip(tmp_path / "many.zip", [(f"z{i}.bmp", bytes(1 << 20)) for i in range(8)])
    limits = ArchiveLimits(total_ratio_floor_bytes=4 << 20)
    assert_refused(archive, dest, r"zip bomb: its images expand \d+:1 overall", limits=limits)


def test_header_that_understates_the_size_is_caught(tmp_path, dest):
    # the central directory claims 4000 bytes for 100 MB of zeros: the declared ratio looks
    # harmless, so the bytes themselves must be held to the header
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("liar.png", "w") as out:
            for _ in range(100):
                out.write(bytes(1 << 20))
    data = bytearray(buf.getvalue())
    cd = data.find(b"PK\x01\x02")
    data[cd + 24:cd + 28] = struct.pack("<L", 4000)
    archive = tmp_path / "liar.zip"
    archive.write_bytes(bytes(data))
    assert_refused(archive, dest, "truncated or damaged|more data than its header")


def test_total_size_cap(tmp_path, dest):
    archive = write_zip(tmp_path / "big.zip", [(f"n{i}.bmp", os.urandom(300_000))
                                               for i in range(4)], zipfile.ZIP_STORED)
    assert_refused(archive, dest, r"more than the 1 MiB limit",
                   limits=ArchiveLimits(max_total_bytes=1 << 20))


def test_entry_size_cap_skips_the_entry(tmp_path, dest, photos):
    archive = write_zip(tmp_path / "mixed.zip", [("huge.bmp", os.urandom(200_000)),
                                                 ("ok.jpg", photos[0].read_bytes())])
    summary = extract_images(archive, dest, limits=ArchiveLimits(max_entry_bytes=150_000))
    assert summary.images == 1 and summary.skipped == {"too large": 1}


def _many_entries(path: Path, count: int, suffix: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"d/{i:05d}{suffix}", b"x")
    return path


def test_ten_thousand_tiny_entries_over_a_low_cap_are_refused_quickly(tmp_path, dest):
    archive = _many_entries(tmp_path / "many.zip", 10_000, ".png")
    start = time.perf_counter()
    assert_refused(archive, dest, "more than 1000 entries",
                   limits=ArchiveLimits(max_entries=1000))
    assert time.perf_counter() - start < 3.0  # the raw directory walk stops at the cap


def test_entry_count_in_the_end_record_may_lie(tmp_path, dest):
    # the end record claims 5 entries; the directory itself is walked and holds 10,000
    archive = _many_entries(tmp_path / "liar.zip", 10_000, ".png")
    data = bytearray(archive.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 12] = struct.pack("<2H", 5, 5)
    archive.write_bytes(bytes(data))
    assert_refused(archive, dest, "more than 1000 entries", limits=ArchiveLimits(max_entries=1000))


def test_ten_thousand_tiny_entries_within_the_default_cap(tmp_path, dest):
    archive = _many_entries(tmp_path / "many.zip", 10_000, ".txt")
    start = time.perf_counter()
    assert_refused(archive, dest, r"holds no images .*10000 not an image")
    assert time.perf_counter() - start < 5.0
    images = _many_entries(tmp_path / "many_png.zip", 10_000, ".png")
    start = time.perf_counter()
    summary = extract_images(images, dest)
    assert summary.images == 10_000
    assert time.perf_counter() - start < 30.0


def test_truncated_zip(tmp_path, dest, photos):
    whole = coco_zip(tmp_path / "whole.zip", photos).read_bytes()
    archive = tmp_path / "cut.zip"
    archive.write_bytes(whole[:len(whole) // 2])
    assert_refused(archive, dest, r"cut.zip: the archive is truncated or damaged")


def test_damaged_entry_data(tmp_path, dest, photos):
    data = bytearray(write_zip(tmp_path / "ok.zip", [("a.bmp", bytes(range(256)) * 400)])
                     .read_bytes())
    start = data.find(b"a.bmp") + len("a.bmp") + 10
    data[start:start + 50] = os.urandom(50)  # scramble the deflate stream
    archive = tmp_path / "bad.zip"
    archive.write_bytes(bytes(data))
    assert_refused(archive, dest, r"bad.zip: the archive is truncated or damaged \('a.bmp'")


@pytest.mark.parametrize("content, match", [
    (b"\xff\xd8\xff\xe0 a jpeg, not an archive" + bytes(100), "is not a zip archive"),
    (b"", "is not a zip archive"),
    (b"<!DOCTYPE html><html><body>Not Found</body></html>", r"is a web page \(HTML\)"),
])
def test_non_zip_files(tmp_path, dest, content, match):
    archive = tmp_path / "download.zip"
    archive.write_bytes(content)
    assert_refused(archive, dest, match)


def test_folder_and_missing_file(tmp_path, dest):
    with pytest.raises(ArchiveError, match="is a folder, not a zip file"):
        extract_images(tmp_path, dest)
    with pytest.raises(ArchiveError, match="cannot read .*nothing.zip"):
        extract_images(tmp_path / "nothing.zip", dest)
    assert list(dest.iterdir()) == []
