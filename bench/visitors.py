"""Many visitors browsing the Dataset tab at once: page-open latency and the server's memory.

    python bench/visitors.py                     # 20 visitors, 600 generated photos, 3 rounds
    python bench/visitors.py --images 0          # the bundled sample set (60 small PNGs) instead
    python bench/visitors.py --endpoint show     # every open through /dataset_show (summary + first page)

The app runs as ``python app.py`` in its own process on 127.0.0.1 with a fresh workspace;
its resident memory is read from /proc before the visitors start, after they finish, and
its peak (VmHWM), and so is the CPU time it spent per page open (a figure that, unlike the
latencies, hardly depends on what else the machine is running). Each visitor is its own gradio_client session that
opens ``--rounds``
gallery pages one after the other (visitor i starts at page i, so the first round opens
different pages and later rounds revisit pages others have opened). A page open is timed
from the request until every picture it shows has been fetched over one kept-alive
connection, as a browser tab would (``p50_answer_s``: until the server's answer alone).
Everything is bounded: ``--timeout`` seconds in all, after which the visitors stop and the
figures so far are printed. Prints one JSON object.
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
        lines.append(
            json.dumps(
                {
                    "id": f"{i:05d}",
                    "images": [name],
                    "messages": [
                        {"role": "user", "content": "<image>Describe the picture."},
                        {"role": "assistant", "content": f"A tinted gradient, number {i}."},
                    ],
                }
            )
        )
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_app(workspace: Path, port: int, deadline: float) -> subprocess.Popen:
    env = dict(
        os.environ,
        LAB_HOME=str(workspace),
        GRADIO_TEMP_DIR=str(workspace / "gradio-cache"),
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONPATH=str(REPO),
    )
    command = [sys.executable, str(REPO / "app.py"), "--model", "", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the app exited before serving its first page") from None
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the app did not serve its first page in time")


def visit(url: str, dataset: str, args, pages: int, index: int, out: dict, deadline: float) -> None:
    """One visitor: its own session, then ``args.rounds`` page opens, each timed until its pictures are in."""
    import httpx
    from gradio_client import Client

    try:
        client = Client(
            url, verbose=False, download_files=False, analytics_enabled=False, httpx_kwargs={"timeout": 120}
        )
    except Exception as err:  # a session that never starts is counted, not raised
        client = None
        out["errors"].append(f"session: {err!r}")
    try:
        out["ready"].wait(timeout=max(1.0, deadline - time.monotonic()))  # every visitor starts at once
    except threading.BrokenBarrierError:
        return
    if client is None:
        return
    with httpx.Client(timeout=120) as browser:  # one kept-alive connection, as a browser tab has
        for round_ in range(args.rounds):
            if time.monotonic() > deadline:
                return
            try:
                opened = open_page(client, browser, dataset, args.endpoint, (index + round_) % pages + 1)
            except Exception as err:
                out["errors"].append(f"page: {err!r}")
                continue
            out["opens"].append({**opened, "round": round_})


def open_page(client, browser, dataset: str, endpoint: str, page: int) -> dict:
    """Open one gallery page and fetch every picture it shows; the seconds it took and the bytes."""
    started = time.perf_counter()
    if endpoint == "show":
        gallery = client.predict(dataset, api_name="/dataset_show")[1]
    else:
        gallery = client.predict(dataset, page, api_name="/dataset_page")[0]
    answered = time.perf_counter() - started
    size = sum(len(browser.get(item["image"]["url"]).raise_for_status().content) for item in gallery)
    return {"answer_s": answered, "seconds": time.perf_counter() - started, "images": len(gallery), "bytes": size}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def summarize(opens: list[dict]) -> dict:
    seconds = [o["seconds"] for o in opens]
    later = [o["seconds"] for o in opens if o["round"] > 0]
    return {
        "page_opens": len(opens),
        "p50_s": round(percentile(seconds, 0.5), 2),
        "p95_s": round(percentile(seconds, 0.95), 2),
        "max_s": round(max(seconds, default=float("nan")), 2),
        "p50_answer_s": round(percentile([o["answer_s"] for o in opens], 0.5), 2),
        "p50_after_first_round_s": round(percentile(later, 0.5), 2) if later else None,
        "images_per_open": round(statistics.mean(o["images"] for o in opens), 1) if opens else 0,
        "kib_per_open": round(statistics.mean(o["bytes"] for o in opens) / 1024, 1) if opens else 0,
    }


def crowd(url: str, dataset: str, args, pages: int, pid: int, deadline: float) -> dict:
    """Start every visitor's session, then let them all open pages at once; their figures and the server's memory."""
    out = {"opens": [], "errors": [], "ready": threading.Barrier(args.visitors + 1)}
    visitors = [
        threading.Thread(target=visit, args=(url, dataset, args, pages, i, out, deadline), daemon=True)
        for i in range(args.visitors)
    ]
    for thread in visitors:
        thread.start()
    out["ready"].wait(timeout=max(1.0, deadline - time.monotonic()))  # every session has started
    before, cpu = memory_mib(pid), cpu_seconds(pid)
    started = time.perf_counter()
    for thread in visitors:
        thread.join(max(0.0, deadline - time.monotonic()))
    wall = time.perf_counter() - started
    after, cpu = memory_mib(pid), cpu_seconds(pid) - cpu
    return {
        "wall_s": round(wall, 1),
        **summarize(out["opens"]),
        "server_cpu_ms_per_open": round(1000 * cpu / max(1, len(out["opens"]))),
        "rss_before_mib": before["VmRSS"],
        "rss_after_mib": after["VmRSS"],
        "rss_peak_before_mib": before["VmHWM"],
        "rss_peak_mib": after["VmHWM"],
        "errors": len(out["errors"]),
        "first_error": (out["errors"] or [None])[0],
        "load_average_1min": round(os.getloadavg()[0], 1),
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
        port = free_port()
        proc = start_app(workspace, port, deadline)
        try:
            figures = crowd(
                f"http://127.0.0.1:{port}/", dataset, args, max(1, -(-records // args.per_page)), proc.pid, deadline
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(
            json.dumps(
                {
                    "endpoint": args.endpoint,
                    "visitors": args.visitors,
                    "rounds": args.rounds,
                    "records": records,
                    **figures,
                }
            )
        )
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
