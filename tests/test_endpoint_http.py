"""The chat client's HTTP layer keeps the openai SDK's rules: URL join, retries, backoff, error bodies, headers."""

import asyncio
import socket

import pytest
from fake_openai import FakeOpenAI, Reply, answer, server_error

from lab.endpoint_client import ChatClient, EndpointError
from lab.endpoint_http import (
    MAX_RETRY_AFTER,
    chat_url,
    env_proxy,
    error_body,
    retry_after,
    retry_delay,
    should_retry,
)
from lab.endpoint_keys import Endpoint

KEY = "sk-http-layer-0123456789"


def test_the_url_is_joined_as_the_sdk_joins_it():
    assert chat_url("http://h:8000/v1") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("https://h/openai/deployments/x?api-version=1") == (
        "https://h/openai/deployments/x/chat/completions?api-version=1"
    )


def test_backoff_doubles_from_half_a_second_to_eight_with_up_to_a_quarter_off():
    for retries_taken, full in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [retry_delay(retries_taken) for _ in range(200)]
        assert all(0.75 * full <= wait <= full for wait in waits)
        assert len(set(waits)) > 1  # jittered


def test_the_server_says_how_long_to_wait_up_to_two_minutes():
    assert retry_delay(0, {"retry-after": "3"}) == 3.0
    assert retry_delay(0, {"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # milliseconds first
    assert retry_delay(5, {"retry-after": "0"}) <= 8.0  # no wait asked: the backoff
    assert retry_delay(0, {"retry-after": "soon"}) <= 0.5
    assert 0 < retry_after({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert retry_after({"retry-after": "1e400"}) > MAX_RETRY_AFTER  # overflowing: a long wait
    assert retry_delay(0, {"retry-after": str(MAX_RETRY_AFTER + 1)}) <= 0.5


@pytest.mark.parametrize(
    "status, headers, retried",
    [
        (408, {}, True),
        (409, {}, True),
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (422, {}, False),
        (500, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
        (429, {"retry-after": str(MAX_RETRY_AFTER + 60)}, False),
        (429, {"retry-after": str(MAX_RETRY_AFTER)}, True),
    ],
)
def test_which_answers_are_retried(status, headers, retried):
    assert should_retry(status, headers) is retried


def test_error_bodies_are_unwrapped_as_the_sdk_does():
    assert error_body(b'{"error": {"message": "no such model"}}', None) == {"message": "no such model"}
    assert error_body(b'{"detail": "bad"}', None) == {"detail": "bad"}
    assert error_body(b"  Bad Gateway \n", None) == "Bad Gateway"
    assert error_body('{"error": {"message": "café"}}'.encode("latin-1"), "latin-1") == {"message": "café"}
    assert error_body(b"x", "no-such-charset") == "x"


def test_proxies_come_from_the_environment_unless_no_proxy_exempts_the_host(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert env_proxy("https://api.example.com/v1/chat/completions") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert env_proxy("https://api.example.com/v1/chat/completions") == "http://proxy.example:3128"
    assert env_proxy("http://api.example.com/v1/chat/completions") is None
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert env_proxy("https://api.example.com/v1/chat/completions") is None


def _ask(endpoint, **client):
    async def go():
        async with ChatClient(endpoint, **client) as chat:
            return await chat.complete(
                chat.request([{"role": "user", "content": "hi"}], max_new_tokens=4, temperature=0)
            )

    return asyncio.run(go())


def test_statuses_the_sdk_retries_are_retried_and_counted():
    with FakeOpenAI() as server:
        endpoint = Endpoint(server.base_url, "m", KEY)
        server.script(Reply(status=409, body="{}", headers={"retry-after-ms": "10"}), answer("after a conflict"))
        completion = _ask(endpoint, max_retries=2)
        assert completion.text == "after a conflict" and completion.retries == 1 and server.count == 2
        server.reset()
        server.script(Reply(status=503, body="busy", headers={"x-should-retry": "false"}))
        with pytest.raises(EndpointError) as err:
            _ask(endpoint, max_retries=2)
        assert err.value.kind == "http_503" and err.value.retries == 0 and server.count == 1
        assert str(err.value) == "server error (HTTP 503) after 1 tries: busy"
        server.reset()
        server.script(server_error(502), server_error(502))
        with pytest.raises(EndpointError) as err:
            _ask(endpoint, max_retries=1)
        assert err.value.retries == 1 and str(err.value).endswith("after 2 tries: The server had an error")


def test_an_answer_that_is_not_declared_json_is_malformed():
    with FakeOpenAI() as server:
        server.responder = lambda body: Reply(body='{"choices": []}', headers={"content-type": "text/plain"})
        with pytest.raises(EndpointError) as err:
            _ask(Endpoint(server.base_url, "m", KEY), max_retries=0)
    assert err.value.kind == "malformed" and str(err.value).startswith("malformed response from the server")


def test_headers_carry_the_key_only_when_there_is_one_and_the_organization_only_to_openai(monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-owner")
    with FakeOpenAI() as server:
        _ask(Endpoint(server.base_url, "m", KEY))
        _ask(Endpoint(server.base_url, "m", ""))
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        _ask(Endpoint(server.base_url + "/", "m", KEY))
    keyed, keyless, home = (request["headers"] for request in server.requests)
    assert keyed["authorization"] == f"Bearer {KEY}" and "authorization" not in keyless
    assert keyed["content-type"] == "application/json" and keyed["user-agent"].startswith("vlm-lab/")
    assert "openai-organization" not in keyed and home["openai-organization"] == "org-owner"


def test_a_refused_connection_is_retried_then_reported_as_unreachable():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with pytest.raises(EndpointError) as err:
        _ask(Endpoint(url, "m"), max_retries=1)
    assert err.value.kind == "connection" and err.value.retries == 1
    assert str(err.value) == f"cannot reach {url} (2 tries)"
