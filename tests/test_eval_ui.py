"""The Evaluate, Chat and Export tabs through gradio_client, on the real app with a trained LoRA run."""

import time

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from lab.handle import ModelState


def _texts(chatbot):
    """The text parts of a chatbot value, message by message."""
    out = []
    for message in chatbot:
        content = message["content"]
        parts = content if isinstance(content, list) else [content]
        out.append(" ".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"))
    return out


def _send(client, text, image=None, compare=False, temperature=0.0):
    files = [handle_file(image)] if image else []
    job = client.submit({"text": text, "files": files}, "", temperature, 0.9, 12, True, compare, api_name="/chat")
    result = job.result()
    return job.outputs(), result


def _wait_ready(ctx, timeout=120):
    deadline = time.time() + timeout
    time.sleep(0.2)
    while ctx.handle.state == ModelState.LOADING and time.time() < deadline:
        time.sleep(0.2)
    return ctx.handle.describe()


def test_header_loads_a_run_and_picks_the_adapter(launch_app, lora_run_dir, tmp_path):
    app, ctx, client = launch_app(model="")
    client.predict(str(lora_run_dir), api_name="/model_load_run")
    info = _wait_ready(ctx)
    assert info["adapter"] == "sample-lora" and info["adapter_enabled"], info
    status = client.predict(api_name="/model_status")
    assert "LoRA adapter **sample-lora**" in status and "qwen2_5_vl" in status
    assert "off by default" in client.predict("(none)", api_name="/model_use_adapter")
    assert "off by default" not in client.predict("sample-lora", api_name="/model_use_adapter")
    with ctx.handle.use(ModelState.TRAINING):
        with pytest.raises(AppError, match="busy"):
            client.predict("demo", "none", api_name="/model_load")
    with pytest.raises(AppError, match="does not exist"):  # a missing folder is refused at once
        client.predict(str(tmp_path / "nothing-here"), "none", api_name="/model_load")
    assert ctx.handle.describe()["name"]  # the loaded model stays


def test_chat_streams_keeps_history_compares_and_reports_busy(launch_app, lora_run_dir, sample_dataset):
    app, ctx, client = launch_app(model="")
    ctx.handle.load_run(lora_run_dir)
    image = str(sample_dataset / "images" / "0001.png")
    outputs, (chatbot, chatbot_off, _) = _send(client, "Describe this UI component in one sentence.", image)
    streamed = [_texts(o[0])[-1] for o in outputs]
    assert len(outputs) > 2 and streamed[-1] and all(b.startswith(a) for a, b in zip(streamed, streamed[1:]))
    assert [m["role"] for m in chatbot] == ["user", "assistant"] and chatbot_off == []
    assert chatbot[0]["content"][0]["type"] == "file"  # the picture is shown in the user turn
    _, (chatbot, _, _) = _send(client, "And its colour?")
    assert len(chatbot) == 4, "the second turn continues this browser's conversation"
    client.predict(api_name="/chat_clear")
    _, (chatbot, chatbot_off, _) = _send(client, "Describe this UI component in one sentence.", image, compare=True)
    assert len(chatbot) == len(chatbot_off) == 2
    assert _texts(chatbot)[-1] != _texts(chatbot_off)[-1], "adapter on and off answer differently"
    assert "sample-lora" in client.predict(api_name="/model_status")
    with ctx.handle.use(ModelState.TRAINING):
        with pytest.raises(AppError, match="busy"):
            _send(client, "hello")
        progress, summary, *_ = client.predict(str(sample_dataset), False, 4, 8, 2, "gain", api_name="/evaluate")
        assert progress == "" and summary.startswith("⚠️ ") and "busy" in summary  # where the result would go
    assert ctx.handle.state == ModelState.READY


def test_evaluate_tab_compares_stops_and_exports(launch_app, lora_run_dir, sample_dataset, tmp_path):
    app, ctx, client = launch_app(model="")
    ctx.handle.load_run(lora_run_dir)
    progress, summary, metrics, chart, samples = client.predict(
        str(sample_dataset), True, 4, 12, 8, "gain", api_name="/evaluate"
    )
    assert "8/8" in progress and "8/8 samples scored" in summary and str(lora_run_dir) in summary
    table = metrics["value"]
    assert table["headers"] == ["metric", "base", "tuned", "gain"]
    rouge_1 = next(row for row in table["data"] if row[0] == "rouge_1")
    assert rouge_1[2] > rouge_1[1], "the tuned model is ahead on the samples it was trained on"
    assert {row[1] for row in chart["data"]} == {"base", "tuned"}
    gains = [row[1] for row in samples["value"]["data"]]
    assert gains == sorted(gains, reverse=True)

    # Stop: a long run (one sample per batch) ends after the current batch, scored samples kept.
    job = client.submit(str(sample_dataset), False, 1, 24, 0, "gain", api_name="/evaluate")
    deadline = time.time() + 120
    while not any("<progress" in str(o[0]) for o in job.outputs()) and time.time() < deadline:
        time.sleep(0.2)
    assert "Stopping" in client.predict(api_name="/evaluate_stop")
    _, summary, _, _, _ = job.result()
    assert "stopped early" in summary and "/60 samples scored" in summary

    out = tmp_path / "merged"
    status, command, snippet = client.predict(
        str(lora_run_dir), "", str(out), "auto", "cpu", False, "", "", False, 8192, 5, 0.9, api_name="/export"
    )
    assert "Exported sample-lora" in status and "model.safetensors" in status and (out / "config.json").is_file()
    assert f"vllm serve {out}" in command and "--max-model-len 8192" in command and "OpenAI(" in snippet
    with pytest.raises(AppError, match="not empty"):
        client.predict(
            str(lora_run_dir), "", str(out), "auto", "cpu", False, "", "", False, 8192, 5, 0.9, api_name="/export"
        )


def test_sample_view_shows_the_picture_and_every_answer(lora_run_dir, sample_dataset, tmp_path):
    from lab.evaluation.runner import EvalSettings, run_evaluation, samples_from_dataset
    from lab.handle import ModelHandle
    from lab.ui.eval_tab import show_sample

    handle = ModelHandle()
    handle.load_run(lora_run_dir)
    result = run_evaluation(
        handle,
        samples_from_dataset(sample_dataset)[:3],
        EvalSettings(max_new_tokens=6, compare_base=True),
        out_dir=tmp_path,
    )
    image, text = show_sample(result.summary_path, "id", 1)
    assert image.size == (224, 224) or image.size == (224, 112)
    assert "**0002**" in text and "**base**" in text and "**tuned**" in text and "reference" in text
