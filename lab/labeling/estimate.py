"""What a run will cost, before it starts.

Reads only image headers (a sample spread over the folder) and the dataset's earlier
answers to the same prompt, so it is quick even for a large folder and needs no API
key.
"""

from __future__ import annotations

from pathlib import Path

from lab.labeling.batch import count_images, image_folder, iter_images
from lab.labeling.costs import Estimate, Price, estimate_run
from lab.labeling.item import PromptSpec
from lab.labeling.store import DATA_FILE, done_and_failed, read_rows
from lab.paths import check_allowed


def estimate_folder(
    images_dir: str | Path,
    out_dir: str | Path | None,
    prompt: PromptSpec,
    model: str,
    *,
    max_pixels: int | None = None,
    price: Price | None = None,
    limit: int | None = None,
    completion_tokens: int | None = None,
    sample: int = 100,
) -> Estimate:
    """The cost of labeling what is left of ``images_dir`` with ``prompt``, before starting.

    Image sizes come from the headers of up to ``sample`` images spread over the folder;
    the answer length from the dataset's earlier answers to this prompt if it has any,
    else ``completion_tokens``, else a default for captions or JSON.
    """
    images_dir = image_folder(images_dir)
    total = count_images(images_dir)
    step = max(1, total // max(1, sample))
    sizes = [size for i, path in enumerate(iter_images(images_dir)) if i % step == 0 and (size := _header_size(path))]
    finished, answer_tokens = _earlier_work(check_allowed(Path(out_dir).expanduser()) if out_dir else None, prompt.sha)
    todo = max(0, total - finished)
    todo = min(todo, limit) if limit else todo
    return estimate_run(
        sizes,
        system=prompt.system,
        user=prompt.user,
        model=model,
        images=total,
        todo=todo,
        max_pixels=max_pixels,
        completion_tokens=answer_tokens or completion_tokens,
        want_json=prompt.want_json,
        price=price,
    )


def _header_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # a bad image costs nothing: it is skipped, not sent
        return None


def _earlier_work(out_dir: Path | None, prompt_sha: str) -> tuple[int, int | None]:
    """Images already labeled or failed with this prompt, and their mean answer length in tokens."""
    if out_dir is None or not out_dir.is_dir():
        return 0, None
    _, failed = done_and_failed(out_dir)
    tokens = [
        row["meta"].get("completion_tokens", 0)
        for row in read_rows(out_dir / DATA_FILE)
        if isinstance(row.get("meta"), dict) and row["meta"].get("prompt_sha") == prompt_sha
    ]
    finished = len(tokens) + sum(1 for row in failed.values() if row.get("prompt_sha") == prompt_sha)
    return finished, (round(sum(tokens) / len(tokens)) if tokens else None)
