"""Every kind of bad or unusual image either opens as upright 8-bit RGB or is refused with a reason."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lab.errors import BadImageError
from lab.images import MAX_IMAGE_PIXELS, downscale, list_images, open_image


def _png_with_size(path, width, height):
    """A valid PNG header claiming ``width`` x ``height`` (the pixels are never decoded)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not an image"),
        (lambda p: _png_with_size(p, 20000, 20000), "too large"),
    ],
    ids=["zero-byte", "not-an-image", "huge"],
)
def test_refused_with_reason(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(BadImageError) as err:
        open_image(path)
    assert reason in str(err.value.reason) and str(path) in str(err.value)
    assert "Pillow" not in str(err.value.reason) and len(str(err.value.reason)) < 80


def test_truncated_png_is_refused(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BadImageError, match="truncated or corrupt"):
        open_image(bad)


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError, match="file not found"):
        open_image(tmp_path / "nope.png")


def test_cmyk_16bit_palette_alpha_are_rgb(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))
    rgba.save(tmp_path / "alpha.png")
    pal = Image.new("P", (8, 6), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palette.png", transparency=0)
    out = {p.name: open_image(p) for p in list_images(tmp_path)}
    assert {im.mode for im in out.values()} == {"RGB"}
    assert out["cmyk.jpg"].getpixel((4, 3))[0] > 200  # red survives the CMYK conversion
    assert out["deep.png"].getpixel((0, 0)) == (255, 255, 255)  # 16-bit white stays white
    assert out["alpha.png"].getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background
    assert out["palette.png"].getpixel((0, 0)) == (0, 0, 255)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 255, 0)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    im = open_image(tmp_path / "anim.gif")
    r, g, b = im.getpixel((5, 5))
    assert r > 200 and g < 50


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    im.save(tmp_path / "rotated.jpg", exif=exif)
    assert open_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_downscale_to_pixel_budget(tmp_path):
    Image.new("RGB", (2000, 1000)).save(tmp_path / "big.png")
    im = open_image(tmp_path / "big.png", max_pixels=200_000)
    assert im.size[0] * im.size[1] <= 200_000 and abs(im.size[0] / im.size[1] - 2) < 0.02
    small = Image.new("RGB", (10, 10))
    assert downscale(small, 1000) is small
    assert MAX_IMAGE_PIXELS < 20000 * 20000


def test_reasons_have_a_chinese_form_with_the_path(tmp_path):
    from lab.errors import localize

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, zh in ((tmp_path / "nope.png", "文件不存在"), (empty, "空文件（0 字节）")):
        with pytest.raises(BadImageError) as err:
            open_image(path)
        assert localize(err.value, "zh") == f"{path}：{zh}"


def test_a_draft_decodes_a_jpeg_at_a_reduced_scale_no_smaller_than_asked(tmp_path):
    Image.new("RGB", (1600, 1200), "teal").save(tmp_path / "big.jpg")
    assert open_image(tmp_path / "big.jpg", draft=(256, 256)).size == (400, 300)
    assert open_image(tmp_path / "big.jpg").size == (1600, 1200)
    Image.new("RGB", (1600, 1200), "teal").save(tmp_path / "big.png")
    assert open_image(tmp_path / "big.png", draft=(256, 256)).size == (1600, 1200)  # only JPEG has drafts
