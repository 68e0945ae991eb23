"""The bundled sample dataset: deterministic, complete, and its answers agree with its pictures."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab.images import open_image
from lab.presets import load_prompt_preset

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
FILES = {
    ("caption", "en"): "data.jsonl",
    ("caption", "zh"): "data_caption_zh.jsonl",
    ("json", "en"): "data_json_en.jsonl",
    ("json", "zh"): "data_json_zh.jsonl",
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def load_generator():
    """data/make_sample.py as a module (data/ is not a package)."""
    if "make_sample" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_sample", REPO / "data" / "make_sample.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_sample"] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["make_sample"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    make_sample = load_generator()
    first, second = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    make_sample.generate(first)
    make_sample.generate(second)
    return first, second


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generator_is_deterministic(generated):
    first, second = generated
    files = all_files(first)
    assert len(files) == 60 + 4 + 2 + 4 * 4  # pictures, caption/JSON files, grounding and video files, clip frames
    assert files == all_files(second)


def test_committed_sample_matches_the_generator(generated):
    fresh = all_files(generated[0])
    committed = all_files(SAMPLE)
    assert set(committed) == set(fresh), "data/sample is stale: run python data/make_sample.py"
    for name, data in fresh.items():
        if name.endswith(".png"):
            # Pixels, not bytes: another zlib may compress the same picture differently.
            with Image.open(SAMPLE / name) as old, Image.open(generated[0] / name) as new:
                assert old.size == new.size and old.convert("RGB").tobytes() == new.convert("RGB").tobytes(), name
        else:
            assert committed[name] == data, f"{name} is stale: run python data/make_sample.py"


def test_records_follow_the_dataset_contract():
    ids = None
    for name in FILES.values():
        records = read_jsonl(SAMPLE / name)
        assert [r["id"] for r in records] == (ids or [r["id"] for r in records])
        ids = [r["id"] for r in records]
        for rec in records:
            assert set(rec) == {"id", "images", "messages", "meta"}
            assert rec["images"] == [f"images/{rec['id']}.png"] and (SAMPLE / rec["images"][0]).is_file()
            user, assistant = rec["messages"]
            assert user["role"] == "user" and user["content"].startswith("<image>")
            assert user["content"].count("<image>") == len(rec["images"])
            assert assistant["role"] == "assistant" and assistant["content"]
            assert rec["meta"]["labeler"] == "generator" and rec["meta"]["status"] == "ok"
    assert len(ids) == 60 and len(set(ids)) == 60


def test_ten_kinds_six_variants_and_the_first_ten_cover_all():
    kinds = [r["meta"]["kind"] for r in read_jsonl(SAMPLE / "data.jsonl")]
    assert len(set(kinds)) == 10 and all(kinds.count(k) == 6 for k in set(kinds))
    assert len(set(kinds[:10])) == 10


@pytest.mark.parametrize(
    "lang, keys",
    [("en", ("component", "functions", "description", "details")), ("zh", ("组件名", "功能", "描述", "细节"))],
)
def test_json_answers_parse_and_have_the_expected_keys(lang, keys):
    preset_keys = load_prompt_preset("sample_json").prompt(lang)[2]
    assert preset_keys == list(keys[:2])
    for rec in read_jsonl(SAMPLE / FILES[("json", lang)]):
        answer = json.loads(rec["messages"][-1]["content"])
        assert list(answer) == list(keys[:2]) and isinstance(answer[keys[0]], str)
        assert 1 <= len(answer[keys[1]]) <= 3
        for func in answer[keys[1]]:
            assert set(func) == set(keys[2:]) and func[keys[3]] and all(isinstance(d, str) for d in func[keys[3]])


def test_language_of_the_answers():
    for (style, lang), name in FILES.items():
        for rec in read_jsonl(SAMPLE / name):
            text = rec["messages"][-1]["content"]
            assert bool(CJK.search(text)) == (lang == "zh"), (name, rec["id"])
            if style == "caption":
                assert text.endswith("。" if lang == "zh" else ".") and len(text) < 80


def test_prompts_match_the_sample_presets():
    for (style, lang), name in FILES.items():
        _, user, _ = load_prompt_preset(f"sample_{style}").prompt(lang)
        assert {r["messages"][0]["content"] for r in read_jsonl(SAMPLE / name)} == {user}


def test_colour_named_in_each_caption_is_in_its_picture():
    make_sample = load_generator()
    colors = dict(make_sample.COLORS, gray=(make_sample.MID, "灰色"))
    for rec in read_jsonl(SAMPLE / "data.jsonl"):
        named = [c for c in colors if re.search(rf"\b{c}\b", rec["messages"][-1]["content"])]
        assert len(named) == 1, rec["id"]
        pixels = np.asarray(open_image(SAMPLE / rec["images"][0])).reshape(-1, 3)
        share = np.all(pixels == colors[named[0]][0], axis=1).mean()
        assert share > 0.005, (rec["id"], named[0], share)


def test_numbers_in_captions_match_the_pictures():
    """Progress bars: the filled share of the track is the percentage the caption states."""
    make_sample = load_generator()
    checked = 0
    for rec in read_jsonl(SAMPLE / "data.jsonl"):
        if rec["meta"]["kind"] != "progress_bar":
            continue
        caption = rec["messages"][-1]["content"]
        pct = int(re.search(r"(\d+)%", caption).group(1))
        color = make_sample.COLORS[re.search(r"in (\w+)\.", caption).group(1)][0]
        row = np.asarray(open_image(SAMPLE / rec["images"][0]))[58]  # the middle row of the track
        filled = np.flatnonzero(np.all(row == color, axis=1))
        assert filled.size, (rec["id"], "no filled part in the caption's colour")
        assert abs((filled.max() - 16 + 1) / 192 * 100 - pct) < 2, (rec["id"], pct)
        checked += 1
    assert checked == 6


def test_the_variant_files_for_boxes_and_clips():
    grounding = read_jsonl(SAMPLE / "data_grounding.jsonl")
    assert len(grounding) == 18 and {r["meta"]["kind"] for r in grounding} == {"button_group", "slider", "form"}
    for rec in grounding:  # the same pictures as the caption files, with ms-swift's boxes
        assert (SAMPLE / rec["images"][0]).is_file() and len(rec["objects"]["bbox"]) == len(rec["objects"]["ref"])
    clips = read_jsonl(SAMPLE / "data_video.jsonl")
    assert [r["videos"] for r in clips] == [[f"videos/clip_{n:02d}"] for n in range(1, 5)]
    for rec in clips:
        frames = sorted((SAMPLE / rec["videos"][0]).glob("*.png"))
        assert len(frames) == 4 and all(Image.open(f).size == (112, 56) for f in frames)
        first, last = (int(p) for p in re.findall(r"(\d+)%", rec["messages"][-1]["content"]))
        filled = [np.all(np.asarray(open_image(f))[36] != (226, 230, 236), axis=1).sum() for f in frames]
        assert (filled[-1] > filled[0]) == (last > first), rec["id"]  # the bar moves the way the answer says


def test_sample_is_small():
    sizes = [p.stat().st_size for p in (SAMPLE / "images").glob("*.png")]
    assert len(sizes) == 60 and max(sizes) < 8_000
    assert sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file()) < 1_000_000
    for rec in read_jsonl(SAMPLE / "data_json_zh.jsonl"):
        assert len(rec["messages"][-1]["content"]) < 200  # a sample stays around 200 tokens
