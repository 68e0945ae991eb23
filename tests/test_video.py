"""Videos: sampled within the budget, checked line by line, expanded and labeled like the processor, trained and
evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab.dataset_check import validate_dataset
from lab.errors import DatasetError
from lab.training.collator import Collator, TrainDataset
from lab.training.encode import IGNORE, encode_sample
from lab.video import VIDEO_FAMILIES, VideoBudget, read_video, video_fault

FAMILIES = list(VIDEO_FAMILIES)
CLIP = "videos/clip_01"


def write_mp4(path: Path, frames: int = 12, fps: int = 4) -> Path:
    """A tiny MPEG-4 clip made with PyAV (which qwen-vl-utils depends on): a grey ramp, 112x56."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 112, 56, "yuv420p"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((56, 112, 3), 20 * k, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_folder(folder: Path, count: int, size=(112, 56)) -> Path:
    folder.mkdir(parents=True)
    for k in range(count):
        Image.new("RGB", size, (10 * k, 0, 0)).save(folder / f"f_{k:03d}.png")
    return folder


def test_a_file_is_sampled_at_the_budgets_rate_and_size(tmp_path):
    clip = write_mp4(tmp_path / "clip.mp4", frames=12, fps=4)  # 3 seconds
    video = read_video(clip, VideoBudget(max_frames=16, fps=2.0, max_pixels=56 * 56), patch_size=14)
    # 3 s at 2 frames per second is 6 frames, evenly over the 12, as qwen-vl-utils' smart_nframes picks them.
    assert video.indices == [0, 2, 4, 7, 9, 11] and video.fps == 4.0 and video.total_frames == 12
    frames, channels, height, width = video.frames.shape
    assert (frames, channels) == (6, 3) and height * width <= 56 * 56 and height % 28 == width % 28 == 0
    fewer = read_video(clip, VideoBudget(max_frames=4, fps=2.0, max_pixels=56 * 56), patch_size=14)
    assert fewer.frames.shape[0] == 4 and fewer.indices == [0, 4, 7, 11]


def test_a_frame_folder_is_thinned_to_the_budget_and_kept_even(tmp_path):
    many = read_video(frame_folder(tmp_path / "many", 10), VideoBudget.of({"video_max_frames": 4}), patch_size=14)
    assert many.indices == [0, 3, 6, 9] and many.frames.shape[0] == 4
    odd = read_video(frame_folder(tmp_path / "odd", 3), VideoBudget.of({"video_max_frames": 4}), patch_size=16)
    assert odd.frames.shape[0] == 4 and odd.indices == [0, 1, 2, 2]  # the last frame repeated, as qwen-vl-utils does
    assert odd.frames.shape[2] % 32 == 0 and odd.frames.shape[3] % 32 == 0  # Qwen3-VL: patch 16, merged 32


def test_an_unreadable_video_has_its_reason(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    (tmp_path / "empty").mkdir()
    frame_folder(tmp_path / "broken", 2)
    (tmp_path / "broken" / "f_001.png").write_bytes(b"\x89PNG broken")
    assert str(video_fault(tmp_path / "bad.mp4")).startswith("not a readable video (")
    assert str(video_fault(tmp_path / "empty")) == "the folder holds no frames"
    assert str(video_fault(tmp_path / "broken")).startswith("frame f_001.png: ")
    assert str(video_fault(tmp_path / "missing.mp4")) == "file not found"
    assert video_fault(write_mp4(tmp_path / "ok.mp4")) is None
    with pytest.raises(DatasetError, match="bad.mp4 cannot be used: not a readable video"):
        read_video(tmp_path / "bad.mp4", VideoBudget.of())


def test_the_checker_names_each_bad_video_and_a_family_without_video(tmp_path):
    frame_folder(tmp_path / "videos" / "ok", 4)
    (tmp_path / "videos" / "bad.mp4").write_bytes(b"nonsense")
    ask = [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "It fills."}]
    rows = [
        {"videos": ["videos/ok"], "messages": ask},
        {"videos": ["videos/bad.mp4"], "messages": ask},
        {"videos": ["videos/gone"], "messages": ask},
        {"videos": [], "messages": ask},
        {"videos": ["../outside"], "messages": ask},
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"id": str(n), **r}) + "\n" for n, r in enumerate(rows)))
    faults = {f.line: str(f.reason) for f in validate_dataset(tmp_path).faults}
    assert 1 not in faults
    assert faults[2].startswith("video videos/bad.mp4 cannot be used: not a readable video (")
    assert faults[3] == "video videos/gone not found"
    assert faults[4] == "1 <video> placeholder(s) but 0 video(s)"
    assert faults[5] == "video ../outside is outside the dataset folder"
    refused = validate_dataset(tmp_path, family="idefics3").faults
    assert "it has a video, which idefics3 models cannot take" in [str(f.reason) for f in refused if f.line == 1]
    assert not [f for f in validate_dataset(tmp_path, family="qwen3_vl").faults if f.line == 1]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_video_sample_is_expanded_as_the_processor_does_and_only_the_answer_is_learned(
    family, tiny_models, sample_dataset
):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models(family))
    messages = [
        {"role": "user", "content": "<video>What happens to the progress bar in this clip?"},
        {"role": "assistant", "content": "The blue progress bar fills up from 20% to 80%."},
    ]
    sample = encode_sample(processor, "clip_01", messages, [], videos=[str(sample_dataset / CLIP)])
    learned = processor.tokenizer.decode([t for t, label in zip(sample.input_ids, sample.labels) if label != IGNORE])
    assert learned == "The blue progress bar fills up from 20% to 80%.<|im_end|>"
    # Four 112x56 frames: two temporal patches of (56/28 x 112/28) patches merged 2x2 (Qwen2/2.5-VL, patch 14),
    # or, resized to 64x128 for patch 16, (64/32 x 128/32): 2 x 8 tokens either way.
    assert sample.input_ids.count(processor.video_token_id) == 16
    if family == "qwen3_vl":  # Qwen3-VL writes each temporal patch's time before it
        assert "<0.2 seconds>" in processor.tokenizer.decode(sample.input_ids)
    image = encode_sample(
        processor,
        "0001",
        [{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": "Yes."}],
        [str(sample_dataset / "images/0001.png")],
    )
    dataset = TrainDataset([sample, image], processor)
    item = dataset[0]  # raises if the worker's frames gave other tokens than planned
    assert item["input_ids"].tolist() == sample.input_ids
    assert item["video_grid_thw"].tolist() == [[2, 4, 8]]  # (time, height, width) in patches, before merging
    batch = Collator(processor.tokenizer.pad_token_id)([item, dataset[1]])
    assert batch["input_ids"].shape[0] == 2 and batch["video_grid_thw"].shape == (1, 3)
    assert batch["image_grid_thw"].shape == (1, 3)


@pytest.mark.slow
def test_train_a_few_steps_on_the_sample_clips_and_evaluate(tiny_models, sample_dataset, tmp_path):
    """The sample's clips end to end on the CPU: LoRA steps that change the adapter, then answers for every clip."""
    import torch

    from lab.evaluation.runner import EvalSettings, run_evaluation, samples_from_dataset
    from lab.handle import ModelHandle
    from lab.train_config import TrainConfig
    from lab.training.runner import run_training

    cfg = TrainConfig(
        model=str(tiny_models("qwen2_5_vl")),
        dataset=str(sample_dataset / "data_video.jsonl"),
        max_steps=3,
        gradient_accumulation_steps=1,
        val_ratio=0,
        learning_rate=1e-2,
        logging_steps=1,
        torch_compile=False,
        run_name="clips",
        output_dir=str(tmp_path),
        video_max_frames=4,
        video_max_pixels=112 * 56,
    )
    lines: list[str] = []
    result = run_training(cfg, log=lines.append)
    assert result.status == "finished" and result.step == 3
    assert lines[1].startswith("4 training and 0 validation samples")
    trained = {n: p for n, p in result.model.named_parameters() if "lora_B" in n}
    assert trained and all(torch.count_nonzero(p) > 0 for p in trained.values())  # B starts at zero

    handle = ModelHandle()
    handle.load_run(str(result.run_dir))
    evaluated = run_evaluation(
        handle,
        samples_from_dataset(sample_dataset / "data_video.jsonl"),
        EvalSettings(max_new_tokens=4, batch_size=2),
        out_dir=tmp_path / "eval",
    )
    assert len(evaluated.samples) == 4 and not evaluated.skipped and "rouge_l" in evaluated.metrics["tuned"]


def test_a_family_without_video_drops_video_samples_with_the_reason(tmp_path, sample_dataset):
    from lab.train_config import TrainConfig
    from lab.training.data import _encode_all

    dropped: list = []
    records = [json.loads(line) for line in (sample_dataset / "data_video.jsonl").read_text().splitlines()]
    cfg = TrainConfig(dataset=str(sample_dataset / "data_video.jsonl"))
    assert _encode_all(records, cfg, _NoVideoProcessor(), dropped, "idefics3") == []
    assert [str(reason) for _, reason in dropped] == ["a video, which idefics3 models cannot take"] * 4


class _NoVideoProcessor:
    image_token_id = 1


def test_the_budget_is_a_runs_video_settings_or_the_training_defaults():
    from lab.train_config import TrainConfig

    defaults = TrainConfig()
    assert VideoBudget.of() == VideoBudget(defaults.video_max_frames, defaults.video_fps, defaults.video_max_pixels)
    assert VideoBudget.of(TrainConfig(video_max_frames=8)).max_frames == 8
    assert VideoBudget.of({"video_fps": 1.0, "model": "demo"}).fps == 1.0  # a run's saved config.yaml
    assert VideoBudget.of({"model": "demo"}) == VideoBudget.of()  # a run saved before the video settings
