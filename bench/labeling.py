"""Labeling throughput and memory against a fake API with a fixed latency.

    python bench/labeling.py            # 2,000 images, concurrency 1, 8, 32, 64 (about a minute)
    python bench/labeling.py --n 300    # a quick run

The fake server (tests/fake_openai.py) runs in its own process and answers every
request after ``--latency`` seconds, so the ideal rate is concurrency / latency. Each
setting runs in a fresh process (peak RSS is per process) into a fresh dataset
folder; low concurrencies label only enough images to take ~``--seconds`` each. The
last rows label a small and the full folder at the same concurrency: their peak
memory should be about the same, since the image list is streamed, the queue is
bounded and results go straight to disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_images(folder: Path, n: int) -> None:
    """``n`` small distinct PNGs (the API's latency, not image work, is what is measured)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"{i:05d}.png"
        if not path.exists():
            Image.new("RGB", (64, 48), ((i * 97) % 256, (i * 57 + 80) % 256, (i // 256 * 23 + 160) % 256)).save(path)


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fake_openai.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().strip()
    if not url.startswith("http"):
        server.kill()
        raise SystemExit("the fake server did not start")
    return server, url


def child(args: argparse.Namespace) -> None:
    """One setting, in its own process: label, then print the figures as JSON."""
    import openai  # noqa: F401  (imported up front so start-up is not counted as CPU per image)

    from lab.labeling.batch import run_labeling
    from lab.labeling.client import ApiLabeler, LabelerConfig
    from lab.labeling.item import PromptSpec

    config = LabelerConfig(
        model="bench-vl", base_url=args.url, api_key="bench", concurrency=args.concurrency[0], max_retries=0, timeout=30
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        progress = run_labeling(
            args.images, out, PromptSpec("", "<image>Describe."), ApiLabeler(config), limit=args.limit
        )
        wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "ok": progress.ok,
                "failed": progress.failed,
                "seconds": progress.elapsed_s,
                "wall": wall,
                "rate": progress.rate,
                "peak_rss_mib": usage.ru_maxrss / 1024,
                "cpu_ms_per_image": 1000
                * (usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime)
                / max(1, progress.ok),
            }
        )
    )


def run_setting(url: str, images: Path, concurrency: int, limit: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--url",
        url,
        "--images",
        str(images),
        "--concurrency",
        str(concurrency),
        "--limit",
        str(limit),
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "LAB_HOME": str(images.parent)}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images in the folder")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake API takes per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=12.0, help="about how long each setting should run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    work = Path(tempfile.mkdtemp(prefix="bench-labeling-"))
    images = work / "images"
    make_images(images, args.n)
    server, url = start_server(args.latency)
    rows = []
    try:
        for concurrency in args.concurrency:
            ideal = concurrency / args.latency
            limit = min(args.n, max(20, int(ideal * args.seconds)))
            rows.append((concurrency, limit, ideal, run_setting(url, images, concurrency, limit)))
        memory = [(n, run_setting(url, images, 32, n)) for n in sorted({min(250, args.n), args.n})]
    finally:
        server.terminate()
    print(f"\nfake API latency {args.latency * 1000:.0f} ms, {args.n} images of 64x48, {os.cpu_count()} CPUs\n")
    print("| concurrency | images | seconds | images/s | ideal | % of ideal | client CPU ms/image | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, _limit, ideal, r in rows:
        print(
            f"| {concurrency} | {r['ok']} | {r['seconds']:.1f} | {r['rate']:.1f} | {ideal:.0f} | "
            f"{100 * r['rate'] / ideal:.0f}% | {r['cpu_ms_per_image']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    print("\nmemory against folder size (concurrency 32):\n")
    print("| images labeled | peak RSS MiB |")
    print("|---:|---:|")
    for _n, r in memory:
        print(f"| {r['ok']} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
