"""Trying prompts on a few images before paying for a whole folder.

Every (prompt variant, image) pair is labeled concurrently through the same
:func:`~lab.labeling.item.label_one` as a batch run, so what the preview shows (answer,
latency, tokens, cost, JSON validity) is what the run will produce.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.errors import ConfigError
from lab.labeling.item import ItemResult, Labeler, PromptSpec, label_one

MAX_PREVIEW_IMAGES = 8


async def preview(images: list[str | Path], prompts: list[PromptSpec], labeler: Labeler) -> list[list[ItemResult]]:
    """``results[v][i]``: prompt variant ``v`` on image ``i``; the labeler is entered here."""
    if not images:
        raise ConfigError("Pick at least one sample image for the preview.")
    if len(images) > MAX_PREVIEW_IMAGES:
        raise ConfigError("A preview takes at most {max_preview_images} images; {n_images} were given.",
                          max_preview_images=MAX_PREVIEW_IMAGES, n_images=len(images))
    gate = asyncio.Semaphore(labeler.concurrency)

    async def one(prompt: PromptSpec, image: str | Path) -> ItemResult:
        async with gate:
            return await label_one(labeler, prompt, Path(image), executor)

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="preview-io") as executor:
        async with labeler:
            rows = [asyncio.gather(*(one(prompt, image) for image in images)) for prompt in prompts]
            return [list(row) for row in await asyncio.gather(*rows)]


def run_preview(images: list[str | Path], prompts: list[PromptSpec], labeler: Labeler) -> list[list[ItemResult]]:
    """:func:`preview` from synchronous code (a UI handler, the CLI)."""
    return asyncio.run(preview(images, prompts, labeler))


def preview_totals(results: list[ItemResult]) -> dict:
    """Sums over one variant's results: cost, tokens, mean latency, share of usable answers."""
    n = max(1, len(results))
    return {
        "cost_usd": sum(r.cost_usd for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "mean_seconds": sum(r.seconds for r in results) / n,
        "ok_share": sum(r.ok for r in results) / n,
    }
