"""Boxes: each family's token strings (computed by hand), resizing, reading answers back, scores, the checker."""

from __future__ import annotations

import json

import pytest

from lab.box_answers import answer_boxes, box_scores, iou
from lab.dataset_check import validate_dataset
from lab.grounding import (
    BOX_FORMATS,
    PLAIN,
    ImageSpace,
    box_format,
    image_space,
    labeled_objects,
)
from lab.pixel_limits import set_image_pixels
from lab.training.encode import IGNORE, encode_sample

# A 224x112 picture (the sample's button groups); the box is the purple "Day" button of 0005.
MESSAGES = [
    {"role": "user", "content": "<image>Find the selected button."},
    {"role": "assistant", "content": "<ref-object><bbox>"},
]
OBJECTS = {"ref": ["the purple Day button"], "bbox": [[12, 38, 109, 75]]}
IMAGE = "images/0005.png"


def _processor(tiny_models, family):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_models(family))


def _answer(processor, family, sample_dataset):
    sample = encode_sample(processor, "0005", MESSAGES, [str(sample_dataset / IMAGE)], objects=OBJECTS, family=family)
    learned = [token for token, label in zip(sample.input_ids, sample.labels) if label != IGNORE]
    return sample, processor.tokenizer.decode(learned)


# 0-1000 grid: 12/224*1000 = 53.6 -> 54, 38/112*1000 = 339.3 -> 339, 109/224*1000 = 486.6 -> 487, 75/112*1000 = 669.6 ->
# 670
GRID_ANSWER = "<|object_ref_start|>the purple Day button<|object_ref_end|><|box_start|>(54,339),(487,670)<|box_end|>"


@pytest.mark.parametrize("family", [name for name, form in BOX_FORMATS.items() if form.space == "grid"])
def test_qwen2_and_qwen3_write_the_box_on_the_1000_grid(tiny_models, sample_dataset, family):
    processor = _processor(tiny_models, family)
    sample, learned = _answer(processor, family, sample_dataset)
    assert learned == GRID_ANSWER + "<|im_end|>"  # the box is learned, and the turn's end
    set_image_pixels(processor, max_pixels=56 * 56 * 2)  # the grid does not depend on the resize
    assert _answer(processor, family, sample_dataset)[1] == GRID_ANSWER + "<|im_end|>"


def test_qwen2_5_writes_pixels_of_the_image_the_model_sees(tiny_models, sample_dataset):
    processor = _processor(tiny_models, "qwen2_5_vl")
    # The tiny processor keeps up to 36 x 28 x 28 = 28224 pixels: smart_resize(112, 224) gives
    # 112 x 224 (4 x 8 tokens of 28), already within bounds, so the box stays as drawn.
    _, learned = _answer(processor, "qwen2_5_vl", sample_dataset)
    assert learned == (
        "<|object_ref_start|>the purple Day button<|object_ref_end|><|box_start|>(12,38),(109,75)<|box_end|><|im_end|>"
    )
    # At most 56 x 56 x 2 = 6272 pixels: beta = sqrt(112*224/6272) = 2, so the image becomes
    # floor(56/28)*28 = 56 high and floor(112/28)*28 = 112 wide: every coordinate is halved.
    set_image_pixels(processor, max_pixels=56 * 56 * 2)
    sample, learned = _answer(processor, "qwen2_5_vl", sample_dataset)
    assert learned == (
        "<|object_ref_start|>the purple Day button<|object_ref_end|><|box_start|>(6,19),(54,38)<|box_end|><|im_end|>"
    )  # 37.5 -> 38 (round half to even: 38)
    assert image_space(processor, 112, 224) == ImageSpace(224, 112, 112, 56)
    # The image really is fed at that size: 56x112 is 2x4 patches of 28, 8 image tokens.
    assert sample.input_ids.count(processor.image_token_id) == 8


def test_a_family_without_box_tokens_gets_plain_json_on_the_grid(tiny_models, sample_dataset):
    processor = _processor(tiny_models, "qwen2_5_vl")  # any chat template; the family decides the form
    _, learned = _answer(processor, "llava", sample_dataset)
    assert learned == "the purple Day button[54, 339, 487, 670]<|im_end|>"
    assert box_format("llava") == PLAIN and set(BOX_FORMATS) == {
        "qwen2_vl",
        "qwen2_5_vl",
        "qwen3_vl",
        "qwen3_5",
    }  # as lab.families says


def test_refs_in_the_question_and_norm1_boxes_of_a_second_image(tiny_models, sample_dataset):
    processor = _processor(tiny_models, "qwen2_vl")
    messages = [
        {"role": "user", "content": "<image><image>Find the <ref-object> in the second picture."},
        {"role": "assistant", "content": "<bbox>"},
    ]
    objects = {"ref": ["slider handle"], "bbox": [[0.25, 0.5, 0.75, 1.0]], "bbox_type": "norm1", "image_id": [1]}
    images = [str(sample_dataset / "images/0001.png"), str(sample_dataset / IMAGE)]
    sample = encode_sample(processor, "x", messages, images, objects=objects, family="qwen2_vl")
    assert "Find the <|object_ref_start|>slider handle<|object_ref_end|> in the second picture." in sample.text
    learned = processor.tokenizer.decode([t for t, label in zip(sample.input_ids, sample.labels) if label != IGNORE])
    assert learned == "<|box_start|>(250,500),(750,1000)<|box_end|><|im_end|>"


def test_answers_are_read_back_in_each_familys_space():
    space = ImageSpace(224, 112, 112, 56)
    tokens = "<|object_ref_start|>Day<|object_ref_end|><|box_start|>(54,339),(487,670)<|box_end|>"
    grid = answer_boxes(tokens, box_format("qwen2_vl"), space)
    assert [round(v, 1) for v in grid[0]] == [12.1, 38.0, 109.1, 75.0]
    resized = answer_boxes("<|box_start|>(6,19),(54,38)<|box_end|>", box_format("qwen2_5_vl"), space)
    assert resized == [[12.0, 38.0, 108.0, 76.0]]
    # Tokens stripped by a server, JSON lists and Qwen2.5-VL's bbox_2d objects; in the order written.
    text = 'a (100,200),(300,400) then {"bbox_2d": [500, 500, 1000, 1000], "label": "b"} and [0, 0, 10, 10]'
    found = answer_boxes(text, box_format("qwen3_vl"), ImageSpace(1000, 1000, 28, 28))
    assert found == [[100, 200, 300, 400], [500, 500, 1000, 1000], [0, 0, 10, 10]]
    assert answer_boxes("no box here, just (1,2) and [3, 4]", PLAIN, space) == []


def test_iou_and_accuracy_at_half():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert box_scores([[0, 0, 10, 10]], [[0, 0, 10, 10]]) == {"box_iou": 100.0, "box_acc50": 100.0}
    one_off = box_scores([[5, 0, 15, 10]], [[0, 0, 10, 10]])
    assert one_off["box_iou"] == pytest.approx(100 / 3) and one_off["box_acc50"] == 0.0
    # A missing box and an extra box both count: two references, one found exactly.
    assert box_scores([[0, 0, 10, 10]], [[0, 0, 10, 10], [20, 20, 30, 30]]) == {"box_iou": 50.0, "box_acc50": 50.0}
    assert box_scores([[0, 0, 10, 10], [50, 50, 60, 60]], [[0, 0, 10, 10]])["box_acc50"] == 50.0
    assert box_scores([], [[0, 0, 10, 10]]) == {"box_iou": 0.0, "box_acc50": 0.0}


def test_a_labelers_grid_boxes_become_pixels_and_placeholders():
    parsed = {"objects": [{"ref": "Submit", "bbox": [100, 500, 500, 1000]}, {"ref": "Name", "bbox": [0, 0, 250, 100]}]}
    content, objects = labeled_objects(parsed, width=224, height=112)
    assert content == "<ref-object><bbox>\n<ref-object><bbox>"
    assert objects == {"ref": ["Submit", "Name"], "bbox": [[22.4, 56.0, 112.0, 112.0], [0.0, 0.0, 56.0, 11.2]]}
    assert labeled_objects({"objects": [{"ref": "x", "bbox": [10, 10, 5, 20]}]}, 224, 112) is None
    assert labeled_objects({"objects": [{"ref": "x", "bbox": "here"}]}, 224, 112) is None
    assert labeled_objects({"label": "cat"}, 224, 112) is None


def _dataset(tmp_path, sample_dataset, records):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes((sample_dataset / IMAGE).read_bytes())
    lines = [json.dumps({"id": str(n), "images": ["images/a.png"], **r}) for n, r in enumerate(records, start=1)]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_the_checker_names_each_bad_box(tmp_path, sample_dataset):
    ask = [{"role": "user", "content": "<image>Where?"}, {"role": "assistant", "content": "<ref-object><bbox>"}]
    folder = _dataset(
        tmp_path,
        sample_dataset,
        [
            {"messages": ask, "objects": {"ref": ["ok"], "bbox": [[0, 0, 224, 112]]}},
            {"messages": ask, "objects": {"ref": ["out"], "bbox": [[10, 10, 300, 50]]}},
            {"messages": ask, "objects": {"ref": ["flat"], "bbox": [[10, 10, 5, 50]]}},
            {"messages": ask, "objects": {"ref": [], "bbox": [[1, 1, 2, 2]]}},
            {"messages": ask},
            {"messages": ask, "objects": {"ref": ["x"], "bbox": [[1, 2, 3]]}},
            {"messages": ask, "objects": {"ref": ["x"], "bbox": [[1, 1, 2, 2]], "image_id": [1]}},
        ],
    )
    report = validate_dataset(folder)
    faults = {fault.line: str(fault.reason) for fault in report.faults}
    assert report.valid == 1 and 1 not in faults
    assert faults[2] == "box 1 [10, 10, 300, 50] is not inside its image (224x112)"
    assert faults[3] == "box 1 [10, 10, 5, 50] does not have x1 < x2 and y1 < y2"
    assert faults[4] == "1 <ref-object> placeholder(s) but 0 ref(s) in 'objects'"
    assert faults[5] == "2 <ref-object>/<bbox> placeholder(s) but no 'objects'"
    assert faults[6] == "'objects.bbox' is not a list of [x1, y1, x2, y2] boxes"
    assert faults[7] == "box 1 belongs to image 1, but the record has 1 image(s)"


def test_the_sample_grounding_boxes_cover_what_was_drawn(sample_dataset):
    """The selected buttons are filled with their colour inside their box and not outside it."""
    import numpy as np

    from lab.images import open_image

    assert validate_dataset(sample_dataset / "data_grounding.jsonl").ok
    records = [json.loads(line) for line in (sample_dataset / "data_grounding.jsonl").read_text().splitlines()]
    buttons = [r for r in records if r["meta"]["kind"] == "button_group"]
    assert len(records) == 18 and len(buttons) == 6
    for record in buttons:
        pixels = np.asarray(open_image(sample_dataset / record["images"][0]))
        x1, y1, x2, y2 = (int(v) for v in record["objects"]["bbox"][0])
        color = pixels[y1 + 3, (x1 + x2) // 2]  # above the label, below the rounded corners
        inside = np.all(pixels[y1:y2, x1:x2] == color, axis=-1).mean()
        outside = np.all(pixels == color, axis=-1).sum() - np.all(pixels[y1:y2, x1:x2] == color, axis=-1).sum()
        assert inside > 0.8 and outside == 0, record["id"]


def test_answers_with_boxes_are_scored_next_to_the_text_metrics(tiny_models, sample_dataset):
    from lab.evaluation.report import metrics_table
    from lab.evaluation.runner import EvalResult, for_model, samples_from_dataset, score_variants

    processor = _processor(tiny_models, "qwen2_vl")
    samples = [
        for_model(s, processor, "qwen2_vl") for s in samples_from_dataset(sample_dataset / "data_grounding.jsonl")
    ]
    button, handle = samples[0], samples[1]  # 0005 (phrase in the answer) and 0008 ("Find the <ref-object>.")
    assert button.reference == GRID_ANSWER and button.target.boxes == [[12.0, 38.0, 109.0, 75.0]]
    assert "<|object_ref_start|>slider handle<|object_ref_end|>" in handle.messages[-1]["content"]
    assert handle.reference.startswith("<|box_start|>") and len(handle.target.boxes) == 1
    answers = {"model": [button.reference, "<|box_start|>(0,0),(10,10)<|box_end|>"]}
    scored = score_variants([button, handle], answers, ["model"])
    first, second = (row["scores"]["model"] for row in scored["samples"])
    assert first["box_acc50"] == 100.0 and first["box_iou"] > 98  # the grid's rounding costs a little
    assert first["exact_match"] == 100.0
    assert second["box_iou"] == 0.0 and second["box_acc50"] == 0.0
    assert scored["metrics"]["model"]["box_acc50"] == 50.0
    result = EvalResult(name="t", source="", total=2, **scored)
    names = [row[0] for row in metrics_table(result)[1]]
    assert names[-2:] == ["box_iou", "box_acc50"] and names[0] == "bleu"


def test_generated_answers_keep_the_box_tokens_and_drop_the_others(tiny_models):
    from lab.generate import answer_text

    tokenizer = _processor(tiny_models, "qwen2_vl").tokenizer
    ids = tokenizer(
        "<|object_ref_start|>a cat<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|><|vision_start|>",
        add_special_tokens=False,
    )["input_ids"]
    assert (
        answer_text(tokenizer, ids) == "<|object_ref_start|>a cat<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>"
    )
    assert answer_text(tokenizer, tokenizer("plain words", add_special_tokens=False)["input_ids"]) == "plain words"


def test_a_grounding_label_run_writes_records_with_objects(tmp_path):
    from fake_openai import FakeOpenAI, answer
    from PIL import Image

    from lab.labeling.batch import run_labeling
    from lab.labeling.client import ApiLabeler, LabelerConfig
    from lab.labeling.item import PromptSpec
    from lab.presets import load_prompt_preset

    (tmp_path / "pics").mkdir()
    Image.new("RGB", (200, 100), "white").save(tmp_path / "pics" / "a.png")
    reply = json.dumps({"objects": [{"ref": "OK button", "bbox": [100, 200, 500, 800]}]})
    with FakeOpenAI(responder=lambda body: answer(reply)) as server:
        labeler = ApiLabeler(LabelerConfig(model="fake-vl", base_url=server.base_url, api_key="sk-x", max_retries=0))
        run_labeling(
            tmp_path / "pics", tmp_path / "ds", PromptSpec.from_preset(load_prompt_preset("grounding")), labeler
        )
    record = json.loads((tmp_path / "ds" / "data.jsonl").read_text(encoding="utf-8"))
    assert record["messages"][-1]["content"] == "<ref-object><bbox>"
    assert record["objects"] == {"ref": ["OK button"], "bbox": [[20.0, 20.0, 100.0, 80.0]]}
    assert validate_dataset(tmp_path / "ds").ok
