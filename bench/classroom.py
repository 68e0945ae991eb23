"""The classroom demo on a CPU, timed step by step, as the guide on the first tab tells it.

    python bench/classroom.py            # app start + the whole guided loop
    python bench/classroom.py --start    # only: app start to first page

Start: ``python app.py`` in a subprocess until ``/`` answers, beside a bare ``import gradio``
(best of three each, interleaved): what the app adds on top of Gradio's own import. Loop: the real app in this
process (fresh workspace, tiny demo model, bundled sample set), driven through its API
with gradio_client exactly as the guide's clicks: preview the caption prompt with the
local model, train the ``cpu_demo`` preset, evaluate base vs tuned on data/sample, one
chat message, export. Prints one JSON object with the seconds of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_gradio_import() -> float:
    """A bare ``import gradio`` in a fresh interpreter: the part of the start that is Gradio's own."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True)
    return time.perf_counter() - started


def time_app_start(port: int = 7991) -> float:
    env = dict(os.environ, LAB_HOME=tempfile.mkdtemp(prefix="lab-start-"))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                return time.perf_counter() - started
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("the app exited before serving its first page") from None
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait()


def run_loop() -> dict:
    os.environ["LAB_HOME"] = tempfile.mkdtemp(prefix="lab-classroom-")
    from gradio_client import Client, handle_file

    from lab.train_config import TrainConfig
    from lab.training import job as jobs
    from lab.ui import launch
    from lab.ui.context import AppSettings
    from lab.ui.train_tab import FORM_FIELDS, form_values

    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = round(now - clock, 1)
        clock = now

    app, ctx = launch(AppSettings(model="demo"), block=False)
    client = Client(app.local_url, verbose=False)
    while ctx.handle.state.value != "ready":
        time.sleep(0.1)
    lap("demo_model_ready_s")
    system, user, _, _ = client.predict("sample_caption", "en", api_name="/prompt_load")
    local = ["local", "", "", "", 0.0, 32, 224 * 224, False, False, 1, 0, 60]
    client.predict(
        ["0001.png", "0002.png"],
        None,
        system,
        user,
        False,
        "",
        False,
        "",
        "",
        False,
        "",
        *local,
        api_name="/prompt_preview",
    )
    lap("preview_local_model_s")
    cfg = TrainConfig.from_preset("cpu_demo", ["run_name=classroom"])
    client.predict(**dict(zip(FORM_FIELDS, form_values(cfg))), api_name="/train_start")
    job = jobs.current_job()
    job.wait()
    assert job.status == "finished", job.message
    lap("train_cpu_demo_s")
    rows = [json.loads(line) for line in (job.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    _, summary, metrics, _, _ = client.predict(
        str(ROOT / "data" / "sample"), True, 8, 24, 0, "gain", api_name="/evaluate"
    )
    rouge_l = next(r for r in metrics["value"]["data"] if r[0] == "rouge_l")
    lap("evaluate_base_vs_tuned_60_s")
    image = handle_file(str(ROOT / "data" / "sample" / "images" / "0001.png"))
    client.submit(
        {"text": "Describe this UI component in one sentence.", "files": [image]},
        "",
        0.0,
        0.9,
        32,
        True,
        False,
        api_name="/chat",
    ).result()
    lap("chat_one_answer_s")
    client.predict("classroom", "", "", "auto", "cpu", False, "", "", False, 4096, 1, 0.9, api_name="/export")
    lap("export_merged_s")
    app.close()
    return {
        **times,
        "loop_total_s": round(sum(times.values()), 1),
        "train_steps": len(losses),
        "loss_first": round(losses[0], 3),
        "loss_last": round(losses[-1], 3),
        "rouge_l_base": rouge_l[1],
        "rouge_l_tuned": rouge_l[2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", action="store_true", help="only time the app start")
    args = parser.parse_args()
    starts, imports = [], []
    for _ in range(3):  # interleaved, so both see the same load on the machine
        starts.append(time_app_start())
        imports.append(time_gradio_import())
    figures = {
        "app_start_to_first_page_s": round(min(starts), 2),
        "import_gradio_s": round(min(imports), 2),
        "ours_on_top_of_gradio_s": round(min(starts) - min(imports), 2),
    }
    if not args.start:
        figures.update(run_loop())
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
