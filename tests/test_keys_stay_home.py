"""The owner's API key reaches only the URL it was set up for: through the app's API and through the CLI.

The test server on 127.0.0.1 records the ``Authorization`` header of every request. A
visitor who points preview, labeling or endpoint evaluation at it gets the placeholder
(a local server) or a refusal (any other server), never the key in the environment;
once ``OPENAI_BASE_URL`` names the server, the key goes there.
"""

import time

import pytest
from fake_openai import FakeOpenAI
from gradio_client.exceptions import AppError
from labeling_images import many

from lab.cli import main

OWNER_KEY = "sk-owner-env-4242424242"
VISITOR_KEY = "sk-visitor-typed-1717"
ELSEWHERE = "https://collector.invalid/v1"  # refused before anything is sent


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def bearers(server) -> set[str]:
    return {request["headers"].get("authorization") for request in server.requests}


def labeler_values(url, key=""):
    # provider, base_url, model, api_key, temperature, max_tokens, max_pixels, json_mode, reask, concurrency, retries,
    # timeout
    return ["", url, "fake-vl", key, 0.0, 64, 200 * 200, False, False, 2, 0, 10]


def wait_until_done(client, out, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.predict(out, api_name="/label_progress")[0]
        if progress.split("  \n")[1].startswith(("finished", "stopped", "failed")):
            return progress
        time.sleep(0.2)
    raise AssertionError(f"the run did not end: {progress}")


def use_the_endpoint(client, url, key, folder, out, dataset):
    """Preview, label a folder and evaluate the endpoint through the app's API; the three outcomes."""
    summary = client.predict(
        ["0001.png"],
        None,
        "",
        "<image>Describe.",
        False,
        "",
        False,
        "",
        "",
        False,
        "",
        *labeler_values(url, key),
        api_name="/prompt_preview",
    )[0]
    status, _ = client.predict(
        folder, out, "sample_caption", "en", 0, *labeler_values(url, key), api_name="/label_start"
    )
    if status.startswith("Started"):
        status = wait_until_done(client, out)
    try:
        evaluation = client.predict(str(dataset), url, "fake-vl", key, 2, 16, 2, "gain", api_name="/evaluate_endpoint")[
            1
        ]
    except AppError as err:
        evaluation = str(err)
    return summary, status, evaluation


def test_the_app_sends_the_owner_key_only_to_its_own_url(launch_app, server, tmp_path, monkeypatch, sample_dataset):
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    app, ctx, client = launch_app(model="")
    folder = str(tmp_path / "pics")
    many(tmp_path / "pics", 2)

    # A visitor's URL (the local test server, which is not OPENAI_BASE_URL): the placeholder, never the key.
    summary, status, evaluation = use_the_endpoint(client, server.base_url, "", folder, "visitor", sample_dataset)
    assert "**A**: 1/1 answered, 1 usable" in summary and "finished: 2 labeled" in status
    assert "2/2 samples scored" in evaluation
    assert server.count == 5 and bearers(server) == {"Bearer EMPTY"}

    # A visitor's URL elsewhere: one sentence, nothing sent.
    for outcome in use_the_endpoint(client, ELSEWHERE, "", folder, "elsewhere", sample_dataset):
        assert f"No API key for {ELSEWHERE}: " in outcome and "OPENAI_BASE_URL" in outcome and OWNER_KEY not in outcome

    # A key the visitor types goes where they send it.
    server.reset()
    use_the_endpoint(client, server.base_url, VISITOR_KEY, folder, "typed", sample_dataset)
    assert server.count == 5 and bearers(server) == {f"Bearer {VISITOR_KEY}"}

    # The owner made the server the key's home: now it goes there.
    server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    summary, status, evaluation = use_the_endpoint(client, server.base_url, "", folder, "owner", sample_dataset)
    assert "**A**: 1/1 answered, 1 usable" in summary and "finished: 2 labeled" in status
    assert "2/2 samples scored" in evaluation
    assert server.count == 5 and bearers(server) == {f"Bearer {OWNER_KEY}"}


def test_the_cli_sends_the_owner_key_only_to_its_own_url(server, tmp_path, monkeypatch, capsys, sample_dataset):
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    many(tmp_path / "pics", 2)

    def label(out, url=server.base_url):
        return main(
            [
                "label",
                "--images",
                str(tmp_path / "pics"),
                "--prompt",
                "sample_caption",
                "--out",
                str(tmp_path / out),
                "--base-url",
                url,
                "--model",
                "fake-vl",
                "--max-retries",
                "0",
            ]
        )

    def evaluate(*flags, url=server.base_url):
        return main(
            [
                "eval",
                "--endpoint",
                url,
                "--model",
                "fake-vl",
                "--dataset",
                str(sample_dataset),
                "--limit",
                "2",
                "--max-new-tokens",
                "8",
                "--max-retries",
                "0",
                *flags,
            ]
        )

    assert label("visitor") == 0 and evaluate() == 0
    assert server.count == 4 and bearers(server) == {"Bearer EMPTY"}
    capsys.readouterr()
    assert label("elsewhere", ELSEWHERE) == 2 and evaluate(url=ELSEWHERE) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith(f"error: No API key for {ELSEWHERE}: ") for line in errors)

    server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    assert label("owner") == 0 and evaluate() == 0
    assert server.count == 4 and bearers(server) == {f"Bearer {OWNER_KEY}"}


def test_eval_takes_the_key_from_a_named_variable_and_warns_about_the_flag(server, monkeypatch, capsys, sample_dataset):
    def evaluate(*flags):
        return main(
            [
                "eval",
                "--endpoint",
                server.base_url,
                "--model",
                "fake-vl",
                "--dataset",
                str(sample_dataset),
                "--limit",
                "1",
                "--max-new-tokens",
                "8",
                *flags,
            ]
        )

    monkeypatch.setenv("MY_ENDPOINT_KEY", VISITOR_KEY)
    assert evaluate("--api-key-env", "MY_ENDPOINT_KEY") == 0
    assert bearers(server) == {f"Bearer {VISITOR_KEY}"} and "warning" not in capsys.readouterr().err
    assert evaluate("--api-key-env", "NOT_SET_FOR_THIS_TEST") == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --api-key-env names NOT_SET_FOR_THIS_TEST, which is not set or empty."
    )
    server.reset()
    assert evaluate("--api-key", "sk-on-the-command-line") == 0
    assert capsys.readouterr().err.startswith("warning: --api-key leaves the key in shell history")
    assert bearers(server) == {"Bearer sk-on-the-command-line"}


def test_label_estimate_needs_no_key(tmp_path, capsys):
    many(tmp_path / "pics", 3)
    argv = [
        "label",
        "--images",
        str(tmp_path / "pics"),
        "--prompt",
        "sample_caption",
        "--out",
        str(tmp_path / "ds"),
        "--provider",
        "openai",
    ]
    assert main([*argv, "--estimate"]) == 0
    assert capsys.readouterr().err.startswith("estimate: 3 of 3 images to label")
    assert main(argv) == 2  # labeling itself still needs one
    assert capsys.readouterr().err.startswith("error: No API key: set OPENAI_API_KEY")
