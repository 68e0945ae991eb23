"""Several datasets in one run: the entry syntax, the counts taken, the same mix for the same seed, and a
validation split that comes from each dataset in proportion to what the run takes from it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lab.errors import ConfigError, localize
from lab.train_config import TrainConfig
from lab.training.mix import DatasetEntry, dataset_entries, mixed_splits, parse_entry

CAPTIONS, JSON_EN, JSON_ZH = (
    "data/sample/data_caption_zh.jsonl",
    "data/sample/data_json_en.jsonl",
    "data/sample/data_json_zh.jsonl",
)


def test_an_entry_is_a_path_then_a_scale_or_a_count():
    assert parse_entry("data/a") == DatasetEntry("data/a")
    assert parse_entry("data/a:0.5") == DatasetEntry("data/a", weight=0.5)
    assert parse_entry("data/a:2.0") == DatasetEntry("data/a", weight=2.0)
    assert parse_entry(" data/a:200 ") == DatasetEntry("data/a", samples=200)
    assert parse_entry("C:/data/a.jsonl") == DatasetEntry("C:/data/a.jsonl")  # a colon without a number is the path's
    assert [e.text() for e in dataset_entries(["data/a", "data/b:0.5", "data/c:7"])] == [
        "data/a",
        "data/b:0.5",
        "data/c:7",
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset=[data/a, data/a:0.5]"], "dataset lists data/a twice"),
        (["dataset=[data/a:0]"], "takes no samples"),
        (["dataset=[data/a:0.0]"], "use a number above 0"),
        (["dataset=[]"], "dataset is empty"),
        (["dataset=[':0.5']"], "names no dataset"),
    ],
)
def test_a_bad_entry_is_one_sentence_in_both_languages(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_preset("cpu_demo", overrides)
    assert "\n" not in str(err.value) and localize(err.value, "zh") != str(err.value)


def test_dataset_takes_one_path_a_list_or_yaml_mappings_and_round_trips(tmp_path):
    assert TrainConfig.from_preset("cpu_demo", ["dataset=data/sample"]).dataset == "data/sample"
    assert TrainConfig.from_preset("cpu_demo", ["dataset=[data/sample]"]).dataset == "data/sample"
    cfg = TrainConfig.from_preset("cpu_demo", [f"dataset=[{CAPTIONS}, {JSON_EN}:0.5, {JSON_ZH}:30]"])
    assert cfg.dataset == [CAPTIONS, f"{JSON_EN}:0.5", f"{JSON_ZH}:30"]
    assert TrainConfig.from_preset("cpu_demo", cfg.cli_overrides("cpu_demo")) == cfg  # "Show command" reproduces it
    assert TrainConfig.from_yaml(cfg.to_yaml(tmp_path / "config.yaml")) == cfg
    mapped = tmp_path / "mapped.yaml"
    mapped.write_text(
        f"dataset:\n  - {CAPTIONS}\n  - {{path: {JSON_EN}, weight: 0.5}}\n  - {{path: {JSON_ZH}, samples: 30}}\n"
    )
    assert TrainConfig.from_yaml(mapped).dataset == cfg.dataset


def test_counts_scales_and_the_same_mix_for_the_same_seed():
    entries = [CAPTIONS, f"{JSON_EN}:0.5", f"{JSON_ZH}:100"]
    train, val, mix = mixed_splits(entries, 0.2, seed=7)
    by_name = {m["dataset"]: m for m in mix}
    captions, json_en, json_zh = by_name[CAPTIONS], by_name[JSON_EN], by_name[JSON_ZH]
    assert captions["train"] == captions["train_available"] and captions["val"] == captions["val_available"]
    assert json_en["train"] == round(0.5 * json_en["train_available"])
    assert json_zh["train"] == 100 > json_zh["train_available"]  # more than it has: every sample, then some again
    assert len(train) == sum(m["train"] for m in mix) and len(val) == sum(m["val"] for m in mix)
    times = Counter(json.dumps(r["messages"]) for r in train[-100:])
    rounds = 100 // json_zh["train_available"]
    assert len(times) == json_zh["train_available"]  # each of its samples at least once
    assert set(times.values()) == {rounds, rounds + 1}  # then drawn again, none more than once more

    again = mixed_splits(entries, 0.2, seed=7)
    assert again == (train, val, mix)  # the same config gives the same samples in the same order
    other = mixed_splits(entries, 0.2, seed=8)
    assert [r["id"] for r in other[0]] != [r["id"] for r in train]
    assert all(r["images"][0].startswith("/") for r in train + val)


def test_the_validation_split_comes_from_each_dataset_in_proportion_and_never_from_training():
    train, val, mix = mixed_splits([CAPTIONS, f"{JSON_EN}:0.5", f"{JSON_ZH}:0.25"], 0.3, seed=42)
    for entry in mix:
        share = entry["train"] / entry["train_available"]
        assert entry["val"] == max(1, round(share * entry["val_available"])), entry
    # a sample is on one side only, whichever datasets hold it (the variants share ids and pictures)
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    counts = [m["val"] for m in mix]
    assert counts[0] > counts[1] > counts[2] > 0


def test_one_dataset_without_a_number_is_the_plain_split():
    from lab.dataset import split_dataset
    from lab.paths import SAMPLE_DATASET

    train, val, mix = mixed_splits("data/sample", 0.1, seed=42)
    plain_train, plain_val = split_dataset(SAMPLE_DATASET, 0.1, 42)
    assert [r["id"] for r in train] == [r["id"] for r in plain_train]
    assert [r["id"] for r in val] == [r["id"] for r in plain_val]
    assert mix == [
        {
            "dataset": "data/sample",
            "weight": None,
            "samples": None,
            "train_available": len(plain_train),
            "val_available": len(plain_val),
            "train": len(plain_train),
            "val": len(plain_val),
        }
    ]


def test_a_missing_dataset_in_the_list_is_refused_before_anything_loads(lab_home):
    from lab.errors import DatasetError
    from lab.training.preflight import check_run_environment

    cfg = TrainConfig.from_preset("cpu_demo", ["dataset=[data/sample, data/nope:0.5]"])
    with pytest.raises(DatasetError, match="Dataset data/nope not found"):
        check_run_environment(cfg)


def test_evaluate_finds_a_mixed_runs_validation_split(tmp_path):
    from lab.evaluation.runner import samples_from_run

    cfg = TrainConfig.from_preset("multi_dataset", ["run_name=mixed", f"output_dir={tmp_path}"])
    run_dir = tmp_path / "mixed"
    cfg.to_yaml(run_dir / "config.yaml")
    (run_dir / "adapter_config.json").write_text("{}")
    samples, source = samples_from_run(run_dir)
    _, val, _ = mixed_splits(cfg.dataset, cfg.val_ratio, cfg.seed)
    assert [s.id for s in samples] == [r["id"] for r in val] and source.endswith("(validation split)")
