"""Many visitors browsing the Dataset tab at once: page-open latency and the server's memory.

    python bench/visitors.py                     # 20 visitors, 600 generated photos, 3 rounds
    python bench/visitors.py --images 0          # the bundled sample set (60 small PNGs) instead
    python bench/visitors.py --endpoint show     # every open through /dataset_show (summary + first page)

The app runs as ``python app.py`` in its own process on 127.0.0.1 with a fresh workspace;
its resident memory is read from /proc before the visitors start, after they finish, and
its peak (VmHWM). Each visitor is its own gradio_client session that opens ``--rounds``
gallery pages one after the other (visitor i starts at page i, so the first round opens
different pages and later rounds revisit pages others have opened) and downloads what the
page shows, as a browser would. Everything is bounded: ``--timeout`` seconds in all, after
which the visitors stop and the figures so far are printed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_dataset(folder: Path, n: int, size: tuple[int, int] = (1280, 960)) -> Path:
    """``n`` distinct photo-sized JPEGs (smooth colour with grain, ~200 KB each) and their records."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0.3, 1, height)[:, None, None]
    lines = []
    for i in range(n):
        tint = np.array([(i * 97) % 256, (i * 57 + 80) % 256, (i * 23 + 160) % 256], dtype=np.float32)
        grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
        pixels = np.clip(ramp * tint + grain, 0, 255).astype(np.uint8)
        name = f"images/{i:05d}.jpg"
        Image.fromarray(pixels).save(folder / name, quality=90)
        lines.append(json.dumps({"id": f"{i:05d}", "images": [name], "messages": [
            {"role": "user", "content": "<image>Describe the picture."},
            {"role": "assistant", "content": f"A tinted gradient, number {i}."}]}))
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mib(pid: int) -> dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) memory of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def start_app(workspace: Path, port: int, deadline: float) -> subprocess.Popen:
    env = dict(os.environ, LAB_HOME=str(workspace), GRADIO_TEMP_DIR=str(workspace / "gradio-cache"),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(REPO))
    command = [sys.executable, str(REPO / "app.py"), "--model", "", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the app exited before serving its first page")
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the app did not serve its first page in time")


def visit(url: str, dataset: str, args, pages: int, index: int, out: dict, deadline: float) -> None:
    """One visitor: its own session, ``args.rounds`` page opens, each timed with its download."""
    from gradio_client import Client

    downloads = Path(out["tmp"]) / f"visitor-{index}"
    client = Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)
    for round_ in range(args.rounds):
        if time.monotonic() > deadline:
            return
        page = (index + round_) % pages + 1
        started = time.perf_counter()
        if args.endpoint == "show":
            result = client.predict(dataset, api_name="/dataset_show")
        else:
            result = client.predict(dataset, page, api_name="/dataset_page")
        seconds = time.perf_counter() - started
        gallery = result[1] if args.endpoint == "show" else result[0]
        size = sum(Path(item["image"]).stat().st_size for item in gallery)
        with out["lock"]:
            out["opens"].append({"round": round_, "seconds": seconds, "images": len(gallery), "bytes": size})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def summarize(opens: list[dict]) -> dict:
    seconds = [o["seconds"] for o in opens]
    later = [o["seconds"] for o in opens if o["round"] > 0]
    return {
        "page_opens": len(opens),
        "p50_s": round(percentile(seconds, 0.5), 2), "p95_s": round(percentile(seconds, 0.95), 2),
        "max_s": round(max(seconds, default=float("nan")), 2),
        "p50_after_first_round_s": round(percentile(later, 0.5), 2) if later else None,
        "images_per_open": round(statistics.mean(o["images"] for o in opens), 1) if opens else 0,
        "kib_per_open": round(statistics.mean(o["bytes"] for o in opens) / 1024, 1) if opens else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="page opens per visitor")
    parser.add_argument("--images", type=int, default=600, help="generated photos (0: the bundled sample set)")
    parser.add_argument("--per-page", type=int, default=24, help="records per gallery page (to number the pages)")
    parser.add_argument("--endpoint", choices=["page", "show"], default="page")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for everything, generation included")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    workspace = Path(tempfile.mkdtemp(prefix="lab-visitors-"))
    try:
        if args.images:
            dataset = str(make_dataset(workspace / "data" / "visitors", args.images))
        else:
            dataset = str(REPO / "data" / "sample")
        records = args.images or 60
        pages = max(1, -(-records // args.per_page))
        port = free_port()
        proc = start_app(workspace, port, deadline)
        try:
            before = memory_mib(proc.pid)
            out = {"opens": [], "lock": threading.Lock(), "tmp": str(workspace / "downloads")}
            visitors = [threading.Thread(target=visit, args=(f"http://127.0.0.1:{port}/", dataset, args, pages, i,
                                                             out, deadline), daemon=True)
                        for i in range(args.visitors)]  # fmt: skip
            started = time.perf_counter()
            for thread in visitors:
                thread.start()
            for thread in visitors:
                thread.join(max(0.0, deadline - time.monotonic()))
            wall = time.perf_counter() - started
            after = memory_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        report = {"endpoint": args.endpoint, "visitors": args.visitors, "rounds": args.rounds, "records": records,
                  "wall_s": round(wall, 1), **summarize(out["opens"]), "rss_before_mib": before["VmRSS"],
                  "rss_after_mib": after["VmRSS"], "rss_peak_mib": after["VmHWM"]}  # fmt: skip
        print(json.dumps(report))
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
