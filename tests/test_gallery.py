"""The Dataset tab's gallery: pages of records, each image a thumbnail cached in the workspace."""

import json
import os
from pathlib import Path

import pytest
from gradio_client import Client
from labeling_images import many, plain
from PIL import Image

from lab import gallery
from lab.errors import LabError, localize
from lab.gallery import PAGE_SIZE, THUMB_SIDE, dataset_page, thumbnail, thumbnail_dir


def write_dataset(folder: Path, images: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "id": f"r{i:02d}",
                "images": [os.path.relpath(image, folder)],
                "messages": [
                    {"role": "user", "content": "<image>What is it?"},
                    {"role": "assistant", "content": f"Picture {i}."},
                ],
            }
        )
        for i, image in enumerate(images)
    ]
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_thumbnail_is_made_once_in_the_workspace(tmp_path, lab_home, monkeypatch):
    image = plain(tmp_path / "pics" / "big.png", (200, 40, 40), size=(1200, 600))
    opened = []
    real_open = gallery.open_image
    monkeypatch.setattr(gallery, "open_image", lambda path, **kw: opened.append(path) or real_open(path, **kw))
    first = thumbnail(image)
    assert (
        first.is_relative_to(lab_home / ".cache" / "thumbnails")
        and thumbnail_dir() == lab_home / ".cache" / "thumbnails"
    )
    with Image.open(first) as im:
        assert im.size == (THUMB_SIDE, THUMB_SIDE // 2) and im.format == "JPEG"
    assert thumbnail(image) == first and len(opened) == 1  # the second call reads the cache, not the image
    assert files_under(tmp_path / "pics") == [image]  # nothing written next to the image
    assert files_under(thumbnail_dir()) == [first]  # and no half-written files left in the cache


def test_a_photo_is_decoded_small_and_shown_upright(tmp_path, lab_home):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (1600, 800), (20, 160, 60)).save(tmp_path / "photo.jpg", exif=exif)
    with Image.open(thumbnail(tmp_path / "photo.jpg")) as im:
        assert im.size == (THUMB_SIDE // 2, THUMB_SIDE)  # portrait, as the camera meant it


def test_a_changed_image_gets_a_new_thumbnail_and_the_old_one_goes(tmp_path, lab_home):
    image = plain(tmp_path / "pic.png", (250, 0, 0), size=(300, 300))
    old = thumbnail(image)
    plain(image, (0, 0, 250), size=(320, 300))
    stamp = image.stat().st_mtime_ns + 2_000_000_000
    os.utime(image, ns=(stamp, stamp))
    new = thumbnail(image)
    assert new != old and not old.exists() and files_under(thumbnail_dir()) == [new]
    with Image.open(new) as im:
        red, green, blue = im.convert("RGB").getpixel((10, 10))
    assert blue > 200 and red < 50


def test_a_records_boxes_are_drawn_on_its_thumbnail(sample_dataset, lab_home):
    import numpy as np

    from lab.gallery import BOX_COLORS

    page = dataset_page(sample_dataset / "data_grounding.jsonl", 1)
    assert not page.skipped
    framed = np.asarray(Image.open(page.images[0][0]).convert("RGB")).astype(int)  # 0005: the purple "Day" button
    plain_thumb = np.asarray(Image.open(thumbnail(sample_dataset / "images" / "0005.png")).convert("RGB")).astype(int)
    red = np.array(BOX_COLORS[0])
    # The box [12, 38, 109, 75] (the thumbnail keeps the 224x112 size): its left edge is red, the plain one's is not.
    assert np.abs(framed[60, 12] - red).max() < 60 and np.abs(plain_thumb[60, 12] - red).max() > 60
    assert page.images[0][0] != str(thumbnail(sample_dataset / "images" / "0005.png"))  # kept apart


def test_pages_hold_page_size_records_and_numbers_are_brought_into_range(tmp_path, lab_home):
    folder = write_dataset(tmp_path / "set", many(tmp_path / "set" / "images", PAGE_SIZE + 5))
    first = dataset_page(folder, 1)
    assert (first.number, first.pages, len(first.records), len(first.images)) == (1, 2, PAGE_SIZE, PAGE_SIZE)
    assert first.images[0][1] == "r00" and all(Path(p).is_relative_to(thumbnail_dir()) for p, _ in first.images)
    last = dataset_page(folder, 2)
    assert (last.number, [r["id"] for r in last.records]) == (2, ["r24", "r25", "r26", "r27", "r28"])
    assert dataset_page(folder, 99).number == 2 and dataset_page(folder, -3).number == 1
    assert len(files_under(thumbnail_dir())) == PAGE_SIZE + 5


def test_an_unreadable_image_is_left_out_and_named(tmp_path, lab_home):
    images = many(tmp_path / "set" / "images", 3)
    images[1].write_bytes(b"not a png")
    folder = write_dataset(tmp_path / "set", images + [tmp_path / "set" / "images" / "gone.png"])
    page = dataset_page(folder, 1)
    assert [caption for _, caption in page.images] == ["r00", "r02"] and len(page.records) == 4
    assert [str(reason).split(": ", 1)[1] for reason in page.skipped] == [
        "not an image, or an image format that cannot be read",
        "file not found",
    ]
    assert str(page.skipped[0]).startswith(str(images[1])) and "不是图片" in localize(page.skipped[0], "zh")


def test_on_a_shared_server_images_outside_the_workspace_get_no_thumbnail(tmp_path, lab_home, monkeypatch):
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    outside = plain(tmp_path / "outside.png")
    with pytest.raises(LabError, match="upload yours instead"):
        thumbnail(outside)
    assert not thumbnail_dir().exists()


def test_the_gallery_pages_through_the_app(launch_app, tmp_path, lab_home):
    app, ctx, client = launch_app(model="")
    made_at_start = len(files_under(thumbnail_dir()))  # the first page of the dataset shown at start
    images = many(lab_home / "data" / "paged" / "images", 30, size=(640, 480))
    images[25].write_bytes(b"broken")
    folder = str(write_dataset(lab_home / "data" / "paged", images))

    summary, shown, table, number, line = client.predict(folder, api_name="/dataset_show")
    assert summary.startswith("30 records · 30 images") and number == 1 and line == "Page 1 of 2"
    assert len(shown) == PAGE_SIZE and [row[0] for row in table["data"]] == [f"r{i:02d}" for i in range(PAGE_SIZE)]
    with Image.open(shown[0]["image"]) as im:
        assert max(im.size) <= THUMB_SIDE  # a thumbnail, not the 640x480 image
    shown, table, number, line = client.predict(folder, 1, api_name="/dataset_page_next")
    assert number == 2 and len(shown) == 5 and len(table["data"]) == 6
    assert line.startswith("Page 2 of 2\n\n1 image(s) on this page could not be shown:\n- ") and "0025.png" in line
    assert client.predict(folder, 2, api_name="/dataset_page_next")[2] == 2  # no page after the last
    assert client.predict(folder, 2, api_name="/dataset_page_prev")[2] == 1
    shown, table, number, line = client.predict(folder, 2, api_name="/dataset_page")
    assert [row[0] for row in table["data"]][:2] == ["r24", "r25"]
    zh = Client(app.local_url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert zh.predict(folder, 1, api_name="/dataset_page")[3] == "第 1 页，共 2 页"
    assert (
        len(files_under(thumbnail_dir())) == made_at_start + 29
    )  # one per readable image, however often its page was opened
