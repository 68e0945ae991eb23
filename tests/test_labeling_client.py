"""The API labeler against a real HTTP server on 127.0.0.1, through the real openai client."""

import asyncio
import base64
import io
import time

import pytest
from fake_openai import FakeOpenAI, Reply, answer, json_answer, malformed, rate_limited, refusal, server_error, slow
from PIL import Image

from lab.errors import ConfigError
from lab.labeling.client import ApiLabeler, LabelerConfig, build_messages, load_providers
from lab.labeling.item import PromptSpec, label_one

KEY = "sk-test-very-secret-0123456789"


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic.png"
    Image.new("RGB", (64, 48), "navy").save(path)
    return path


def config(server, **overrides) -> LabelerConfig:
    settings = dict(model="gpt-4o-mini", base_url=server.base_url, api_key=KEY, timeout=2.0, max_retries=2)
    return LabelerConfig(**{**settings, **overrides})


DESCRIBE = PromptSpec("", "<image>Describe.")


def label(cfg, path, prompt=DESCRIBE):
    async def go():
        async with ApiLabeler(cfg) as labeler:
            return await label_one(labeler, prompt, path)

    return asyncio.run(go())


def sent_image(request) -> Image.Image:
    part = next(p for p in request["body"]["messages"][-1]["content"] if p["type"] == "image_url")
    header, data = part["image_url"]["url"].split(",", 1)
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_request_carries_the_prompt_and_an_upright_downscaled_image(server, tmp_path):
    photo = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (400, 200), "red").save(photo, exif=exif.tobytes())
    prompt = PromptSpec("You label images.", "<image>What is it?")
    result = label(config(server, max_pixels=100 * 50, temperature=0.3, max_new_tokens=77), photo, prompt)
    assert result.ok and result.answer.startswith("label-")
    request = server.requests[0]
    body = request["body"]
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.3 and body["max_tokens"] == 77
    assert "response_format" not in body
    assert body["messages"][0] == {"role": "system", "content": "You label images."}
    user = body["messages"][1]["content"]
    assert [p["type"] for p in user] == ["image_url", "text"] and user[1]["text"] == "What is it?"
    image = sent_image(request)
    assert image.mode == "RGB" and image.width < image.height  # turned upright
    assert image.width * image.height <= 100 * 50
    assert request["headers"]["authorization"] == f"Bearer {KEY}" and KEY not in request["url"]


def test_image_goes_where_the_placeholder_is_and_json_mode():
    messages = build_messages("", "Look: <image> then answer.", ["data:x"])
    assert [p.get("text", "IMG") for p in messages[0]["content"]] == ["Look: ", "IMG", " then answer."]
    assert [p["type"] for p in build_messages("", "No placeholder.", ["data:x"])[0]["content"]] == ["image_url", "text"]


def test_json_mode_asks_for_a_json_object(server, picture):
    server.script(json_answer({"label": "cart"}))
    result = label(config(server, json_mode=True), picture, PromptSpec("", "Answer in JSON.", True, ("label",)))
    assert result.ok and result.parsed == {"label": "cart"}
    assert server.requests[0]["body"]["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
def test_429_waits_as_long_as_retry_after_says(server, picture, header):
    server.script(rate_limited(0.6, header=header), answer("fine"))
    result = label(config(server), picture)
    assert result.ok and result.answer == "fine" and result.retries == 1
    first, second = server.requests
    assert second["time"] - first["time"] >= 0.55


def test_429_gives_up_after_the_retries(server, picture):
    server.script(*[rate_limited(0.05)] * 3)
    result = label(config(server, max_retries=2), picture)
    assert result.status == "failed" and result.extra["kind"] == "http_429"
    assert str(result.reason).startswith("rate limited (HTTP 429) after 3 tries") and server.count == 3


def test_5xx_retried_then_answered_or_given_up(server, picture):
    server.script(server_error(500), server_error(503), answer("third time"))
    assert label(config(server, max_retries=2), picture).answer == "third time"
    server.reset()
    server.script(server_error(500), server_error(502))
    result = label(config(server, max_retries=1), picture)
    assert result.status == "failed" and str(result.reason).startswith("server error (HTTP 502) after 2 tries")
    assert server.count == 2


def test_timeouts_are_retried_then_reported(server, picture):
    server.script(slow(1.5), answer("quick now"))
    assert label(config(server, timeout=0.4, max_retries=1), picture).answer == "quick now"
    server.reset()
    server.script(slow(1.5), slow(1.5))
    start = time.monotonic()
    result = label(config(server, timeout=0.4, max_retries=1), picture)
    assert result.status == "failed" and result.extra["kind"] == "timeout"
    assert str(result.reason) == "timed out after 0.4 s (2 tries)" and time.monotonic() - start < 2.5


def test_client_errors_and_malformed_bodies_are_not_retried(server, picture):
    server.script(Reply(status=400, body='{"error": {"message": "image too small"}}'))
    result = label(config(server), picture)
    assert str(result.reason) == "request refused (HTTP 400): image too small" and server.count == 1
    server.reset()
    server.script(malformed())
    result = label(config(server), picture)
    assert (
        result.extra["kind"] == "malformed"
        and str(result.reason).startswith("malformed response")
        and server.count == 1
    )
    server.script(malformed('{"id": "x", "choices": []}'))
    assert label(config(server), picture).extra["kind"] == "malformed"


def test_refusals_are_recorded_as_refused(server, picture):
    server.script(refusal(), refusal("I'm sorry, I can't help with identifying people.", field_=False))
    first = label(config(server), picture)
    second = label(config(server), picture)
    assert first.status == second.status == "refused"
    assert "can't help" in str(first.reason) and "identifying people" in str(second.reason)


def test_invalid_json_is_asked_again_once_when_reask_is_on(server, picture):
    prompt = PromptSpec("", "<image>JSON please.", True, ("label", "reason"))
    server.script(
        answer('{"label": "cart"}', prompt_tokens=100, completion_tokens=5),
        json_answer({"label": "cart", "reason": "a cart"}, fenced=True, prompt_tokens=130, completion_tokens=9),
    )
    result = label(config(server, reask=True), picture, prompt)
    assert result.ok and result.answer == '{"label": "cart", "reason": "a cart"}'
    assert (result.prompt_tokens, result.completion_tokens) == (230, 14)
    follow_up = server.requests[1]["body"]["messages"]
    assert follow_up[-2] == {"role": "assistant", "content": '{"label": "cart"}'}
    assert "lacks the key(s) reason" in follow_up[-1]["content"]
    server.script(answer("not json at all"))
    no_reask = label(config(server), picture, prompt)
    assert no_reask.status == "invalid" and str(no_reask.reason).startswith("not valid JSON")


def test_cost_is_priced_from_the_reported_tokens(server, picture, lab_home):
    prices = lab_home / "presets" / "prices.yaml"
    prices.parent.mkdir(parents=True)
    prices.write_text("models:\n  priced-vl: {input: 2.0, output: 8.0}\n")
    server.script(answer("x", prompt_tokens=1000, completion_tokens=250))
    result = label(config(server, model="priced-vl"), picture)
    assert result.cost_usd == pytest.approx((1000 * 2.0 + 250 * 8.0) / 1e6)


def test_a_refused_key_is_one_sentence_without_the_key(server, picture):
    server.script(Reply(status=401, body=f'{{"error": {{"message": "Incorrect API key provided: {KEY}"}}}}'))
    result = label(config(server), picture)
    assert str(result.reason).startswith("the server refused the API key (HTTP 401)") and KEY not in str(result.reason)


def test_key_and_url_resolution(monkeypatch):
    with pytest.raises(ConfigError, match="No API key.*OPENAI_API_KEY"):
        LabelerConfig(model="gpt-4o").resolved()
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        LabelerConfig(provider="dashscope").resolved()
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-dash")
    dash = LabelerConfig(provider="dashscope").resolved()
    assert dash.api_key == "sk-dash" and dash.model == "qwen-vl-max" and "compatible-mode" in dash.base_url
    local = LabelerConfig(provider="ollama").resolved()
    assert local.api_key == "EMPTY" and local.base_url == "http://localhost:11434/v1"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    resolved = LabelerConfig(model="m").resolved()
    assert resolved.base_url == "http://127.0.0.1:9/v1" and resolved.api_key == KEY
    assert KEY not in repr(resolved) and "api_key" not in resolved.public_dict()
    with pytest.raises(ConfigError, match="Unknown provider 'opnai'.*did you mean 'openai'"):
        LabelerConfig(provider="opnai").resolved()
    with pytest.raises(ConfigError, match="concurrency must be at least 1"):
        LabelerConfig(concurrency=0)


def test_provider_presets_load_and_user_file_adds_to_them(lab_home):
    providers = load_providers()
    assert {"openai", "dashscope", "vllm", "ollama"} <= set(providers)
    assert all(p["base_url"].startswith("http") and p["models"] for p in providers.values())
    user = lab_home / "presets" / "providers.yaml"
    user.parent.mkdir(parents=True)
    user.write_text(
        "providers:\n  school:\n    base_url: http://10.0.0.2:8000/v1\n    models: [qwen]\n    needs_key: false\n"
    )
    assert load_providers()["school"]["models"] == ["qwen"]
    user.write_text("providers:\n  school:\n    base_url: http://x/v1\n    modles: [qwen]\n")
    with pytest.raises(ConfigError, match="modles"):
        load_providers()
