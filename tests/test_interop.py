"""Our exports as the other tools read them: OpenAI's documented rules, datasets' imagefolder, ms-swift's
image paths; and every command that achieves nothing exits non-zero with its reason.

The heavy tools (LLaMA-Factory, ms-swift, transformers serve, vLLM) are checked by bench/interop.py.
"""

from __future__ import annotations

import base64
import json
import os
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fake_openai import FakeOpenAI, server_error
from labeling_images import many
from PIL import Image

from lab import dataset as ds
from lab.cli import main
from lab.errors import DatasetError, localize
from lab.formats import export_dataset, export_with_summary
from lab.formats.openai_rules import MAX_IMAGE_BYTES, openai_faults, openai_image

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def one_image_dataset(root: Path, names: list[str]) -> Path:
    """A record per image file in ``root`` (already written there)."""
    records = [
        {
            "id": str(n),
            "images": [name],
            "messages": [
                {"role": "user", "content": "<image>What is it?"},
                {"role": "assistant", "content": "A picture."},
            ],
        }
        for n, name in enumerate(names)
    ]
    ds.write_records(root / "data.jsonl", records)
    return root


def chat_images(chat: Path) -> list[Image.Image]:
    images = []
    for line in chat.read_text(encoding="utf-8").splitlines():
        for message in json.loads(line)["messages"]:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part["type"] == "image_url":
                    raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    images.append(Image.open(BytesIO(raw)))
    return images


def test_the_sample_exports_to_openai_within_its_rules(tmp_path):
    """The sample's images are palette PNGs, a mode OpenAI refuses: each becomes RGB, pixel for pixel."""
    exported = export_with_summary(SAMPLE, "openai", tmp_path / "oa")
    assert openai_faults(exported.main_file) == []
    images = chat_images(exported.main_file)
    sources = [Image.open(p) for r in ds.load_records(SAMPLE, absolute_images=True) for p in r["images"]]
    assert len(images) == len(sources) == 60 and {s.mode for s in sources} == {"P"}
    assert all(i.mode in ("RGB", "RGBA") and i.format == "PNG" for i in images)
    assert all(
        np.array_equal(np.asarray(i.convert("RGBA")), np.asarray(s.convert("RGBA"))) for i, s in zip(images, sources)
    )
    assert exported.converted == {"mode": 60}
    summary = localize(exported.summary(), "en")
    assert "Exported 60 record(s) as openai" in summary and "60 image(s) converted to RGB or RGBA" in summary
    assert "60 张图片已转为 RGB 或 RGBA" in localize(exported.summary(), "zh")


def test_each_kind_of_image_is_converted_and_counted(tmp_path):
    root = tmp_path / "kinds"
    root.mkdir()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(root / "plain.jpg", quality=90)
    transparent = Image.new("P", (8, 6), 0)  # index 0 is the transparent one
    transparent.info["transparency"] = 0
    transparent.save(root / "clear.png")
    Image.new("RGB", (8, 6), (5, 6, 7)).save(root / "anim.gif")
    Image.new("RGB", (8, 6), (1, 2, 3)).save(root / "flat.bmp")
    Image.new("CMYK", (8, 6), (0, 255, 0, 0)).save(root / "print.jpg")
    noise = np.random.default_rng(0).integers(0, 256, (1900, 1900, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "huge.png", compress_level=1)
    assert (root / "huge.png").stat().st_size > MAX_IMAGE_BYTES
    names = ["plain.jpg", "clear.png", "anim.gif", "flat.bmp", "print.jpg", "huge.png"]
    exported = export_with_summary(one_image_dataset(root, names), "openai", tmp_path / "oa")
    assert openai_faults(exported.main_file) == []
    plain, clear, gif, bmp, cmyk, huge = chat_images(exported.main_file)
    assert plain.tobytes() == Image.open(root / "plain.jpg").tobytes()  # already fine: the same bytes
    assert clear.mode == "RGBA" and clear.getpixel((0, 0))[3] == 0
    assert gif.format == bmp.format == "PNG" and bmp.getpixel((0, 0)) == (1, 2, 3)
    assert cmyk.format == "JPEG" and cmyk.mode == "RGB"
    assert huge.width < 1900 and huge.width / huge.height == 1
    assert exported.converted == {"mode": 3, "format": 2, "size": 1}  # palette, GIF (palette), CMYK; GIF, BMP; huge
    summary = localize(exported.summary(), "en")
    assert "3 image(s) converted to RGB or RGBA" in summary and "2 image(s) re-encoded as PNG" in summary
    assert "1 image(s) made smaller" in summary
    assert openai_image(root / "plain.jpg") == ("image/jpeg", (root / "plain.jpg").read_bytes(), ())


def test_the_openai_rules_check_fails_on_each_broken_rule(tmp_path):
    def url(image: Image.Image, fmt: str) -> dict:
        buffer = BytesIO()
        image.save(buffer, format=fmt)
        return {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()},
        }

    rgb = Image.new("RGB", (4, 4))
    rows = [
        {
            "messages": [
                {"role": "user", "content": [url(Image.new("P", (4, 4)), "PNG")]},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"messages": [{"role": "user", "content": [url(rgb, "GIF")]}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [url(rgb, "PNG")]}]},
        {"messages": [{"role": "user", "content": [url(rgb, "PNG")] * 11}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"prompt": "old completion format"},
    ]
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    faults = [str(f) for f in openai_faults(chat)]
    assert faults == [
        "line 1: an image in mode P; OpenAI takes RGB or RGBA",
        "line 2: a GIF image; OpenAI takes JPEG, PNG or WEBP",
        "line 2: an image in mode P; OpenAI takes RGB or RGBA",  # a GIF is a palette image too
        "line 3: an image in a message of role assistant",
        "line 4: 11 images; OpenAI takes at most 10 per example",
        "line 5: no assistant message",
        "line 6: not an object with a list of messages",
    ]


def test_the_openai_export_refuses_what_no_conversion_fixes(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for n in range(11):
        Image.new("RGB", (4, 4), (n, 0, 0)).save(root / f"{n}.png")
    ds.write_records(
        root / "data.jsonl",
        [
            {
                "id": "big",
                "images": [f"{n}.png" for n in range(11)],
                "messages": [
                    {"role": "user", "content": "<image>" * 11 + "Which is reddest?"},
                    {"role": "assistant", "content": "10"},
                ],
            }
        ],
    )
    with pytest.raises(DatasetError, match="Record big has 11 images; OpenAI fine-tuning takes at most 10"):
        export_dataset(root, "openai", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_datasets_loads_the_sample_as_imagefolder(tmp_path):
    datasets = pytest.importorskip("datasets")
    export_dataset(SAMPLE, "imagefolder", tmp_path / "hf")
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(tmp_path / "hf"), split="train", cache_dir=str(tmp_path / "cache")
    )
    records = ds.load_records(SAMPLE, absolute_images=True)
    assert loaded.num_rows == len(records) == 60
    assert loaded["id"] == [r["id"] for r in records]
    first = Image.open(records[0]["images"][0]).convert("RGB")
    assert np.array_equal(np.asarray(loaded[0]["image"].convert("RGB")), np.asarray(first))


@pytest.mark.parametrize("source", [SAMPLE, SAMPLE / "data_video.jsonl"])
def test_swift_export_paths_resolve_from_root_image_dir_anywhere(tmp_path, monkeypatch, source):
    """ms-swift joins a path that is not found where it runs to ROOT_IMAGE_DIR (swift/template/vision_utils.py);
    the summary names that folder, and from any other folder every image and video is found through it."""
    exported = export_with_summary(source, "swift", tmp_path / "sw")
    folder = exported.main_file.parent.resolve()
    assert f"set ROOT_IMAGE_DIR to {folder}" in localize(exported.summary(), "en")
    assert f"把 ROOT_IMAGE_DIR 设为 {folder}" in localize(exported.summary(), "zh")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    media = [p for r in ds.load_records(exported.main_file) for p in r["images"] + r.get("videos", [])]
    assert media and not any(os.path.isabs(p) or os.path.exists(p) for p in media)
    assert all(os.path.exists(os.path.join(folder, p)) for p in media)


def test_data_commands_that_do_nothing_exit_non_zero(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.jsonl").write_text("", encoding="utf-8")
    assert main(["data", "export", str(empty), "--format", "swift", "--out", str(tmp_path / "o")]) == 2
    assert "has no records; there is nothing to export" in capsys.readouterr().err
    assert main(["data", "split", str(empty)]) == 2
    assert "there is nothing to split" in capsys.readouterr().err
    (tmp_path / "none.jsonl").write_text("", encoding="utf-8")
    assert (
        main(["data", "import", str(tmp_path / "none.jsonl"), "--format", "swift", "--out", str(tmp_path / "b")]) == 2
    )
    assert "holds no records; there is nothing to import" in capsys.readouterr().err
    assert main(["data", "export", str(SAMPLE), "--format", "swift", "--out", str(tmp_path / "sw")]) == 0
    assert "Exported 60 record(s) as swift" in capsys.readouterr().out


def test_eval_and_label_with_nothing_done_exit_non_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(responder=lambda body: server_error(400)) as server:
        code = main(["eval", "--endpoint", server.base_url, "--model", "m", "--dataset", str(SAMPLE), "--limit", "2"])
        assert code == 1
        assert "Nothing was scored" in capsys.readouterr().err
        many(tmp_path / "pics", 2)
        code = main(
            [
                "label",
                "--images",
                str(tmp_path / "pics"),
                "--prompt",
                "sample_caption",
                "--out",
                str(tmp_path / "ds"),
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "--max-retries",
                "0",
            ]
        )
        assert code == 1
        assert "Nothing was labeled: every image failed" in capsys.readouterr().err
