"""The app starts offline on the tiny demo model and says plainly what it is."""

import time


def _wait_ready(ctx, timeout=120):
    deadline = time.time() + timeout
    while ctx.handle.state.value == "loading" and time.time() < deadline:
        time.sleep(0.2)
    return ctx.handle.describe()


def test_starts_on_the_demo_model(launch_app, lab_home):
    app, ctx, client = launch_app(model="demo")
    info = _wait_ready(ctx)
    assert info["state"] == "ready" and info["is_tiny"], info
    assert (lab_home / "models" / "tiny-qwen2_5_vl" / "lab_tiny.json").is_file()
    status = client.predict(api_name="/model_status")
    assert "tiny random demo model" in status and "qwen2_5_vl" in status


def test_a_model_that_cannot_load_is_one_sentence(launch_app, tmp_path):
    app, ctx, client = launch_app(model=str(tmp_path / "no-such-model"))
    info = _wait_ready(ctx)
    assert info["state"] == "empty" and info["error"]
    status = client.predict(api_name="/model_status")
    assert status.startswith("The model could not be loaded:") and "Traceback" not in status
