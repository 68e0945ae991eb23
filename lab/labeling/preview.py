"""Trying prompts on a few images before paying for a whole folder.

Every (prompt variant, image) pair is labeled concurrently through the same
:func:`~lab.labeling.item.label_one` as a batch run, so what the preview shows (answer,
latency, tokens, cost, JSON validity) is what the run will produce.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.errors import ConfigError
from lab.labeling.answers import CUT_OFF
from lab.labeling.item import ItemResult, Labeler, PromptSpec, label_one
from lab.paths import SAMPLE_DATASET
from lab.text import Msg

MAX_PREVIEW_IMAGES = 8


def sample_images() -> list[Path]:
    """The bundled sample images offered for previews, by name."""
    folder = SAMPLE_DATASET / "images"
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


OnResult = Callable[[int, int, ItemResult], None]  # (variant, image, result) as each answer arrives


async def preview(
    images: list[str | Path], prompts: list[PromptSpec], labeler: Labeler, on_result: OnResult | None = None
) -> list[list[ItemResult]]:
    """``results[v][i]``: prompt variant ``v`` on image ``i``; the labeler is entered here."""
    if not images:
        raise ConfigError("Pick at least one sample image for the preview.")
    if len(images) > MAX_PREVIEW_IMAGES:
        raise ConfigError(
            "A preview takes at most {max_preview_images} images; {n_images} were given.",
            max_preview_images=MAX_PREVIEW_IMAGES,
            n_images=len(images),
        )
    gate = asyncio.Semaphore(labeler.concurrency)

    async def one(variant: int, index: int) -> ItemResult:
        async with gate:
            result = await label_one(labeler, prompts[variant], Path(images[index]), executor)
        if on_result is not None:
            on_result(variant, index, result)
        return result

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="preview-io") as executor:
        async with labeler:
            rows = [asyncio.gather(*(one(v, i) for i in range(len(images)))) for v in range(len(prompts))]
            return [list(row) for row in await asyncio.gather(*rows)]


def run_preview(
    images: list[str | Path], prompts: list[PromptSpec], labeler: Labeler, on_result: OnResult | None = None
) -> list[list[ItemResult]]:
    """:func:`preview` from synchronous code (a UI handler, the CLI)."""
    return asyncio.run(preview(images, prompts, labeler, on_result))


def stream_preview(
    images: list[str | Path], prompts: list[PromptSpec], labeler: Labeler
) -> Iterator[list[list[ItemResult | None]]]:
    """:func:`preview` in a worker thread, yielding the results so far (None: not answered yet) as each
    answer arrives, so a page or a terminal shows progress image by image (a local model on a CPU takes
    seconds per answer). Errors of the preview (a busy model, no key) are raised here."""
    results: list[list[ItemResult | None]] = [[None] * len(images) for _ in prompts]
    arrived: queue.Queue = queue.Queue()
    outcome: list = []

    def work() -> None:
        try:
            outcome.append(run_preview(images, prompts, labeler, lambda v, i, r: arrived.put((v, i, r))))
        except BaseException as err:  # raised again in the caller's thread
            outcome.append(err)
        arrived.put(None)

    threading.Thread(target=work, name="preview", daemon=True).start()
    while (item := arrived.get()) is not None:
        variant, index, result = item
        results[variant][index] = result
        yield [list(row) for row in results]
    if isinstance(outcome[0], BaseException):
        raise outcome[0]


def preview_totals(results: list[ItemResult]) -> dict:
    """Sums over one variant's results: cost, tokens, mean latency, share of usable answers."""
    n = max(1, len(results))
    return {
        "answered": sum(bool(r.answer) for r in results),
        "cut_off": sum(r.reason == CUT_OFF for r in results),
        "cost_usd": sum(r.cost_usd for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "mean_seconds": sum(r.seconds for r in results) / n,
        "ok_share": sum(r.ok for r in results) / n,
    }


def preview_line(name: str, results: list[ItemResult]) -> Msg:
    """One variant's outcome in a line: answered, usable (and why not), time, tokens, cost."""
    totals = preview_totals(results)
    line = Msg(
        "{name}: {answered}/{total} answered, {usable} usable · {seconds:.2f} s each · {prompt_tokens} + "
        "{completion_tokens} tokens · ${cost:.4f}",
        name=name,
        answered=totals["answered"],
        total=len(results),
        usable=sum(r.ok for r in results),
        seconds=totals["mean_seconds"],
        prompt_tokens=totals["prompt_tokens"],
        completion_tokens=totals["completion_tokens"],
        cost=totals["cost_usd"],
    )
    if totals["cut_off"]:
        return Msg("{line} · {n} cut off at the answer-length limit", line=line, n=totals["cut_off"])
    return line
