"""The batch run: dataset folder, resume, exact-once, failures and retries, bad images, stop, secrets."""

import base64
import hashlib
import io
import json
import os
import shutil
import time

import pytest
from fake_openai import FakeOpenAI, answer, image_digest, refusal, server_error
from labeling_images import awkward_images, many, plain
from PIL import Image

from lab.dataset_check import validate_dataset
from lab.errors import BusyError, localize
from lab.labeling.batch import run_labeling, start_labeling
from lab.labeling.client import ApiLabeler, LabelerConfig, encode_image
from lab.labeling.estimate import estimate_folder
from lab.labeling.item import PromptSpec
from lab.labeling.store import LabelStore, read_rows

KEY = "sk-batch-secret-9876543210"
CAPTION = PromptSpec("You label UI screenshots.", "<image>Describe this UI component in one sentence.")
JSON_PROMPT = PromptSpec("", "<image>Classify. Answer JSON.", True, ("label", "reason"))


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def labeler(server, **overrides):
    settings = dict(model="fake-vl", base_url=server.base_url, api_key=KEY, timeout=2.0, max_retries=0, concurrency=4)
    return ApiLabeler(LabelerConfig(**{**settings, **overrides}))


def records(out):
    return list(read_rows(out / "data.jsonl"))


def digest(path, max_pixels=768 * 768):
    return hashlib.sha256(encode_image(path, max_pixels).encode()).hexdigest()[:12]


def test_run_writes_a_valid_dataset_and_a_rerun_skips_everything(server, tmp_path):
    images = many(tmp_path / "pics", 12)
    out = tmp_path / "ds"
    progress = run_labeling(tmp_path / "pics", out, CAPTION, labeler(server), job={"note": "x"})
    assert (progress.state, progress.ok, progress.failed, progress.total) == ("finished", 12, 0, 12)
    rows = records(out)
    assert len(rows) == 12 and validate_dataset(out).ok
    by_source = {row["meta"]["source"]: row for row in rows}
    for path in images:  # each answer belongs to its own image, whatever the order of completion
        row = by_source[path.name]
        assert row["messages"][-1]["content"] == f"label-{digest(path)}"
        assert (out / row["images"][0]).read_bytes() == path.read_bytes()
        assert row["messages"][0] == {"role": "system", "content": CAPTION.system}
        assert row["meta"]["prompt_sha"] == CAPTION.sha and row["meta"]["status"] == "ok"
    assert json.loads((out / "label_job.json").read_text())["images"] == str((tmp_path / "pics").resolve())

    server.reset()
    images[0].rename(images[0].with_name("renamed.png"))  # the same bytes under a new name
    plain(tmp_path / "pics" / "new.png", (1, 2, 3))
    again = run_labeling(tmp_path / "pics", out, CAPTION, labeler(server))
    assert (again.ok, again.skipped, server.count) == (1, 12, 1)
    other = PromptSpec("", "<image>Another prompt.")
    assert run_labeling(tmp_path / "pics", out, other, labeler(server), limit=5).ok == 5
    assert len(records(out)) == 18 and len({r["id"] for r in records(out)}) == 18


def test_requested_concurrency_is_what_the_server_sees(server, tmp_path):
    many(tmp_path / "pics", 24)
    server.latency = 0.2
    run_labeling(tmp_path / "pics", tmp_path / "a", CAPTION, labeler(server, concurrency=8))
    assert server.max_in_flight == 8
    server.reset()
    run_labeling(tmp_path / "pics", tmp_path / "b", CAPTION, labeler(server, concurrency=3))
    assert server.max_in_flight == 3


def test_bad_images_never_stop_a_run(server, tmp_path):
    usable, broken = awkward_images(tmp_path / "pics")
    out = tmp_path / "ds"
    progress = run_labeling(tmp_path / "pics", out, CAPTION, labeler(server))
    assert progress.state == "finished" and progress.ok == len(usable) and progress.failed == len(broken)
    assert {r["meta"]["source"] for r in records(out)} == {p.name for p in usable.values()}
    failures = {row["source"]: row for row in read_rows(out / "failures.jsonl")}
    assert set(failures) == set(broken)
    for name, reason in broken.items():
        assert failures[name]["status"] == "bad_image" and reason in failures[name]["reason"]
    assert server.count == len(usable)  # nothing was sent for a broken file
    from lab.labeling.review import list_failures

    shown = {row["source"]: localize(row["reason"], "zh") for row in list_failures(out)}
    assert shown["empty.png"] == "空文件（0 字节）" and shown["truncated.png"].startswith("图片被截断或已损坏")
    for request in server.requests:  # every kind arrives as a plain 8-bit RGB JPEG
        part = request["body"]["messages"][-1]["content"][0]["image_url"]["url"]
        assert part.startswith("data:image/jpeg;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(part.split(",", 1)[1]))).mode == "RGB"
    assert validate_dataset(out).ok


def test_failures_are_recorded_and_retried_alone(server, tmp_path):
    images = many(tmp_path / "pics", 10)
    failing = {digest(p): kind for p, kind in zip(images[:4], ["500", "500", "refusal", "invalid"])}

    def flaky(body):
        kind = failing.get(image_digest(body))
        if kind == "500":
            return server_error(500)
        if kind == "refusal":
            return refusal()
        if kind == "invalid":
            return answer('{"label": "cart"')
        return answer('{"label": "cart", "reason": "looks like one"}')

    server.responder = flaky
    out = tmp_path / "ds"
    first = run_labeling(tmp_path / "pics", out, JSON_PROMPT, labeler(server))
    assert (first.ok, first.failed) == (6, 4)
    failures = {row["source"]: row for row in read_rows(out / "failures.jsonl")}
    assert failures[images[0].name]["reason"].startswith("server error (HTTP 500) after 1 tries")
    assert failures[images[2].name]["status"] == "refused"
    assert failures[images[3].name]["status"] == "invalid" and "not valid JSON" in failures[images[3].name]["reason"]
    from lab.labeling.review import list_failures

    # The page shows the reasons in Chinese too, also when read back from failures.jsonl.
    shown = {row["source"]: row["reason"] for row in list_failures(out)}
    assert str(shown[images[0].name]) == failures[images[0].name]["reason"]
    assert all("reason_msg" in row and not any(k.endswith("_zh") for k in row) for row in failures.values())
    assert localize(shown[images[0].name], "zh").startswith("服务端出错（HTTP 500），已尝试 1 次")
    assert localize(shown[images[2].name], "zh").startswith("拒绝回答：")
    assert localize(shown[images[3].name], "zh").startswith("不是有效的 JSON")

    server.reset()
    resumed = run_labeling(tmp_path / "pics", out, JSON_PROMPT, labeler(server))
    assert (resumed.ok, resumed.failed, resumed.skipped, server.count) == (0, 0, 10, 0)

    failing.clear()
    retried = run_labeling(tmp_path / "pics", out, JSON_PROMPT, labeler(server), retry_failed=True)
    assert (retried.total, retried.ok, retried.failed, server.count) == (4, 4, 0, 4)
    assert len(records(out)) == 10 and len({r["id"] for r in records(out)}) == 10
    assert list_failures(out) == []


def test_stop_keeps_what_is_finished_and_a_rerun_completes_exactly_once(server, tmp_path):
    many(tmp_path / "pics", 40)
    server.latency = 0.1
    out = tmp_path / "ds"
    run = start_labeling(tmp_path / "pics", out, CAPTION, labeler(server))
    deadline = time.monotonic() + 20
    while run.ok < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    run.stop()
    assert run.wait(10) and run.state == "stopped"
    kept = records(out)
    assert 8 <= len(kept) == run.ok < 40
    rest = run_labeling(tmp_path / "pics", out, CAPTION, labeler(server))
    assert rest.ok == 40 - len(kept) and rest.skipped == len(kept)
    assert sorted(r["meta"]["source"] for r in records(out)) == [f"{i:04d}.png" for i in range(40)]


def test_a_torn_last_line_is_cut_before_appending(server, tmp_path):
    many(tmp_path / "pics", 3)
    out = tmp_path / "ds"
    run_labeling(tmp_path / "pics", out, CAPTION, labeler(server), limit=2)
    with open(out / "data.jsonl", "ab") as f:
        f.write(b'{"id": "half a rec')  # what SIGKILL in the middle of a write leaves
    run_labeling(tmp_path / "pics", out, CAPTION, labeler(server))
    lines = (out / "data.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["meta"]["status"] == "ok" for line in lines)


def test_a_whole_last_record_without_its_newline_is_kept_on_resume(server, tmp_path):
    many(tmp_path / "pics", 3)
    out = tmp_path / "ds"
    run_labeling(tmp_path / "pics", out, CAPTION, labeler(server), limit=2)
    data = out / "data.jsonl"
    data.write_bytes(data.read_bytes().rstrip(b"\n"))  # e.g. saved by an editor that drops the final newline
    server.reset()
    rest = run_labeling(tmp_path / "pics", out, CAPTION, labeler(server))
    assert (rest.ok, rest.skipped, server.count) == (1, 2, 1)
    assert sorted(r["meta"]["source"] for r in records(out)) == ["0000.png", "0001.png", "0002.png"]


def test_a_file_name_that_is_not_utf8_is_labeled_and_the_run_goes_on(server, tmp_path):
    pics = tmp_path / "pics"
    many(pics, 3)
    shutil.copyfile(plain(tmp_path / "src.png", (200, 10, 10)), os.path.join(os.fsencode(pics), b"caf\xe9.png"))
    open(os.path.join(os.fsencode(pics), b"bro\xffken.png"), "wb").close()  # empty: fails, with its reason
    out = tmp_path / "ds"
    progress = run_labeling(pics, out, CAPTION, labeler(server))
    assert (progress.state, progress.ok, progress.failed) == ("finished", 4, 1)
    rows = {r["meta"]["source"]: r for r in records(out)}
    assert set(rows) == {"0000.png", "0001.png", "0002.png", "caf\\xe9.png"}
    odd = rows["caf\\xe9.png"]
    original = pics / os.fsdecode(bytes.fromhex(odd["meta"]["source_bytes"]))  # the exact name, back from the record
    assert os.fsencode(original.name) == b"caf\xe9.png"
    assert original.read_bytes() == (out / odd["images"][0]).read_bytes()
    assert odd["messages"][-1]["content"] == f"label-{digest(original)}"
    failure = next(read_rows(out / "failures.jsonl"))
    assert (failure["source"], failure["status"]) == ("bro\\xffken.png", "bad_image") and "empty" in failure["reason"]
    assert bytes.fromhex(failure["source_bytes"]) == b"bro\xffken.png"
    assert validate_dataset(out).ok
    server.reset()
    again = run_labeling(pics, out, CAPTION, labeler(server))  # resuming finds both again
    assert (again.ok, again.skipped, server.count) == (0, 5, 0)


def test_duplicate_images_are_labeled_once(server, tmp_path):
    first = plain(tmp_path / "pics" / "a.png")
    shutil.copy(first, tmp_path / "pics" / "b.png")
    progress = run_labeling(tmp_path / "pics", tmp_path / "ds", CAPTION, labeler(server))
    assert (progress.ok, progress.skipped, server.count) == (1, 1, 1)


def test_one_writer_per_dataset(tmp_path):
    with LabelStore(tmp_path / "ds"):
        with pytest.raises(BusyError, match="Another labeling run"):
            LabelStore(tmp_path / "ds").open()
    with LabelStore(tmp_path / "ds"):  # released when the first closed
        pass


def test_the_api_key_is_in_no_file_and_no_url(server, tmp_path, lab_home):
    many(tmp_path / "pics", 6)
    server.script(server_error(401))  # a server that echoes nothing useful; the key must still not leak
    out = tmp_path / "ds"
    progress = run_labeling(
        tmp_path / "pics", out, CAPTION, labeler(server), job={"labeler": labeler(server).config.public_dict()}
    )
    assert progress.ok == 5 and progress.failed == 1
    written = [p for root in (out, lab_home) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "label_job.json" for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    assert all(KEY not in r["url"] for r in server.requests)
    assert KEY not in json.dumps(progress.snapshot(), default=str)


def test_limit_and_estimate(server, tmp_path):
    many(tmp_path / "pics", 10)
    out = tmp_path / "ds"
    before = estimate_folder(tmp_path / "pics", out, CAPTION, "gpt-4o")
    assert (before.images, before.todo, before.priced) == (10, 10, True) and "assumed" in str(before.note)
    progress = run_labeling(tmp_path / "pics", out, CAPTION, labeler(server), limit=4)
    assert progress.ok == 4 and progress.remaining == 0 and len(records(out)) == 4
    after = estimate_folder(tmp_path / "pics", out, CAPTION, "gpt-4o", limit=3)
    assert (after.todo, after.completion_tokens) == (3, 1) and "measured" in str(after.note)
    assert after.cost_usd < before.cost_usd


def test_progress_snapshot_has_counts_rate_and_recent_items(server, tmp_path):
    many(tmp_path / "pics", 5)
    progress = run_labeling(tmp_path / "pics", tmp_path / "ds", CAPTION, labeler(server))
    snap = progress.snapshot()
    assert snap["ok"] == 5 and snap["rate"] > 0 and snap["remaining"] == 0 and len(snap["recent"]) == 5
    assert snap["recent"][0]["extra"]["image"].startswith("images/")
    assert "5 labeled, 0 failed" in str(progress.line())


def test_review_edits_rejects_and_refuses_bad_json(server, tmp_path):
    from lab.errors import DatasetError
    from lab.labeling.review import list_items, save_review

    many(tmp_path / "pics", 4)
    server.responder = lambda body: answer('{"label": "x", "reason": "y"}')
    out = tmp_path / "ds"
    run_labeling(tmp_path / "pics", out, JSON_PROMPT, labeler(server))
    items = list_items(out)
    first, second = items[0]["id"], items[1]["id"]
    with pytest.raises(DatasetError, match=f"item {first} is not usable: JSON lacks the key"):
        save_review(out, {first: '{"label": "x"}'}, want_json=True, expected_keys=["label", "reason"])
    saved = save_review(
        out, {first: '{"label": "z", "reason": "edited"}'}, [second], want_json=True, expected_keys=["label", "reason"]
    )
    assert (saved.edited, saved.rejected) == (1, 1)
    rows = {r["id"]: r for r in records(out)}
    assert second not in rows and rows[first]["messages"][-1]["content"] == '{"label": "z", "reason": "edited"}'
    assert rows[first]["meta"]["edited"] is True and validate_dataset(out).ok
    server.reset()
    assert run_labeling(tmp_path / "pics", out, JSON_PROMPT, labeler(server)).ok == 0  # rejected is not redone
    with pytest.raises(DatasetError, match="No item with id nope"):
        save_review(out, {}, ["nope"])
    with LabelStore(out), pytest.raises(BusyError):
        save_review(out, {first: "x"})


def test_a_failed_background_run_says_why_in_both_languages(tmp_path):
    run = start_labeling(tmp_path / "missing", tmp_path / "ds", CAPTION, labeler=None)
    assert run.wait(10) and run.state == "failed"
    message = run.snapshot()["message"]
    assert str(message) == f"The image folder {tmp_path / 'missing'} does not exist."
    assert localize(message, "zh") == f"图片文件夹 {tmp_path / 'missing'} 不存在。"
