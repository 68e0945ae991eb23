"""Traversal thrown at every endpoint of the running app, as a stranger on a shared deployment would.

The app runs as on a Hugging Face Space (``LAB_RESTRICT_PATHS=1``). Next to its workspace
lies ``canary_room/``: files that look like a dataset, a run, a preset, saved results, a
model and a picture, each carrying :data:`SECRET`. Links in the workspace's ``data/``,
``checkpoints/``, ``models/``, ``uploads/``, ``presets/prompts/`` and ``eval/`` point at it
(``planted_link``) or at a path that does not exist (``dangling_link``).

Every endpoint the app declares is read from its own config (so one added later is covered
without touching this file) and called with its defaults; then each text-like parameter
gets traversal payloads (absolute, ``../``, ``..%2f``, ``file://``, the links) and each file
parameter crafted uploads (records naming the canary, a zip with ``../``, absolute and
symlink members). After every call:

- :data:`SECRET` (or the canary picture) is in no answer, no file handed back (zips opened)
  and no request the app sent to an endpoint;
- nothing outside the workspace was created or changed, and nothing carrying the canary
  landed in the workspace;
- the answer for a target that exists outside equals the one for a target that does not,
  once the differing name is replaced (no existence oracle).

Training and labeling would run for minutes: their workers are replaced by ones that end at
once, so what is exercised is everything up to where the work would begin. The endpoint
the labelers and the endpoint evaluation talk to is a local server that refuses every key.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply
from gradio_client import Client, handle_file
from gradio_client.utils import SKIP_COMPONENTS
from PIL import Image, PngImagePlugin

from lab import paths
from lab.errors import LabError

pytestmark = pytest.mark.slow

SECRET = "SECRET-3f7b1c-canary-content"
SIZE, LEFT, RIGHT = (17, 13), (201, 13, 77), (3, 250, 9)  # the canary picture: two coloured halves
LINK_FOLDERS = ("data", "checkpoints", "models", "uploads")
BACKGROUND = ("labeling", "model-load", "evaluation", "train-")  # names of the app's worker threads
CALL_TIMEOUT = 60


# ---------------------------------------------------------------- the world around the workspace


def canary_picture() -> bytes:
    image = Image.new("RGB", SIZE, LEFT)
    image.paste(RIGHT, (9, 0, 17, 13))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def build_canary_room(room: Path) -> None:
    """Everything the lab might read, each with the secret in it."""
    (room / "images").mkdir(parents=True)
    for name in ("secret.png", "images/secret.png"):
        (room / name).write_bytes(canary_picture())
    record = {
        "id": SECRET,
        "images": ["secret.png"],
        "messages": [{"role": "user", "content": f"<image>{SECRET}"}, {"role": "assistant", "content": SECRET}],
    }
    sample = {
        "id": SECRET,
        "images": [str(room / "secret.png")],
        "prompt": SECRET,
        "reference": SECRET,
        "answers": {"tuned": SECRET},
        "scores": {"tuned": {}},
    }
    files = {
        "secret.txt": SECRET,
        "data.jsonl": json.dumps(record) + "\n",
        "config.yaml": f"model: {SECRET}\ndataset: {room}\nsystem: {SECRET}\nrun_name: canary\n",
        "metrics.jsonl": json.dumps({"event": "error", "time": 0, "message": SECRET}) + "\n",
        "adapter_config.json": json.dumps({"base_model_name_or_path": SECRET, "peft_type": "LORA"}),
        "config.json": json.dumps({"model_type": SECRET}),
        "secret.json": json.dumps({"name": SECRET, "source": SECRET, "total": 1, SECRET: 1}),  # read as YAML too
        "secret.jsonl": json.dumps(sample) + "\n",
        "secret.yaml": f"name: canary\nen:\n  system: {SECRET}\n  user: '<image>{SECRET}'\n",
        "label_job.json": json.dumps({"prompt": {"system": SECRET, "user": SECRET}}),
        "failures.jsonl": json.dumps({"source": SECRET, "status": "failed", "reason": SECRET, "key": SECRET}) + "\n",
    }
    for name, text in files.items():
        (room / name).write_text(text, encoding="utf-8")


def plant_links(home: Path, room: Path, nowhere: Path) -> None:
    links = {
        f"{folder}/{name}": target
        for folder in LINK_FOLDERS
        for name, target in (("planted_link", room), ("dangling_link", nowhere))
    }
    links.update(
        {
            "presets/prompts/planted_link.yaml": room / "secret.yaml",
            "presets/prompts/dangling_link.yaml": nowhere / "secret.yaml",
            "eval/planted_link.json": room / "secret.json",
            "eval/dangling_link.json": nowhere / "secret.json",
        }
    )
    for name, target in links.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).symlink_to(target)


def crafted_uploads(folder: Path, room: Path) -> tuple[list, list]:
    """(pairs, singles) of files to upload: a pair names the canary, then a file beside it that does not exist."""
    depth = "../" * 40  # enough to climb out of wherever the upload is unpacked
    kinds = {
        "absolute": lambda name: {"images": [str(room / name)]},
        "dotdot": lambda name: {"images": [depth + str(room / name).lstrip("/")]},
        "file_url": lambda name: {"image_url": f"file://{room / name}"},
    }
    pairs = []
    for kind, make in kinds.items():
        made = []
        for side, name in (("present", "secret.png"), ("absent", "gone.png")):
            (folder / side).mkdir(parents=True, exist_ok=True)
            made.append(_record_file(folder / side / f"{kind}.jsonl", make(name)))
        pairs.append(Payload(*made, ("secret.png", "gone.png")))
    return pairs, [Payload(_bad_zip(folder / "bundle.zip", room), None)]


def _record_file(path: Path, images: dict) -> str:
    if "image_url" in images:  # OpenAI chat format
        content = [{"type": "image_url", "image_url": {"url": images["image_url"]}}, {"type": "text", "text": "Q"}]
        row = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "A"}]}
    else:
        row = {"messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}], **images}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return str(path)


def _bad_zip(path: Path, room: Path) -> str:
    """Members '../escape.png' and '/abs/escape.png', a symlink entry to the canary, and records naming it."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../escape.png", b"not the canary")
        archive.writestr("/abs/escape.png", b"not the canary")
        link = zipfile.ZipInfo("link.png")
        link.external_attr = 0o120777 << 16  # a symlink, as zip -y stores one
        archive.writestr(link, str(room / "secret.png"))
        row = {
            "messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}],
            "images": ["link.png"],
        }
        archive.writestr("data.jsonl", json.dumps(row) + "\n")
    return str(path)


@dataclass
class Payload:
    present: object  # a value naming something outside that exists
    absent: object | None = None  # the same for something that does not exist (None: no pair)
    tokens: tuple[str, str] = ("", "")  # the names that differ between the two, blotted out before comparing


def text_payloads(room: Path, nowhere: Path) -> tuple[list[Payload], list[Payload]]:
    """Pairs (an outside target that exists, one that does not) and single payloads for a text parameter.

    The pairs name a canary file, then a link by its name and by its path: the links are
    named alike in data/, checkpoints/ and the others, so one bare name reaches a labeling
    output, a run, a preset and an import alike. The singles name the canary folder.
    """
    links = ("planted_link", "dangling_link")
    pairs = [
        Payload(str(room / "secret.json"), str(room / "gone.json"), ("secret.json", "gone.json")),
        Payload(*links, links),
        Payload(*(f"data/{name}" for name in links), links),
    ]
    singles = [
        Payload(str(room)),
        Payload(f"../{room.name}"),
        Payload(f"..%2f{room.name}%2fsecret.json"),
        Payload(f"file://{room}/secret.json"),
    ]
    return pairs, singles


# ---------------------------------------------------------------- what a leak looks like


def looks_like_canary(data: bytes) -> bool:
    """The canary picture, also re-encoded (its text chunk gone)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != SIZE:
                return False
            rgb = image.convert("RGB")
    except Exception:
        return False

    def near(a, b):
        return all(abs(x - y) <= 40 for x, y in zip(a, b))

    return near(rgb.getpixel((2, 6)), LEFT) and near(rgb.getpixel((14, 6)), RIGHT)


def carries_canary(data: bytes) -> bool:
    if SECRET.encode() in data or looks_like_canary(data):
        return True
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return any(carries_canary(archive.read(member)) for member in archive.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def snapshot(roots: list[Path], skip: tuple[Path, ...]) -> dict:
    """Every file and folder under ``roots`` (links not followed) with its size and time."""
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
            for name in dirs + files:
                info = os.lstat(os.path.join(folder, name))
                found[os.path.join(folder, name)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


# ---------------------------------------------------------------- calling the app


@dataclass
class Endpoint:
    name: str
    dep: dict
    params: list[dict]  # the input components the API takes, in order
    outputs: list[int]  # ids of the output components the API returns


class Sweep:
    """The running app, its client, and the checks after each call."""

    def __init__(self, app, client: Client, server: FakeOpenAI, home: Path, downloads: Path, outside: list[Path]):
        self.app, self.client, self.server, self.home, self.downloads = app, client, server, home, downloads
        self.components = {c["id"]: c for c in app.config["components"]}
        timer_ids = {c["id"] for c in app.config["components"] if c["type"] == "timer"}
        self.timers = [e for e in self.endpoints() if any(t[0] in timer_ids for t in e.dep["targets"])]
        # What the timers keep refreshing (a timer's own on/off switch is no content).
        self.live = {i for timer in self.timers for i in timer.outputs} - timer_ids
        self.outside_roots = outside
        self.outside = self.outside_now()
        self.clean: set = set()  # workspace files already found clean, by (path, size, time)
        self.problems: list[str] = []

    def endpoints(self):
        """Every named endpoint with a function on the server, from the app's own config."""
        for dep in self.app.config["dependencies"]:
            if not dep.get("api_name"):
                continue
            if not dep.get("backend_fn"):
                continue  # runs only in the browser (the language switch): nothing reaches the server
            keep = [i for i in dep["inputs"] if not self._skipped(i)]
            outputs = [i for i in dep["outputs"] if not self._skipped(i)]
            yield Endpoint(dep["api_name"], dep, [self.components[i] for i in keep], outputs)

    def _skipped(self, component_id: int) -> bool:
        component = self.components[component_id]
        return component.get("skip_api", component["type"] in SKIP_COMPONENTS)

    def defaults(self, endpoint: Endpoint) -> list:
        values = []
        for component in endpoint.params:
            value = component.get("props", {}).get("value")
            if component["type"] in ("file", "uploadbutton"):
                value = None
            elif isinstance(value, str) and value.startswith(("http://", "https://")):
                value = self.server.base_url  # never another address: the local server that refuses every key
            values.append(value)
        return values

    def call(self, endpoint: Endpoint, *calls: list) -> list:
        """Send ``calls`` (argument lists) at once; once the app is idle again, ask the timers that
        the endpoint touches what they show now. Returns the answers as far as they can be compared:
        an output a timer keeps refreshing is a snapshot of work in progress, and is compared
        through the timer's own answer instead."""
        settle()
        answers = self._answers(endpoint, calls)
        settle()
        for timer in self.timers:
            if endpoint not in self.timers and set(timer.outputs) & set(endpoint.outputs):
                answers += self._answers(timer, [self.defaults(timer)])
        where = f"/{endpoint.name} {str(calls)[:300]}"
        for _, answer in answers:
            self.problems += [f"{where}: the canary in the answer: {leak}" for leak in self.leaks(answer)]
        comparable = []
        for source, answer in answers:
            live = self.live if source is endpoint and endpoint not in self.timers else set()
            keep = isinstance(answer, str) or not live  # an error is compared whole
            comparable.append(answer if keep else [v for v, i in zip(answer, source.outputs) if i not in live])
        return comparable

    def _answers(self, endpoint: Endpoint, calls) -> list[tuple[Endpoint, list | str]]:
        """``(endpoint, outputs)`` for each call, or ``(endpoint, "error: sentence")``."""
        jobs = [self.client.submit(*args, api_name=f"/{endpoint.name}") for args in calls]
        answers = []
        for job in jobs:
            try:
                result = job.result(timeout=CALL_TIMEOUT)
            except TimeoutError:
                pytest.fail(f"/{endpoint.name} did not answer within {CALL_TIMEOUT} s")
            except Exception as err:  # gr.Error and refused values come back as errors with their sentence
                answers.append((endpoint, f"error: {err}"))
                continue
            answers.append((endpoint, list(result) if len(endpoint.outputs) > 1 else [result][: len(endpoint.outputs)]))
        return answers

    def leaks(self, value) -> list[str]:
        if isinstance(value, dict):
            return [leak for item in value.values() for leak in self.leaks(item)]
        if isinstance(value, (list, tuple)):
            return [leak for item in value for leak in self.leaks(item)]
        if not isinstance(value, str):
            return []
        if SECRET in value:
            return [value[:200]]
        handed = Path(value)
        if handed.is_relative_to(self.downloads) and handed.is_file() and carries_canary(handed.read_bytes()):
            return [f"in the file it handed back, {handed.name}"]
        return []

    def outside_now(self) -> dict:
        return snapshot(self.outside_roots, skip=(self.home, self.downloads))

    def check_world(self, where: str) -> None:
        now = self.outside_now()
        changed = sorted(k for k in now.keys() | self.outside.keys() if now.get(k) != self.outside.get(k))
        self.problems += [f"{where}: changed outside the workspace: {path}" for path in changed]
        self.outside = now
        for folder, _, files in os.walk(self.home):
            for name in files:
                path = Path(folder, name)
                key = (path, *os.lstat(path)[6:9])
                if path.is_symlink() or key in self.clean:
                    continue
                if carries_canary(path.read_bytes()):
                    self.problems.append(f"{where}: the canary landed in the workspace: {path}")
                self.clean.add(key)
        for request in self.server.requests:
            if self.sent_canary(request["body"]):
                self.problems.append(f"{where}: the canary was sent to an endpoint")
        self.server.requests.clear()

    @staticmethod
    def sent_canary(body: dict) -> bool:
        text = json.dumps(body)
        urls = re.findall(r"data:image/[\w.+-]+;base64,([A-Za-z0-9+/=]+)", text)
        return SECRET in text or any(looks_like_canary(base64.b64decode(url)) for url in urls)


def settle(timeout: float = 30.0) -> None:
    """Wait until no model load, training, labeling or evaluation is going on in the app."""
    deadline = time.monotonic() + timeout
    while any(t.name.startswith(BACKGROUND) for t in threading.enumerate()):
        if time.monotonic() > deadline:
            pytest.fail("the app's background work did not end")
        time.sleep(0.01)


def normalized(answers: list, tokens: tuple[str, str]) -> str:
    """An answer with the differing names, numbers (times, counts) and handed-back file names blotted out."""
    text = json.dumps(answers, sort_keys=True, default=str, ensure_ascii=False)
    for token in tokens:
        text = text.replace(token, "<TARGET>")
    text = re.sub(r'"/[^"]*?/downloads/[^"]*"', '"<file>"', text)
    return re.sub(r"\d+", "0", text)


# ---------------------------------------------------------------- the test


@pytest.fixture
def sweep(launch_app, lab_home, tmp_path, monkeypatch):
    """The app as on a Space, the canaries around its workspace, and the payloads to throw."""
    room, nowhere = tmp_path / "canary_room", tmp_path / "empty_room"
    build_canary_room(room)
    plant_links(lab_home, room, nowhere)
    payloads = {"text": text_payloads(room, nowhere), "file": crafted_uploads(tmp_path / "crafted", room)}
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    # Gradio sums up its per-event statistics (a pandas frame of every event so far) after each
    # event by default; for the many calls here, once in a while is enough.
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    monkeypatch.setattr("lab.training.job._run_in_app", _no_training)
    monkeypatch.setattr("lab.labeling.batch.label_folder", _no_labeling)
    monkeypatch.setattr("gradio_client.utils.time", _QuickPoll())
    refused = Reply(status=401, body=json.dumps({"error": {"message": "invalid key", "type": "invalid_request_error"}}))
    with FakeOpenAI(responder=lambda body: refused) as server:
        app, _, _ = launch_app(model="")
        # Plain HTTP on 127.0.0.1: no certificates to load for each of the many calls.
        client = Client(app.local_url, verbose=False, download_files=str(downloads), ssl_verify=False)
        outside = [tmp_path, paths.REPO_ROOT / "data", paths.PRESETS_DIR]
        yield Sweep(app, client, server, lab_home, downloads, outside), payloads
        settle()


class _QuickPoll:
    """gradio_client waits 50 ms between looks at its message queue; over loopback 5 ms will do.

    Hundreds of calls are made one after the other, so this is most of the test's time.
    """

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.005))


def _no_training(job, handle) -> None:
    raise LabError("not trained in this test")


async def _no_labeling(images_dir, out_dir, prompt, labeler, **options):
    raise LabError("not labeled in this test")


def test_no_endpoint_reads_writes_or_tells_about_files_outside_the_workspace(sweep):
    sweep, payloads = sweep
    (pairs, singles), (upload_pairs, upload_singles) = payloads["text"], payloads["file"]
    if SECRET in json.dumps(sweep.app.config, default=str):
        sweep.problems.append("the page is built with the canary in it")
    for endpoint in sweep.endpoints():
        sweep.client.reset_session()  # each endpoint starts with a fresh page (its own State values)
        defaults = sweep.defaults(endpoint)
        sweep.call(endpoint, defaults)
        at_once = []  # payloads only checked for leaks go in one batch, the pairs one after the other
        for index, component in enumerate(endpoint.params):
            if component["type"] in ("file", "uploadbutton"):
                kind_pairs, kind_singles = upload_pairs, upload_singles
            elif accepts_any_text(component):
                kind_pairs, kind_singles = pairs, singles
            elif has_choices(component):
                kind_pairs, kind_singles = [], pairs[:1]  # Gradio itself refuses what is not a choice
            else:
                continue
            for payload in kind_pairs:
                compare(
                    sweep,
                    endpoint,
                    with_value(defaults, index, component, payload.present),
                    with_value(defaults, index, component, payload.absent),
                    payload,
                )
            at_once += [with_value(defaults, index, component, payload.present) for payload in kind_singles]
        sweep.call(endpoint, *at_once)
        sweep.check_world(endpoint.name)
    assert not sweep.problems, "\n".join(sweep.problems)


def compare(sweep: Sweep, endpoint: Endpoint, present_args: list, absent_args: list, payload: Payload) -> None:
    """The answers for a target outside that exists and for one that does not must not differ."""
    present, absent = sweep.call(endpoint, present_args), sweep.call(endpoint, absent_args)
    if normalized(present, payload.tokens) != normalized(absent, payload.tokens):
        sweep.problems.append(
            f"{endpoint.name}: answers differ for {payload.present!r} (exists) and "
            f"{payload.absent!r} (does not):\n  {present}\n  {absent}"
        )


def with_value(defaults: list, index: int, component: dict, payload) -> list:
    args = list(defaults)
    args[index] = as_value(component, payload)
    return args


def accepts_any_text(component: dict) -> bool:
    kind, props = component["type"], component.get("props", {})
    return kind in ("textbox", "code", "multimodaltextbox") or (kind == "dropdown" and props.get("allow_custom_value"))


def has_choices(component: dict) -> bool:
    return component["type"] in ("dropdown", "radio", "checkboxgroup")


def as_value(component: dict, payload):
    kind, props = component["type"], component.get("props", {})
    if kind in ("file", "uploadbutton"):
        return [handle_file(payload)] if props.get("file_count") == "multiple" else handle_file(payload)
    if kind == "multimodaltextbox":
        return {"text": payload, "files": []}
    if kind == "checkboxgroup" or props.get("multiselect"):
        return [payload]
    return payload
