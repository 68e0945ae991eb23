"""The prompt design and labeling tabs through gradio_client on the launched app."""

import json
import time
import zipfile

import pytest
from fake_openai import FakeOpenAI, answer, json_answer
from gradio_client import handle_file
from labeling_images import many

from lab import paths

KEY = "sk-ui-secret-5566778899"


@pytest.fixture
def server():
    def reply(body):
        user = "".join(p.get("text", "") for p in body["messages"][-1]["content"] if isinstance(p, dict))
        if "JSON" in user:
            return json_answer({"label": "chart", "reason": "it has bars"}, fenced=True)
        return answer("A small coloured rectangle.")

    with FakeOpenAI(responder=reply) as fake:
        yield fake


def labeler_values(server, key=KEY, provider=""):
    # provider, base_url, model, api_key, temperature, max_tokens, max_pixels, json_mode, reask, concurrency, retries,
    # timeout
    return [provider, server.base_url if server else "", "fake-vl", key, 0.0, 256, 200 * 200, False, False, 4, 0, 5]


def test_preview_shows_a_and_b_side_by_side_and_saves_a_preset(launch_app, server, tmp_path):
    app, ctx, client = launch_app(model="")
    system, user, want_json, keys = client.predict("sample_caption", "en", api_name="/prompt_load")
    assert "<image>" in user and want_json is False
    b_user = "<image>Classify this UI component. Answer JSON with label and reason."
    upload = many(tmp_path / "up", 1)[0]
    summary, gallery_a, gallery_b, details = client.predict(
        ["0001.png", "0002.png"],
        [handle_file(str(upload))],
        system,
        user,
        False,
        "",
        True,
        "",
        b_user,
        True,
        "label, reason",
        *labeler_values(server),
        api_name="/prompt_preview",
    )
    assert "**A**: 3/3 answered, 3 usable" in summary and "**B**: 3/3 answered, 3 usable" in summary
    assert [item["caption"] for item in gallery_a] == ["A small coloured rectangle."] * 3
    assert json.loads(gallery_b[0]["caption"]) == {"label": "chart", "reason": "it has bars"}
    rows = details["data"]
    assert len(rows) == 6 and {r[1] for r in rows} == {"A", "B"} and rows[2][0] == "0000.png"
    assert [r[7] for r in rows if r[1] == "B"] == ["✓"] * 3 and [r[7] for r in rows if r[1] == "A"] == ["—"] * 3
    assert all(float(r[4]) >= 0 and "+" in r[5] for r in rows)
    assert server.count == 6

    status, presets = client.predict(
        "B",
        "my_classifier",
        "My classifier",
        "en",
        system,
        user,
        False,
        "",
        "",
        b_user,
        True,
        "label, reason",
        api_name="/prompt_save",
    )
    assert status.startswith("Saved") and "my_classifier" in status
    from lab.presets import load_prompt_preset

    saved = load_prompt_preset("my_classifier")
    assert saved.json and saved.prompt("en") == ("", b_user, ["label", "reason"])
    assert "my_classifier" in [c[0] for c in client.predict(api_name="/label_presets")["choices"]]
    many(tmp_path / "pics", 3)
    line = client.predict(
        str(tmp_path / "pics"),
        "classified",
        "my_classifier",
        "en",
        0,
        *labeler_values(server),
        api_name="/label_estimate",
    )
    assert line.startswith("3 of 3 images to label") and "300 tokens" in line  # the JSON default answer length


def test_preview_errors_are_one_sentence(launch_app, server):
    app, ctx, client = launch_app(model="")
    summary, *_ = client.predict(
        [],
        None,
        "",
        "<image>Hi",
        False,
        "",
        False,
        "",
        "",
        False,
        "",
        *labeler_values(server),
        api_name="/prompt_preview",
    )
    assert summary == "Pick or upload at least one image for the preview."
    summary, *_ = client.predict(
        ["0001.png"],
        None,
        "",
        "<image>Hi",
        False,
        "",
        False,
        "",
        "",
        False,
        "",
        *labeler_values(None, key="", provider="openai"),
        api_name="/prompt_preview",
    )
    assert summary.startswith("No API key") and "OPENAI_API_KEY" in summary


def wait_until_done(client, out, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress, *_ = result = client.predict(out, api_name="/label_progress")
        if progress.split("  \n")[1].startswith(("finished", "stopped", "failed")):
            return result
        time.sleep(0.2)
    raise AssertionError(f"the run did not end: {progress}")


def test_label_review_and_export_a_folder(launch_app, server, tmp_path, lab_home):
    app, ctx, client = launch_app(model="")
    many(tmp_path / "pics", 10)
    folder = str(tmp_path / "pics")
    line = client.predict(
        folder, "ui_set", "sample_caption", "en", 0, *labeler_values(server), api_name="/label_estimate"
    )
    assert line.startswith("10 of 10 images to label")
    status, timer = client.predict(
        folder, "ui_set", "sample_caption", "en", 6, *labeler_values(server), api_name="/label_start"
    )
    assert timer["active"] is True
    assert status.startswith("Started") and "ui_set" in status
    progress, gallery, items, failures = wait_until_done(client, "ui_set")[:4]
    assert "finished: 6 labeled · 0 failed" in progress and len(items["data"]) == 6 and len(gallery) == 6
    assert failures["data"] in ([], [[None, None, None]], [["", "", ""]])
    client.predict(folder, "ui_set", "sample_caption", "en", 0, *labeler_values(server), api_name="/label_start")
    progress = wait_until_done(client, "ui_set")[0]
    assert "4 labeled" in progress and "6 skipped" in progress

    table = client.predict("ui_set", api_name="/label_review_load")
    rows = table["data"] if isinstance(table, dict) else table
    assert len(rows) == 10
    rows[0][2] = "An edited caption."
    rows[1][3] = True
    status, _ = client.predict(
        "ui_set", {"headers": ["id", "source", "answer", "reject"], "data": rows}, api_name="/label_review_save"
    )
    assert status == "Saved: 1 answer(s) edited, 1 item(s) rejected."
    records = [json.loads(line) for line in (paths.datasets_dir() / "ui_set" / "data.jsonl").read_text().splitlines()]
    assert len(records) == 9 and records[0]["messages"][-1]["content"] == "An edited caption."

    from gradio_client import Client

    reloaded = Client(app.local_url, verbose=False)  # a new page: no run of its own, the counts come from disk
    message, gallery, items, failures, timer, status = reloaded.predict("ui_set", api_name="/label_progress")
    assert message.endswith("ui_set: 9 labeled, 0 failed so far.") and timer["active"] is False

    status, archive = client.predict("ui_set", "llamafactory", api_name="/label_export")
    assert status.splitlines()[0].endswith("data.json.") and "LLaMA-Factory: set dataset_dir" in status
    with zipfile.ZipFile(archive) as z:
        assert sum(n.startswith("images/") and not n.endswith("/") for n in z.namelist()) == 9
    for path in lab_home.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path


def test_stop_and_failures_in_the_labeling_tab(launch_app, server, tmp_path):
    app, ctx, client = launch_app(model="")
    many(tmp_path / "pics", 30)
    (tmp_path / "pics" / "000-broken.png").write_bytes(b"not a png")  # sorts first: reached before the stop
    server.latency = 0.2
    client.predict(
        str(tmp_path / "pics"),
        "stopped_set",
        "sample_caption",
        "en",
        0,
        *labeler_values(server),
        api_name="/label_start",
    )
    time.sleep(0.8)
    assert client.predict(api_name="/label_stop").startswith("Stopping")
    progress, _, _, failures = wait_until_done(client, "stopped_set")[:4]
    assert "stopped:" in progress
    done = len((paths.datasets_dir() / "stopped_set" / "data.jsonl").read_text().splitlines())
    assert 0 < done < 30
    assert failures["data"] == [["000-broken.png", "bad_image", "not an image, or an image format that cannot be read"]]
    client.predict(
        str(tmp_path / "pics"),
        "stopped_set",
        "sample_caption",
        "en",
        0,
        *labeler_values(server),
        api_name="/label_retry",
    )
    progress = wait_until_done(client, "stopped_set")[0]
    assert "0 labeled · 1 failed · 0 skipped · of 1" in progress  # only the failure was tried again


def test_without_a_key_the_tab_says_what_to_set_and_offers_the_local_model(launch_app, tmp_path):
    app, ctx, client = launch_app(model="")
    many(tmp_path / "pics", 2)
    status, _ = client.predict(
        str(tmp_path / "pics"),
        "nokey",
        "sample_caption",
        "en",
        0,
        *labeler_values(None, key="", provider="openai"),
        api_name="/label_start",
    )
    assert status.startswith("No API key") and "OPENAI_API_KEY" in status and "local model" in status
    assert client.predict(api_name="/label_use_local") == "local"
    status, _ = client.predict(
        str(tmp_path / "pics"),
        "nokey",
        "sample_caption",
        "en",
        0,
        *labeler_values(None, key="", provider="local"),
        api_name="/label_start",
    )
    assert status == "No model is loaded in the app yet; wait for it to load, or pick an API provider."


def test_upload_images_and_a_zip(launch_app, tmp_path):
    app, ctx, client = launch_app(model="")
    pictures = many(tmp_path / "pics", 3)
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in pictures[:2]:
            z.write(p, f"inner/{p.name}")
    folder, status = client.predict(
        [handle_file(str(pictures[2])), handle_file(str(archive))], api_name="/label_upload"
    )
    assert status.startswith("3 image(s) ready") and folder.startswith(str(paths.workspace() / "uploads"))


def test_server_messages_follow_the_app_language(launch_app):
    app, ctx, client = launch_app(model="", lang="zh")
    assert client.predict(api_name="/label_stop") == "本页面尚未开始标注。"
    assert client.predict(None, api_name="/label_upload")[1] == "请先选择要上传的图片或 .zip。"
