"""Small image files of every awkward kind, for the labeling tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def plain(path: Path, color=(30, 120, 200), size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def many(folder: Path, n: int, size=(48, 32)) -> list[Path]:
    """``n`` distinct small PNGs named 0000.png, 0001.png, ... (colours far apart, so they stay distinct as JPEG)."""
    return [
        plain(folder / f"{i:04d}.png", ((i * 97) % 256, (i * 57 + 80) % 256, (i * 23 + 160) % 256), size)
        for i in range(n)
    ]


def huge_header_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb), a few bytes on disk."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def awkward_images(folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """``(usable, broken)``: files that must be labeled, and files that must fail with a reason containing the value."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    usable = {}
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(usable.setdefault("cmyk", folder / "cmyk.jpg"))
    Image.fromarray((rng.integers(0, 65535, (30, 40))).astype(np.uint16)).save(
        usable.setdefault("sixteen", folder / "sixteen.png")
    )
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(usable.setdefault("palette", folder / "palette.png"), transparency=0)
    Image.new("LA", (40, 30), (100, 128)).save(usable.setdefault("gray_alpha", folder / "gray_alpha.png"))
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
    frames[0].save(
        usable.setdefault("animated", folder / "animated.gif"),
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
    )
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (60, 20), "orange").save(usable.setdefault("rotated", folder / "rotated.jpg"), exif=exif.tobytes())
    Image.new("RGBA", (40, 30), (0, 200, 0, 120)).save(usable.setdefault("rgba", folder / "rgba.webp"))
    broken = {}
    (folder / "empty.png").write_bytes(b"")
    broken["empty.png"] = "empty file"
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(folder / "truncated.png")
    whole = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    broken["truncated.png"] = "truncated or corrupt"
    (folder / "notes.jpg").write_text("this is not a picture")
    broken["notes.jpg"] = "not an image"
    huge_header_png(folder / "bomb.png")
    broken["bomb.png"] = "too large"
    return usable, broken
