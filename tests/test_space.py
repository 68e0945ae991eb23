"""A shared deployment (a Hugging Face Space) starts where the Space expects, loads only the owner's
models, and shows no visitor what another visitor typed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lab.cli.app import listen_host, listen_port
from lab.errors import ModelLoadError

REPO = Path(__file__).resolve().parent.parent


def test_listen_address_follows_the_flag_then_gradio_then_the_space(monkeypatch):
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    assert (listen_host(None), listen_port(None)) == ("127.0.0.1", None)
    monkeypatch.setenv("SPACE_ID", "someone/vlm-lab")
    assert listen_host(None) == "0.0.0.0"
    monkeypatch.setenv("PORT", "7000")
    assert listen_port(None) == 7000
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7001")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "10.1.2.3")
    assert (listen_host(None), listen_port(None)) == ("10.1.2.3", 7001)
    assert (listen_host("127.0.0.1"), listen_port(7002)) == ("127.0.0.1", 7002)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> set[str]:
    """Addresses (hex, as the kernel lists them) with a listening TCP socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's socket table (Linux)")
def test_started_as_a_space_listens_on_every_interface_and_the_given_port(tmp_path):
    """``python app.py`` with what a Space sets: SPACE_ID and PORT, nothing on the command line."""
    port = _free_port()
    env = {
        **os.environ,
        "SPACE_ID": "someone/vlm-lab",
        "PORT": str(port),
        "LAB_HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
    }
    env.pop("GRADIO_SERVER_NAME", None)
    env.pop("GRADIO_SERVER_PORT", None)
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", ""],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 180
        while not _listening(port) and time.time() < deadline and server.poll() is None:
            time.sleep(0.5)
        assert _listening(port) == {"00000000"}, "not listening on 0.0.0.0 at the Space's port"
        # Traffic to loopback only.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"VLM Lab" in page.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_visitors_load_only_allowed_models(monkeypatch, tmp_path, lab_home, tiny_models):
    import shutil

    from lab.model_sources import allowed_models, resolve_source

    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    monkeypatch.delenv("LAB_ALLOWED_MODELS", raising=False)
    assert allowed_models()[0] == "demo" and "Qwen/Qwen2.5-VL-3B-Instruct" in allowed_models()
    assert resolve_source("Qwen/Qwen2.5-VL-3B-Instruct") == ("Qwen/Qwen2.5-VL-3B-Instruct", False)
    outside = tmp_path / "outside-model"
    shutil.copytree(tiny_models("qwen2_5_vl"), outside)
    refusals = set()
    for name in ("someone/any-model", str(outside), str(tmp_path / "missing"), "../outside-model", "/etc"):
        with pytest.raises(ModelLoadError) as err:
            resolve_source(name)
        refusals.add(str(err.value))
    assert len(refusals) == 1 and "LAB_ALLOWED_MODELS" in refusals.pop()  # the same sentence: no existence oracle
    inside = lab_home / "models" / "mine"
    shutil.copytree(tiny_models("qwen2_5_vl"), inside)
    assert resolve_source(str(inside)) == (str(inside), True)
    assert resolve_source("models/mine") == (str(inside), True)
    monkeypatch.setenv("LAB_ALLOWED_MODELS", "demo, someone/any-model")
    assert allowed_models() == ["demo", "someone/any-model"]
    assert resolve_source("someone/any-model") == ("someone/any-model", False)
    with pytest.raises(ModelLoadError):
        resolve_source("Qwen/Qwen2.5-VL-3B-Instruct")


def _wait_loaded(ctx, timeout=60):
    deadline = time.time() + timeout
    while ctx.handle.state.value == "loading" and time.time() < deadline:
        time.sleep(0.2)


def test_a_visitor_does_not_see_what_another_visitor_tried(launch_app, monkeypatch, lab_home):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    app, ctx, first = launch_app(model="")
    second = Client(app.local_url, verbose=False)
    before = second.predict(api_name="/model_status")
    with pytest.raises(AppError, match="only these models can be loaded"):  # refused at once, to the asker only
        first.predict("someone/not-allowed", "none", api_name="/model_load")
    assert second.predict(api_name="/model_status") == before
    broken = lab_home / "models" / "visitor-one-private-name"  # passes the name check, fails while loading
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    first.predict(str(broken), "none", api_name="/model_load")
    time.sleep(0.5)
    _wait_loaded(ctx)
    assert ctx.handle.last_error, "the load should have failed"
    mine = first.predict(api_name="/model_status")
    theirs = second.predict(api_name="/model_status")
    assert mine.startswith("The model could not be loaded:") and "visitor-one-private-name" in mine
    assert theirs == before and "could not be loaded" not in theirs


def test_a_workspace_outside_the_app_folder_still_serves_its_files(launch_app, monkeypatch, sample_dataset):
    """A Space's persistent storage (/data) is neither the working folder nor the temp folder, the
    only places Gradio serves files from unless told: downloads and dataset images must still arrive."""
    import shutil
    import tempfile
    import zipfile

    from lab import paths

    root = Path("/var/tmp")
    if not root.is_dir() or Path(tempfile.gettempdir()).resolve() == root.resolve():
        pytest.skip("needs a folder outside the working folder and the temp folder")
    home = Path(tempfile.mkdtemp(prefix="lab-home-", dir=root))
    try:
        monkeypatch.setenv("LAB_HOME", str(home))
        shutil.copytree(sample_dataset, paths.datasets_dir() / "mine")
        app, ctx, client = launch_app(model="")
        message, archive = client.predict(
            str(paths.datasets_dir() / "mine"), "llamafactory", api_name="/dataset_export"
        )
        with zipfile.ZipFile(archive) as z:  # downloaded through the app
            assert "data.json" in z.namelist()
        summary, gallery, *_ = client.predict(str(paths.datasets_dir() / "mine"), api_name="/dataset_show")
        assert len(gallery) == 24 and all(Path(item["image"]).is_file() for item in gallery)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_visitor_cannot_load_a_model_with_its_own_code(launch_app, monkeypatch):
    from gradio_client.exceptions import AppError

    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    _, ctx, client = launch_app(model="")
    with pytest.raises(AppError, match="cannot be loaded on this shared server"):  # the box by the picker, ticked
        client.predict("demo", "none", True, api_name="/model_load")
    assert ctx.handle.state.value == "empty"
