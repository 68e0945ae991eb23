"""Chat core and the shared handle: history with images, streaming, stop, adapter off/on, busy, CLI."""

import threading

import pytest
from conftest import families

from lab.chat import ChatSettings, assistant_turn, reply, stream_compare, stream_reply, to_conversation, user_turn
from lab.errors import BusyError, ConfigError, LabError
from lab.evaluation.runner import samples_from_dataset
from lab.generate import generate_batch
from lab.handle import ModelHandle, ModelState
from lab.images import open_image

GREEDY = ChatSettings(temperature=0, max_new_tokens=12)


@pytest.fixture
def handle(lora_run_dir):
    handle = ModelHandle()
    handle.load_run(lora_run_dir)
    return handle


def _image(sample_dataset, n=1):
    return str(sample_dataset / "images" / f"{n:04d}.png")


def test_history_becomes_messages_with_placeholders(sample_dataset):
    history = [
        user_turn("What is it? <image>", [_image(sample_dataset, 1), _image(sample_dataset, 2)]),
        assistant_turn("Two charts."),
        user_turn("And the colours?"),
    ]
    messages, images = to_conversation(history, system="Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image><image>What is it?"},
        {"role": "assistant", "content": "Two charts."},
        {"role": "user", "content": "And the colours?"},
    ]
    assert images == [_image(sample_dataset, 1), _image(sample_dataset, 2)]
    with pytest.raises(LabError):
        user_turn("  ", [])
    with pytest.raises(ConfigError):
        ChatSettings(top_p=0)


def test_a_finished_answer_without_text_says_so_in_the_pages_language():
    """A model may end its reply before its first word; the chat shows a sentence, not an empty bubble, and the
    history keeps the empty answer it sends back to the model."""
    from lab.ui.chat_tab import render

    history = [user_turn("Hi"), assistant_turn(""), user_turn("Again"), assistant_turn("A cat.")]
    shown = render(history, "en")
    assert [m["content"] for m in shown] == [
        "Hi",
        "(no answer: the model ended its reply at once)",
        "Again",
        "A cat.",
    ]
    assert render(history, "zh")[1]["content"] == "（没有回答：模型一开口就结束了）"
    assert history[1]["text"] == ""
    assert render(history[:1], "en", live="")[-1] == {"role": "assistant", "content": ""}  # still streaming


def test_stream_grows_to_the_greedy_answer_with_and_without_adapter(handle, sample_dataset):
    sample = samples_from_dataset(sample_dataset)[0]
    history = [user_turn(sample.messages[0]["content"].replace("<image>", ""), sample.images)]
    chunks = list(stream_reply(handle, history, GREEDY))
    assert len(chunks) > 1 and all(b.startswith(a) for a, b in zip(chunks, chunks[1:]))
    image = [[open_image(p) for p in sample.images]]
    with handle.generating(adapter=True) as loaded:
        tuned = generate_batch(loaded, [sample.messages], image, max_new_tokens=12)[0].text
    with handle.generating(adapter=False) as loaded:
        base = generate_batch(loaded, [sample.messages], image, max_new_tokens=12)[0].text
    assert chunks[-1].strip() == tuned and tuned != base
    assert reply(handle, history, GREEDY, adapter=False) == base
    handle.set_adapter_enabled(False)
    assert reply(handle, history, GREEDY) == base
    assert handle.state == ModelState.READY


def test_compare_answers_off_then_on(handle, sample_dataset):
    history = [user_turn("Describe this UI component in one sentence.", [_image(sample_dataset)])]
    pairs = list(stream_compare(handle, history, history, GREEDY))
    off, on = pairs[-1]
    assert pairs[0][1] == "" and off and on and off != on
    assert on == reply(handle, history, GREEDY, adapter=True)


def test_stop_ends_the_answer_early_and_frees_the_model(handle, sample_dataset):
    history = [user_turn("Describe it.", [_image(sample_dataset)])]
    stop = threading.Event()
    settings = ChatSettings(temperature=0, max_new_tokens=200)
    pieces = 0
    for _ in stream_reply(handle, history, settings, stop=stop):
        pieces += 1
        stop.set()
    assert pieces < 5 and handle.state == ModelState.READY
    # a consumer that walks away (a closed browser tab) releases the model too
    stream = stream_reply(handle, history, settings)
    next(stream)
    assert handle.state == ModelState.GENERATING
    stream.close()
    assert handle.state == ModelState.READY


def test_busy_while_training(handle, sample_dataset):
    history = [user_turn("hi")]
    with handle.use(ModelState.TRAINING):
        with pytest.raises(BusyError, match="training"):
            next(stream_reply(handle, history, GREEDY))


def test_load_run_reuses_the_loaded_base_and_describes_the_adapter(lora_run_dir, tiny_models):
    handle = ModelHandle()
    handle.load(str(tiny_models("qwen2_5_vl")))
    base_model = handle.loaded.model
    handle.load_run(lora_run_dir)
    assert handle.loaded.model.get_base_model() is base_model  # adapter added, nothing reloaded
    info = handle.describe()
    assert info["adapter"] == "sample-lora" and info["adapters"] == ["sample-lora"] and info["adapter_enabled"]
    assert handle.current_run_dir() == lora_run_dir.resolve()
    handle.select_adapter(None)
    assert handle.describe()["adapter_enabled"] is False
    handle.select_adapter("sample-lora")
    assert handle.describe()["adapter_enabled"] is True
    with pytest.raises(LabError, match="No adapter named"):
        handle.select_adapter("other")
    with pytest.raises(LabError, match="No run named"):
        handle.load_run("no-such-run")


def test_cli_chat_one_shot(lora_run_dir, sample_dataset, capsys):
    from lab.cli import main

    args = [
        "chat",
        "--adapter",
        str(lora_run_dir),
        "--image",
        _image(sample_dataset),
        "--prompt",
        "Describe this UI component in one sentence.",
        "--max-new-tokens",
        "12",
    ]
    assert main(args) == 0
    tuned = capsys.readouterr().out.strip()
    assert main(args + ["--no-adapter"]) == 0
    assert tuned and capsys.readouterr().out.strip() != tuned
    assert main(["chat", "--model", "demo", "--image", "missing.png", "--prompt", "hi"]) == 2
    assert "missing.png: file not found" in capsys.readouterr().err


@pytest.mark.parametrize("family", families(slow_beyond=("qwen2_5_vl",)))
def test_every_family_chats_with_the_adapter_on_and_off(family, family_run, sample_dataset):
    handle = ModelHandle()
    handle.load_run(family_run(family))
    sample = samples_from_dataset(sample_dataset)[0]  # one the adapter was trained on
    history = [user_turn(sample.messages[0]["content"].replace("<image>", ""), sample.images)]
    chunks = list(stream_reply(handle, history, GREEDY))
    assert chunks and all(b.startswith(a) for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1].strip() == reply(handle, history, GREEDY, adapter=True)
    image = [[open_image(p) for p in sample.images]]
    answers = {}
    for adapter in (True, False):
        with handle.generating(adapter=adapter) as loaded:
            answers[adapter] = generate_batch(loaded, [sample.messages], image, max_new_tokens=12)[0].token_ids
    assert answers[True] != answers[False]  # the adapter is on for one and off for the other
    assert handle.state == ModelState.READY
