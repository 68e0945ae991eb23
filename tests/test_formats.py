"""Exporters and importers: every format round-trips records, messages, image bytes and ids."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from lab import dataset as ds
from lab import dataset_check as check
from lab.cli import main
from lab.errors import ConfigError, DatasetError, LabError, localize
from lab.formats import FORMATS, detect_format, export_dataset, import_dataset

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def save_image(path: Path, color, fmt: str = "PNG") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (9, 7), color).save(path, format=fmt)
    return path.name


def build(root: Path, multi_image: bool = True) -> Path:
    """A small dataset: one-image, JPEG, Chinese multi-turn, meta, and (optionally) a two-image record."""
    save_image(root / "images" / "a.png", (255, 0, 0))
    save_image(root / "images" / "b.jpg", (0, 255, 0), "JPEG")
    save_image(root / "images" / "sub" / "a.png", (0, 0, 255))  # same file name, other content
    system = {"role": "system", "content": "You describe UI components."}
    records = [
        {
            "id": "r1",
            "images": ["images/a.png"],
            "meta": {"labeler": "gpt-4o", "status": "ok", "cost": 0.01},
            "messages": [
                system,
                {"role": "user", "content": "<image>Describe it."},
                {"role": "assistant", "content": "A red square."},
            ],
        },
        {
            "id": "r2",
            "images": ["images/b.jpg"],
            "messages": [
                {"role": "user", "content": "<image>这是什么？"},
                {"role": "assistant", "content": "绿色方块。"},
                {"role": "user", "content": "用 JSON 回答。"},
                {"role": "assistant", "content": '{"颜色": "绿"}'},
            ],
        },
        {
            "id": "r3",
            "images": ["images/sub/a.png"],
            "messages": [
                {"role": "user", "content": "What is shown in <image> here?"},
                {"role": "assistant", "content": "A blue square."},
            ],
        },
    ]
    if multi_image:
        records.append(
            {
                "id": "r4",
                "images": ["images/a.png", "images/sub/a.png"],
                "messages": [
                    system,
                    {"role": "user", "content": "<image> vs <image>: which is red?"},
                    {"role": "assistant", "content": "The first."},
                ],
            }
        )
    ds.write_records(root / "data.jsonl", records)
    assert check.validate_dataset(root).ok
    return root


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pixels(path: str | Path) -> str:
    return hashlib.sha256(Image.open(path).convert("RGBA").tobytes()).hexdigest()


def snapshot(path: Path, keep_ids: bool = True, same=digest) -> list[tuple]:
    rows = []
    for r in ds.load_records(path, absolute_images=True):
        rows.append((r.get("id") if keep_ids else None, r["messages"], [same(p) for p in r["images"]]))
    return rows


@pytest.fixture
def source(tmp_path) -> Path:
    return build(tmp_path / "src")


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_records_messages_images_and_ids(source, tmp_path, fmt):
    exported = export_dataset(source, fmt, tmp_path / "out")
    assert exported.is_file() and exported.parent == tmp_path / "out"
    assert detect_format(exported) == fmt
    back = import_dataset(exported, None, tmp_path / "back")
    assert check.validate_dataset(back).ok
    keeps_ids = fmt != "openai"
    assert snapshot(back, keeps_ids) == snapshot(source, keeps_ids)
    if keeps_ids:
        assert ds.load_records(back)[0]["meta"] == {"labeler": "gpt-4o", "status": "ok", "cost": 0.01}
    # images are copied into the dataset, relative, and never outside it
    for r in ds.load_records(back):
        assert all(p.startswith("images/") for p in r["images"])


def test_a_failed_import_leaves_no_half_written_folder(source, tmp_path):
    export_dataset(source, "swift", tmp_path / "exp")
    (tmp_path / "exp" / "images" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match="b.jpg not found"):
        import_dataset(tmp_path / "exp", "swift", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_import_finds_the_only_records_file_of_a_folder(source, tmp_path):
    export_dataset(source, "openai", tmp_path / "oa")
    assert detect_format(tmp_path / "oa") == "openai"
    assert len(ds.load_records(import_dataset(tmp_path / "oa", None, tmp_path / "back"))) == 4


@pytest.mark.parametrize("fmt", ["llamafactory", "imagefolder", "swift"])
def test_export_copies_images_with_relative_paths(source, tmp_path, fmt):
    export_dataset(source, fmt, tmp_path / "out")
    copied = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert copied == ["a.png", "a_1.png", "b.jpg"]  # one copy per distinct image, names kept unique


def test_llamafactory_layout(source, tmp_path):
    data = export_dataset(source, "llamafactory", tmp_path / "out")
    info = json.loads((data.parent / "dataset_info.json").read_text(encoding="utf-8"))
    entry = info["src"]
    assert entry["file_name"] == "data.json" and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "conversations", "images": "images"}
    assert entry["tags"] == {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "system_tag": "system",
    }
    rows = json.loads(data.read_text(encoding="utf-8"))
    assert rows[0]["conversations"][0] == {"from": "system", "value": "You describe UI components."}
    assert [t["from"] for t in rows[1]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert rows[3]["images"] == ["images/a.png", "images/a_1.png"]
    assert all((data.parent / p).is_file() for row in rows for p in row["images"])


def test_openai_embeds_images_where_the_placeholders_were(source, tmp_path):
    chat = export_dataset(source, "openai", tmp_path / "out")
    rows = [json.loads(line) for line in chat.read_text(encoding="utf-8").splitlines()]
    user = rows[2]["messages"][0]["content"]
    assert [p["type"] for p in user] == ["text", "image_url", "text"]
    assert user[0]["text"] == "What is shown in " and user[2]["text"] == " here?"
    url = rows[1]["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == (source / "images" / "b.jpg").read_bytes()
    assert rows[1]["messages"][2] == {"role": "user", "content": "用 JSON 回答。"}  # no image: plain text
    assert set(rows[0]) == {"messages"}
    assert not (tmp_path / "out" / "images").exists()


def test_openai_export_turns_other_image_types_into_png(tmp_path):
    root = tmp_path / "bmp"
    save_image(root / "x.bmp", (1, 2, 3), "BMP")
    ds.write_records(
        root / "data.jsonl",
        [
            {
                "id": "1",
                "images": ["x.bmp"],
                "messages": [{"role": "user", "content": "<image>?"}, {"role": "assistant", "content": "dark"}],
            }
        ],
    )
    back = import_dataset(export_dataset(root, "openai", tmp_path / "out"), "openai", tmp_path / "back")
    [image] = ds.load_records(back, absolute_images=True)[0]["images"]
    assert image.endswith(".png") and Image.open(image).getpixel((0, 0)) == (1, 2, 3)


def load_hf(folder: Path):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset(
        "imagefolder", data_dir=str(folder), split="train", cache_dir=str(folder.parent / "hf_cache")
    )


def test_imagefolder_loads_with_datasets_one_image_per_record(tmp_path):
    src = build(tmp_path / "single", multi_image=False)
    meta = export_dataset(src, "imagefolder", tmp_path / "hf")
    assert "file_name" in json.loads(meta.read_text(encoding="utf-8").splitlines()[0])
    loaded = load_hf(tmp_path / "hf")
    assert loaded.num_rows == 3
    assert loaded[0]["image"].size == (9, 7) and loaded[0]["image"].getpixel((0, 0)) == (255, 0, 0)
    assert loaded[1]["messages"][1] == {"role": "assistant", "content": "绿色方块。"}
    assert loaded["id"] == ["r1", "r2", "r3"]
    assert json.loads(loaded[0]["meta"])["labeler"] == "gpt-4o"


def test_imagefolder_multi_image_records_use_file_names(source, tmp_path):
    meta = export_dataset(source, "imagefolder", tmp_path / "hf")
    rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines()]
    assert all("file_names" in r and "file_name" not in r for r in rows)
    loaded = load_hf(tmp_path / "hf")
    assert loaded.num_rows == 4
    assert [len(images) for images in loaded["images"]] == [1, 1, 1, 2]
    assert loaded[3]["images"][1].getpixel((0, 0)) == (0, 0, 255)


def test_imagefolder_import_of_a_caption_dataset(tmp_path):
    folder = tmp_path / "captions"
    save_image(folder / "cat.png", (9, 9, 9))
    (folder / "metadata.jsonl").write_text(
        json.dumps({"file_name": "cat.png", "text": "一只猫"}) + "\n", encoding="utf-8"
    )
    back = import_dataset(folder, None, tmp_path / "back")
    [rec] = ds.load_records(back)
    assert rec["messages"] == [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "一只猫"}]
    assert check.validate_dataset(back).ok


def test_swift_import_of_a_json_list_with_absolute_paths_and_query_keys(tmp_path):
    img = tmp_path / "elsewhere" / "shot.png"
    save_image(img, (10, 20, 30))
    rows = [
        {
            "messages": [{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": "Hello"}],
            "images": [str(img)],
        },
        {
            "system": "Be brief.",
            "query": "<image>And now?",
            "response": "Done.",
            "history": [["First?", "Yes."]],
            "images": [str(img)],
        },
    ]
    (tmp_path / "swift.json").write_text(json.dumps(rows), encoding="utf-8")
    assert detect_format(tmp_path / "swift.json") == "swift"
    back = import_dataset(tmp_path / "swift.json", "swift", tmp_path / "back")
    recs = ds.load_records(back)
    assert [r["id"] for r in recs] == ["0001", "0002"]
    assert recs[0]["images"] == recs[1]["images"] == ["images/shot.png"]
    assert [m["role"] for m in recs[1]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert recs[1]["messages"][3]["content"] == "<image>And now?"
    assert check.validate_dataset(back).ok


def test_llamafactory_import_honours_custom_tags_and_system_column(tmp_path):
    folder = tmp_path / "lf"
    save_image(folder / "pics" / "1.png", (5, 5, 5))
    rows = [
        {
            "messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}],
            "sys": "S",
            "imgs": ["pics/1.png"],
        }
    ]
    (folder / "mine.json").write_text(json.dumps(rows), encoding="utf-8")
    info = {
        "mine": {
            "file_name": "mine.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "imgs", "system": "sys"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    }
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    back = import_dataset(folder, None, tmp_path / "back")
    [rec] = ds.load_records(back)
    assert rec["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "<image>Q"},
        {"role": "assistant", "content": "A"},
    ]
    assert rec["images"] == ["images/1.png"]


def test_refusals_are_one_sentence(source, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        export_dataset(source, "swift", tmp_path / "full")
    with pytest.raises(ConfigError, match="Unknown dataset format 'csv'"):
        export_dataset(source, "csv", tmp_path / "o1")
    (source / "images" / "a.png").unlink()
    with pytest.raises(DatasetError, match="Cannot export .* line 1 \\(id r1\\): image images/a.png not found"):
        export_dataset(source, "swift", tmp_path / "o2")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="Cannot tell which file"):
        import_dataset(tmp_path / "plain", None, tmp_path / "o3")
    (tmp_path / "plain" / "x.jsonl").write_text('{"text": "no messages"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="Cannot tell the format"):
        import_dataset(tmp_path / "plain", None, tmp_path / "o3")
    web = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": "z"},
        ]
    }
    (tmp_path / "web.jsonl").write_text(json.dumps(web) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="on the web"):
        import_dataset(tmp_path / "web.jsonl", None, tmp_path / "o4")
    broken = [{"conversations": [{"value": "no role"}], "images": []}]
    (tmp_path / "broken.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(DatasetError, match="broken.json is not valid llamafactory data \\(KeyError"):
        import_dataset(tmp_path / "broken.json", None, tmp_path / "o5")
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o5").exists()


def test_refusals_reach_a_chinese_page_in_chinese(source, tmp_path):
    with pytest.raises(ConfigError) as unknown:
        export_dataset(source, "csv", tmp_path / "o1")
    assert localize(unknown.value, "zh") == f"未知的数据集格式 'csv'；可选：{', '.join(FORMATS)}。"
    (source / "images" / "a.png").unlink()
    with pytest.raises(DatasetError) as invalid:
        export_dataset(source, "swift", tmp_path / "o2")
    # The first fault travels in Chinese too, not as the English line it prints as.
    assert "第 1 行（id r1）：找不到图片 images/a.png；" in localize(invalid.value, "zh")


def test_export_and_import_cli(source, tmp_path, capsys):
    assert main(["data", "export", str(source), "--format", "llamafactory", "--out", str(tmp_path / "lf")]) == 0
    assert "data.json" in capsys.readouterr().out
    assert main(["data", "import", str(tmp_path / "lf"), "--out", str(tmp_path / "back")]) == 0
    out = capsys.readouterr().out
    assert f"Imported {tmp_path / 'lf'}" in out and "All 4 records" in out
    assert main(["data", "export", str(source), "--format", "openai", "--out", str(tmp_path / "lf")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_help_for_every_action(capsys):
    for action in ("check", "export", "import", "split"):
        with pytest.raises(SystemExit) as done:
            main(["data", action, "--help"])
        assert done.value.code == 0
        assert "usage: python -m lab data " + action in capsys.readouterr().out


@pytest.mark.parametrize("fmt", FORMATS)
def test_sample_round_trips(tmp_path, fmt):
    back = import_dataset(export_dataset(SAMPLE, fmt, tmp_path / "out"), fmt, tmp_path / "back")
    keeps_ids = fmt != "openai"
    # OpenAI refuses the sample's palette PNGs: they travel as RGB, the same pixels in other bytes.
    same = pixels if fmt == "openai" else digest
    assert snapshot(back, keeps_ids, same) == snapshot(SAMPLE, keeps_ids, same)


def test_sample_variant_file_exports(tmp_path):
    variant = SAMPLE / "data_json_zh.jsonl"
    if not variant.is_file():
        pytest.skip("no data_json_zh.jsonl variant")
    back = import_dataset(export_dataset(variant, "llamafactory", tmp_path / "out"), None, tmp_path / "back")
    assert snapshot(back) == snapshot(variant)


def _uploaded(bundle: Path, images: list, fmt: str = "swift") -> Path:
    """A one-record upload in ``bundle`` naming ``images`` (paths or URLs)."""
    if fmt == "openai":
        parts = [{"type": "image_url", "image_url": {"url": str(u)}} for u in images] + [{"type": "text", "text": "Q"}]
        row = {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "A"}]}
    else:
        row = {
            "messages": [
                {"role": "user", "content": "<image>" * len(images) + "Q"},
                {"role": "assistant", "content": "A"},
            ],
            "images": [str(i) for i in images],
        }
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "up.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    return bundle / "up.jsonl"


@pytest.mark.parametrize("restricted", [False, True])
def test_an_upload_may_only_name_images_inside_itself(tmp_path, monkeypatch, restricted):
    """Absolute paths, '..' and file:// URLs to the server's files are refused per record, whether they exist or not."""
    if restricted:
        monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    secret = tmp_path / "outside" / "secret.png"
    save_image(secret, (1, 2, 3))
    bundle = tmp_path / "upload"
    depth = "../" * len(bundle.parts)
    names = {
        "absolute": ([secret], [secret.with_name("gone.png")], "swift"),
        "dotdot": (
            [f"{depth}{str(secret).lstrip('/')}"],
            [f"{depth}{str(secret.with_name('gone.png')).lstrip('/')}"],
            "swift",
        ),
        "file url": ([f"file://{secret}"], [f"file://{secret.with_name('gone.png')}"], "openai"),
    }
    for kind, (present, missing, fmt) in names.items():
        errors = []
        for images in (present, missing):
            with pytest.raises(DatasetError) as caught:
                import_dataset(
                    _uploaded(bundle, images, fmt), None, tmp_path / "lab_home" / "data" / "x", bundle=bundle
                )
            errors.append(caught.value)
        assert "Record 1 names an image outside the imported files" in str(errors[0]), kind
        assert "第 1 条样本引用了导入文件之外的图片" in localize(errors[0], "zh"), kind
        gone = str(errors[1]).replace("gone.png", "secret.png")
        assert gone == str(errors[0]), kind  # the same sentence whether the file exists or not
        assert not (tmp_path / "lab_home" / "data" / "x").exists()


def test_an_upload_keeps_its_own_images_and_data_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    bundle = tmp_path / "lab_home" / "staging"
    save_image(bundle / "pics" / "a.png", (9, 9, 9))
    png = base64.b64encode((bundle / "pics" / "a.png").read_bytes()).decode()
    back = import_dataset(_uploaded(bundle, ["pics/a.png"]), None, tmp_path / "lab_home" / "data" / "x", bundle=bundle)
    assert ds.load_records(back)[0]["images"] == ["images/a.png"]
    inline = _uploaded(tmp_path / "lab_home" / "inline", [f"data:image/png;base64,{png}"], "openai")
    back = import_dataset(inline, None, tmp_path / "lab_home" / "data" / "y")
    assert check.validate_dataset(back).ok


def test_on_a_shared_server_a_workspace_folder_imports_only_its_own_images(tmp_path, monkeypatch):
    """Without an upload, the folder being imported is the bundle: its records cannot reach the rest of the server."""
    secret = tmp_path / "outside" / "secret.png"
    save_image(secret, (1, 2, 3))
    src = _uploaded(tmp_path / "lab_home" / "incoming", [secret])
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    with pytest.raises(DatasetError, match="Record 1 names an image outside the imported files"):
        import_dataset(src, None, tmp_path / "lab_home" / "data" / "x")
    with pytest.raises(LabError, match="only the workspace's own files"):
        import_dataset(secret.parent, None, tmp_path / "lab_home" / "data" / "y")
    monkeypatch.delenv("LAB_RESTRICT_PATHS")
    assert ds.load_records(import_dataset(src, None, tmp_path / "mine"))[0]["images"] == ["images/secret.png"]


def test_a_llamafactory_info_file_cannot_point_outside_its_folder(tmp_path):
    (tmp_path / "secret.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "S"}]}]))
    folder = tmp_path / "lf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"x": {"file_name": "../secret.json"}}), encoding="utf-8")
    with pytest.raises(DatasetError, match="names no data file that exists"):
        import_dataset(folder, None, tmp_path / "back")


def test_each_download_export_gets_its_own_folder(sample_dataset, lab_home):
    """Two visitors exporting the same dataset at once must not write into or delete each other's files."""
    from lab.formats import export_for_download

    first, first_zip = export_for_download(sample_dataset, "llamafactory")
    second, second_zip = export_for_download(sample_dataset, "llamafactory")
    assert first_zip != second_zip and first.main_file.parent != second.main_file.parent
    assert first_zip.is_file() and second_zip.is_file() and first.main_file.is_file()
    # the server's folder means nothing to whoever downloads the zip
    assert "set dataset_dir to the folder you unzip it into" in localize(first.summary(), "en")


@pytest.mark.parametrize("fmt", ["llamafactory", "swift", "imagefolder"])
def test_boxes_round_trip_exactly(tmp_path, fmt):
    source = SAMPLE / "data_grounding.jsonl"
    export_dataset(source, fmt, tmp_path / "out")
    back = ds.load_records(import_dataset(tmp_path / "out", fmt, tmp_path / "back"))
    original = ds.load_records(source)
    assert [(r["messages"], r["objects"]) for r in back] == [(r["messages"], r["objects"]) for r in original]
    assert check.validate_dataset(tmp_path / "back").ok


def test_llamafactory_gets_qwens_box_tokens_and_its_tokens_come_back_as_objects(tmp_path):
    export_dataset(SAMPLE / "data_grounding.jsonl", "llamafactory", tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "data.json").read_text(encoding="utf-8"))
    # 0005 is 224x112: [12, 38, 109, 75] on the 0-1000 grid, as Qwen2-VL and Qwen3-VL read it.
    assert rows[0]["conversations"][-1]["value"] == (
        "<|object_ref_start|>the purple Day button<|object_ref_end|><|box_start|>(54,339),(487,670)<|box_end|>"
    )
    for row in rows:  # a LLaMA-Factory dataset written by hand has no objects column
        del row["objects"]
    (tmp_path / "out" / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    back = ds.load_records(import_dataset(tmp_path / "out", None, tmp_path / "back"))
    assert back[0]["messages"][-1]["content"] == "<ref-object><bbox>"
    assert back[0]["objects"] == {"ref": ["the purple Day button"], "bbox": [[12.1, 38.0, 109.1, 75.0]]}
    assert check.validate_dataset(tmp_path / "back").ok


def test_openai_gets_plain_json_boxes(tmp_path):
    main_file = export_dataset(SAMPLE / "data_grounding.jsonl", "openai", tmp_path / "out")
    first = json.loads(main_file.read_text(encoding="utf-8").splitlines()[0])
    assert first["messages"][-1]["content"] == "the purple Day button[54, 339, 487, 670]"


@pytest.mark.parametrize("fmt", ["swift", "llamafactory"])
def test_videos_are_copied_and_come_back(tmp_path, fmt):
    export_dataset(SAMPLE / "data_video.jsonl", fmt, tmp_path / "out")
    folder = import_dataset(tmp_path / "out", fmt, tmp_path / "back")
    records = ds.load_records(folder)
    assert [r["videos"] for r in records] == [[f"videos/clip_{n:02d}"] for n in range(1, 5)]
    frames = sorted((folder / "videos" / "clip_01").iterdir())
    assert [f.read_bytes() for f in frames] == [
        f.read_bytes() for f in sorted((SAMPLE / "videos" / "clip_01").iterdir())
    ]
    assert check.validate_dataset(folder).ok


@pytest.mark.parametrize("fmt", ["openai", "imagefolder"])
def test_formats_without_videos_refuse_them(tmp_path, fmt):
    with pytest.raises(DatasetError, match=f"The {fmt} format has no room for videos"):
        export_dataset(SAMPLE / "data_video.jsonl", fmt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
