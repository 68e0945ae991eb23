"""The one OpenAI-compatible client: which key goes where, messages, errors (against a real server on 127.0.0.1)."""

import asyncio

import pytest
from fake_openai import FakeOpenAI, Reply

from lab.endpoint_client import ChatClient, EndpointError, build_messages, chat_messages
from lab.endpoint_keys import (
    PLACEHOLDER_KEY,
    Endpoint,
    choose_key,
    environment_keys,
    load_providers,
    resolve_endpoint,
    same_url,
)
from lab.errors import ConfigError, localize

OWNER_KEY = "sk-owner-secret-0123456789"
DASH_KEY = "sk-dash-owner-9876543210"
VISITOR_KEY = "sk-visitor-typed-5555"
ELSEWHERE = "https://collector.example.com/v1"


def test_the_environment_key_goes_to_openai_when_no_base_url_is_set(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    assert choose_key("https://api.openai.com/v1") == OWNER_KEY
    assert choose_key("HTTPS://API.OpenAI.com:443/v1/") == OWNER_KEY  # the same place, written differently
    assert resolve_endpoint(model="gpt-4o").api_key == OWNER_KEY


def test_the_environment_key_goes_only_to_openai_base_url_when_it_is_set(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example.org/openai/v1/")
    assert choose_key("https://gateway.example.org/openai/v1") == OWNER_KEY
    for other in (
        "https://api.openai.com/v1",
        "http://gateway.example.org/openai/v1",
        "https://gateway.example.org:8443/openai/v1",
        "https://gateway.example.org/other/v1",
    ):
        with pytest.raises(ConfigError, match="No API key for"):
            choose_key(other)
    assert load_providers()["openai"]["base_url"] == "https://gateway.example.org/openai/v1/"  # the preset follows it


def test_another_url_gets_no_environment_key_but_one_sentence_in_both_languages(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    monkeypatch.setenv("DASHSCOPE_API_KEY", DASH_KEY)
    for provider in ("", "openai", "dashscope"):
        with pytest.raises(ConfigError) as err:
            resolve_endpoint(provider=provider, base_url=ELSEWHERE, model="m")
        message = str(err.value)
        assert message.startswith(f"No API key for {ELSEWHERE}: ") and "OPENAI_BASE_URL" in message
        assert OWNER_KEY not in message and DASH_KEY not in message
        assert localize(err.value, "zh").startswith(f"没有可用于 {ELSEWHERE} 的 API 密钥")


def test_a_provider_key_goes_only_to_that_provider_url(monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", DASH_KEY)
    dashscope = load_providers()["dashscope"]["base_url"]
    assert resolve_endpoint(provider="dashscope").api_key == DASH_KEY
    assert resolve_endpoint(base_url=dashscope + "/", model="qwen-vl-max").api_key == DASH_KEY  # found by its URL
    with pytest.raises(ConfigError, match="No API key: set OPENAI_API_KEY"):
        resolve_endpoint(model="gpt-4o")  # OpenAI's URL is not DashScope's
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    with pytest.raises(ConfigError, match="No API key: set DASHSCOPE_API_KEY"):
        resolve_endpoint(provider="dashscope")  # and OpenAI's key does not stand in for it


def test_a_provider_from_the_workspace_file_gets_its_own_key_at_its_own_url(lab_home, monkeypatch):
    (lab_home / "presets").mkdir()
    (lab_home / "presets" / "providers.yaml").write_text(
        "providers:\n  school:\n    base_url: https://llm.school.example/v1\n    models: [qwen]\n    key_env: "
        "SCHOOL_KEY\n"
    )
    monkeypatch.setenv("SCHOOL_KEY", "sk-school")
    assert resolve_endpoint(provider="school").api_key == "sk-school"
    with pytest.raises(ConfigError, match="No API key for"):
        resolve_endpoint(provider="school", base_url=ELSEWHERE)
    assert "SCHOOL_KEY" in environment_keys()


def test_on_a_shared_server_the_workspace_file_cannot_point_a_key_elsewhere(lab_home, monkeypatch):
    """Visitors' actions write into the workspace; a providers file there must not decide where keys go."""
    from lab.endpoint_keys import load_providers

    (lab_home / "presets").mkdir()
    (lab_home / "presets" / "providers.yaml").write_text(
        f"providers:\n  openai:\n    base_url: {ELSEWHERE}\n    key_env: OPENAI_API_KEY\n"
    )
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    assert same_url(load_providers()["openai"]["base_url"], ELSEWHERE)  # the owner's own machine: their file
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    assert not same_url(load_providers()["openai"]["base_url"], ELSEWHERE)
    assert resolve_endpoint(provider="openai").base_url != ELSEWHERE


def test_a_typed_key_goes_wherever_it_is_sent(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    for url in (ELSEWHERE, "https://api.openai.com/v1", "http://127.0.0.1:8000/v1"):
        assert choose_key(url, VISITOR_KEY) == VISITOR_KEY
        assert resolve_endpoint(base_url=url, model="m", api_key=VISITOR_KEY).api_key == VISITOR_KEY


@pytest.mark.parametrize("url", ["http://localhost:8000/v1", "http://127.0.0.1:11434/v1", "http://[::1]:8000/v1"])
def test_a_local_server_gets_the_placeholder_never_the_environment_key(monkeypatch, url):
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    assert choose_key(url) == PLACEHOLDER_KEY
    monkeypatch.setenv("OPENAI_BASE_URL", url.replace("/v1", "/v1/"))  # unless the owner made it the key's home
    assert choose_key(url) == OWNER_KEY


def test_a_provider_that_needs_no_key_gets_the_placeholder_and_its_own_key_when_set(monkeypatch):
    assert resolve_endpoint(provider="ollama").api_key == PLACEHOLDER_KEY
    monkeypatch.setenv("VLLM_API_KEY", "sk-vllm")
    assert resolve_endpoint(provider="vllm").api_key == "sk-vllm"
    assert resolve_endpoint(provider="ollama").api_key == PLACEHOLDER_KEY
    with pytest.raises(ConfigError, match="No model given"):
        resolve_endpoint(base_url="http://localhost:8000/v1")


def test_same_url_compares_scheme_host_port_and_path():
    assert same_url("https://API.example.com/v1/", "https://api.example.com:443/v1")
    assert same_url("http://h/v1", "http://h:80/v1")
    assert not same_url("https://h/v1", "http://h/v1")
    assert not same_url("https://h/v1", "https://h:444/v1")
    assert not same_url("https://h/v1", "https://h.evil/v1")
    assert not same_url("https://h/v1", "https://h/v2")
    assert not same_url("https://h:x/v1", "https://h/v1")


def test_messages_put_each_picture_where_its_placeholder_is():
    dataset = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>First, then <image>"},
        {"role": "assistant", "content": "an answer that mentions <image> stays text"},
        {"role": "user", "content": "And <image>?"},
    ]
    messages = chat_messages(dataset, ["data:a", "data:b", "data:c"])
    assert messages[0] == {"role": "system", "content": "Be brief."}

    def kinds(m):
        return [p.get("image_url", {}).get("url") or p["text"] for p in m["content"]]

    assert kinds(messages[1]) == ["data:a", "First, then ", "data:b"]
    assert messages[2]["content"] == "an answer that mentions <image> stays text"
    assert kinds(messages[3]) == ["And ", "data:c", "?"]
    assert kinds(chat_messages([{"role": "user", "content": "No placeholder."}], ["data:a"])[0]) == [
        "data:a",
        "No placeholder.",
    ]
    follow = build_messages("", "<image>Describe.", ["data:a"], [("{bad", "Fix the JSON.")])
    assert [m["role"] for m in follow] == ["user", "assistant", "user"] and follow[2]["content"] == "Fix the JSON."


def _complete(endpoint, **client):
    async def go():
        async with ChatClient(endpoint, **client) as chat:
            return await chat.complete(
                chat.request([{"role": "user", "content": "hi"}], max_new_tokens=8, temperature=0)
            )

    return asyncio.run(go())


def test_the_client_sends_the_chosen_key_and_maps_errors_to_scrubbed_reasons():
    with FakeOpenAI() as server:
        endpoint = Endpoint(server.base_url, "m", VISITOR_KEY)
        assert _complete(endpoint, max_retries=0).text.startswith("label-")
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {VISITOR_KEY}"
        assert server.requests[0]["body"]["max_tokens"] == 8
        server.script(Reply(status=404, body=f'{{"error": {{"message": "no model m for {VISITOR_KEY}"}}}}'))
        with pytest.raises(EndpointError) as err:
            _complete(endpoint, max_retries=0)
    assert err.value.kind == "http_404" and err.value.fatal and VISITOR_KEY not in str(err.value)
    assert str(err.value).startswith("not found (HTTP 404)") and VISITOR_KEY not in localize(err.value, "zh")
    with pytest.raises(EndpointError) as err:
        _complete(Endpoint(server.base_url, "m"), max_retries=1)  # the server is gone now
    assert err.value.kind == "connection" and err.value.fatal and err.value.retries == 1
    assert str(err.value) == f"cannot reach {server.base_url} (2 tries)"
