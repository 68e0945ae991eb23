"""The vision tower's index tensors, computed by the data loader on the CPU (lab/training/tower_index.py)."""

from __future__ import annotations

import pytest
from conftest import FAMILIES, QUICK_FAMILIES

from lab.errors import DatasetError
from lab.families import get_family
from lab.train_config import TrainConfig
from lab.training.collator import LossCollator, TrainDataset
from lab.training.data import build_data

INDEXED = [f for f in FAMILIES if get_family(f).tower_index]


def _batch(loaded, tower):
    cfg = TrainConfig(dataset="data/sample", lora_targets=["language"])
    data = build_data(cfg, loaded.processor, lambda _: None)
    dataset = TrainDataset(data.train[:3], loaded.processor)
    return LossCollator(loaded.processor.tokenizer.pad_token_id, tower=tower)([dataset[i] for i in range(3)])


def test_the_qwen_vl_families_declare_their_tower_index():
    assert set(INDEXED) >= {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"}
    assert "windows" in get_family("qwen2_5_vl").tower_index
    assert not get_family("gemma3").tower_index


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=() if f in QUICK_FAMILIES else pytest.mark.slow) for f in INDEXED]
)
def test_the_tower_takes_the_index_computed_on_the_cpu_and_gives_the_same_features(tiny_models, family):
    import torch

    from lab.models import load_model
    from lab.training.setup import prepare_model
    from lab.training.speed import use_grouped_vision_attention, vision_tower
    from lab.training.tower_index import KEY, TowerFeed, TowerIndex

    loaded = load_model(str(tiny_models(family)), dtype="float32")
    model = prepare_model(loaded.model, TrainConfig(dataset="data/sample", lora_targets=["language"])).model
    index = TowerIndex.of(model)
    assert index is not None
    batch = _batch(loaded, index)
    assert set(batch[KEY]) == {"image"}
    grid = batch["image_grid_thw"]
    tower = vision_tower(model)

    def features(feed_index):
        feed = TowerFeed(model)
        inputs = {"image_grid_thw": grid}
        try:
            with torch.no_grad(), feed.batch(feed_index, inputs):
                return tower(batch["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        finally:
            feed.remove()

    def spoiled(key, value):
        if key.startswith("cu_"):  # one piece over every picture
            return torch.tensor([0, int(value[-1])], dtype=value.dtype)
        return value.flip(0)

    fed_index = batch[KEY]["image"]
    for switch in ((lambda m: lambda: None), use_grouped_vision_attention):  # SDPA per piece, and grouped
        restore = switch(model)
        try:
            stock, fed = features(None), features(batch[KEY])
            assert torch.equal(stock, fed)
            for key, value in fed_index.items():
                if key.startswith("max_"):  # only a hint to flash-style attention
                    continue
                wrong = features({"image": {**fed_index, key: spoiled(key, value)}})
                assert not torch.allclose(stock, wrong), key  # the tower used what it was given
        finally:
            restore()


def test_a_family_without_a_tower_index_gets_none(tiny_models):
    from lab.models import load_model
    from lab.training.tower_index import TowerIndex

    assert TowerIndex.of(load_model(str(tiny_models("gemma3"))).model) is None


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_grids_stay_on_the_host_only_where_the_model_reads_them_there_and_placeholders_are_checked(tiny_models, family):
    import torch

    from lab.models import load_model
    from lab.training.collator import RopeIndex
    from lab.training.setup import prepare_model
    from lab.training.tower_index import HOST_GRIDS, TowerIndex, on_host

    loaded = load_model(str(tiny_models(family)), dtype="float32")
    model = prepare_model(loaded.model, TrainConfig(dataset="data/sample", lora_targets=["language"])).model
    index = TowerIndex.of(model)
    cfg = TrainConfig(dataset="data/sample", lora_targets=["language"])
    data = build_data(cfg, loaded.processor, lambda _: None)
    dataset = TrainDataset(data.train[:3], loaded.processor)
    collate = LossCollator(loaded.processor.tokenizer.pad_token_id, rope=RopeIndex.of(model), tower=index)
    batch = collate([dataset[i] for i in range(3)])
    if family == "qwen3_vl":  # its tower also reads the grids for its position embeddings, on the GPU
        assert not index.host_grid and HOST_GRIDS not in batch
        return
    grid = batch["image_grid_thw"]
    image_tokens = int((batch["input_ids"] == loaded.model.config.image_token_id).sum())
    assert index.host_grid and batch[HOST_GRIDS] == {
        "grids": {"image_grid_thw": grid.tolist()},
        "counts": {"image": (image_tokens, image_tokens)},
    }
    assert image_tokens == int(grid.prod(-1).sum()) // index.config.spatial_merge_size**2
    inputs = dict(batch)
    on_host(inputs)
    assert HOST_GRIDS not in inputs and torch.equal(inputs["image_grid_thw"], grid)
    inputs = dict(batch)
    on_host(inputs, keep=False)  # no feed hands the tower its index: the grids go where the model is
    assert HOST_GRIDS not in inputs and inputs["image_grid_thw"] is grid

    spoiled = batch["input_ids"].clone()
    first = (spoiled == loaded.model.config.image_token_id).nonzero()[0]
    spoiled[first[0], first[1]] = loaded.processor.tokenizer.pad_token_id
    counted = index.host_grids({**batch, "input_ids": spoiled})
    with pytest.raises(DatasetError, match="placeholder token"):
        on_host({HOST_GRIDS: counted})


def test_transformers_placeholder_check_is_off_only_while_a_host_grid_model_trains(monkeypatch):
    import os

    from lab.training.tower_index import TowerIndex, host_checks

    monkeypatch.delenv("TRANSFORMERS_DISABLE_TORCH_CHECK", raising=False)
    restore = host_checks(TowerIndex(("positions", "seqlens", "host_grid"), None))
    assert os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] == "1"
    restore()
    assert "TRANSFORMERS_DISABLE_TORCH_CHECK" not in os.environ
    host_checks(TowerIndex(("positions", "seqlens"), None))()
    assert "TRANSFORMERS_DISABLE_TORCH_CHECK" not in os.environ
