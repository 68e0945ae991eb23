"""The shared model's owner: what its header shows reaches a Chinese page in Chinese."""

from __future__ import annotations

import pytest

from lab.errors import BusyError, ModelLoadError, localize
from lab.handle import ModelHandle, ModelState
from lab.text import Msg


def test_a_failed_load_is_kept_in_both_languages(tmp_path):
    handle = ModelHandle()
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(ModelLoadError):
        handle.load(str(missing))
    error = handle.describe()["error"]
    assert isinstance(error, Msg) and str(error) == f"Model folder {missing} does not exist."
    assert localize(error, "zh") == f"模型文件夹 {missing} 不存在。"


def test_states_and_busy_refusals_have_a_chinese_form():
    handle = ModelHandle()
    state = handle.describe()["state"]
    assert state == "empty" == ModelState.EMPTY and localize(state.label, "zh") == "未加载"
    handle.loaded = object()  # only the claim is tested: nothing touches the model
    with handle.use(ModelState.TRAINING):
        assert localize(handle.state.label, "zh") == "训练中"
        with pytest.raises(BusyError) as err:
            handle.load("demo")
    assert str(err.value) == "The model is busy: a training run is using the model; try again when it is done."
    assert localize(err.value, "zh") == "模型正忙：训练任务正在使用模型；请等它结束后再试。"
    assert all(localize(s.label, "zh") != s.value for s in ModelState)
