"""The batch run: label a whole image folder into a dataset folder, concurrently, resumably.

The image list is streamed and the queue between the lister and the workers is
bounded, so memory does not grow with the number of images; results go to disk as
they finish (:mod:`lab.labeling.store`) and only counts and the last few items stay in
memory. A normal run skips what is done and what failed before; ``retry_failed``
redoes the failures alone. Setting ``stop`` (the Stop button, Ctrl-C) cancels the
requests in flight and keeps everything finished. A run is a :class:`LabelRun`, the
:class:`~lab.jobs.Job` the app starts in the background and the CLI runs in its own thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.errors import DatasetError
from lab.images import IMAGE_SUFFIXES
from lab.jobs import Job, start_job
from lab.labeling.item import ItemResult, Labeler, PromptSpec, label_one
from lab.labeling.store import LabelStore, file_sha, item_key, save_job
from lab.paths import check_allowed, is_allowed
from lab.text import Msg, saved_fields

RECENT_ITEMS = 50
LABELING = Msg("Labeling")  # what failed, when a run fails
_STOP_POLL_S = 0.05
_HASH_BATCH = 32


def iter_images(folder: str | Path) -> Iterator[Path]:
    """Image files under ``folder`` in a stable order, found one directory at a time."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            path = Path(root) / name
            # On a shared deployment an image that links out of the workspace is not one of the folder's.
            if path.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and is_allowed(path):
                yield path


def image_folder(folder: str | Path) -> Path:
    """``folder`` as a Path, or a DatasetError if it is not a folder."""
    path = check_allowed(Path(folder).expanduser())
    if not path.is_dir():
        raise DatasetError("The image folder {path} does not exist.", path=path)
    return path


def count_images(folder: str | Path) -> int:
    """How many images :func:`iter_images` will yield."""
    return sum(1 for _ in iter_images(folder))


class LabelRun(Job):
    """A labeling run: a :class:`~lab.jobs.Job` with the run's counts, cost and latest items.

    Its progress counts images: ``done`` is labeled, failed and skipped ones together,
    ``total`` the images to consider (the folder, or the failures when retrying); the rate
    and the ETA count only the images labeled (or failed) in this run, since skipping one
    takes no time. Read it from another thread through :meth:`snapshot`.
    """

    def __init__(self, out_dir: str | Path, stop_event: threading.Event | None = None):
        self.out_dir = check_allowed(Path(out_dir).expanduser(), write=True)
        super().__init__(self.out_dir.name, LABELING, stop_event)
        self.total = 0
        self.skipped = 0  # done (or failed) in an earlier run, or a duplicate of another image
        self.ok = 0
        self.failed = 0
        self.in_flight = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.limit: int | None = None
        self.recent: deque = deque(maxlen=RECENT_ITEMS)

    @property
    def rate(self) -> float:
        """Images labeled (or failed) per second in this run."""
        elapsed = self.elapsed_s
        return (self.ok + self.failed) / elapsed if elapsed > 0 else 0.0

    @property
    def remaining(self) -> int:
        left = max(0, self.total - self.skipped - self.ok - self.failed)
        return min(left, max(0, self.limit - self.ok - self.failed)) if self.limit is not None else left

    def skip(self) -> None:
        with self._lock:
            self.skipped += 1
            self.done += 1

    def record(self, result: ItemResult) -> None:
        with self._lock:
            if result.ok:
                self.ok += 1
            else:
                self.failed += 1
            self.done += 1
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
            self.cost_usd += result.cost_usd
            self.recent.append(result)

    def snapshot(self) -> dict:
        """The job's snapshot with the counts and the recent items (newest last)."""
        data = super().snapshot()
        with self._lock:
            data.update(
                total=self.total,
                skipped=self.skipped,
                ok=self.ok,
                failed=self.failed,
                in_flight=self.in_flight,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                cost_usd=self.cost_usd,
                limit=self.limit,
                recent=[asdict(item) for item in self.recent],
            )
        return data

    def line(self) -> Msg:
        """One line for a log or a status box."""
        eta = Msg("")
        if self.eta_s is not None and self.remaining:
            eta = Msg(", ETA {eta_s:.0f} s", eta_s=self.eta_s)
        return Msg(
            "{state}: {ok} labeled, {failed} failed, {skipped} skipped of {total}; ${cost:.4f}; "
            "{rate:.1f} images/s{eta}",
            state=self.state.label,
            ok=self.ok,
            failed=self.failed,
            skipped=self.skipped,
            total=self.total,
            cost=self.cost_usd,
            rate=self.rate,
            eta=eta,
        )


async def label_folder(
    images_dir: str | Path,
    out_dir: str | Path,
    prompt: PromptSpec,
    labeler: Labeler,
    *,
    limit: int | None = None,
    retry_failed: bool = False,
    stop: threading.Event | None = None,
    run: LabelRun | None = None,
    on_progress: Callable[[LabelRun], None] | None = None,
    job: dict | None = None,
) -> LabelRun:
    """Label every image of ``images_dir`` not yet done into the dataset folder ``out_dir``.

    ``labeler`` is an async context manager (:class:`~lab.labeling.client.ApiLabeler`,
    :class:`~lab.labeling.local.LocalLabeler`) entered here; ``job`` (settings without
    secrets) is saved as ``label_job.json``. ``run`` is the :class:`LabelRun` to count in
    (a new one, stopped by ``stop``, when not given); it is returned, ended.
    """
    images_dir = image_folder(images_dir)
    if limit is not None and limit < 1:
        raise DatasetError("The limit must be at least 1 image, not {limit}.", limit=limit)
    run = run if run is not None else LabelRun(out_dir, stop)
    run.limit = limit
    with LabelStore(out_dir) as store:
        if job is not None:
            save_job(store.folder, {**job, "images": str(images_dir.resolve())})
        if retry_failed:
            run.total = sum(1 for row in store.failed.values() if row.get("prompt_sha") == prompt.sha)
        else:
            run.total = count_images(images_dir)
        executor = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="label-io")
        try:
            async with labeler:
                run.mark_running()  # rate and ETA leave out start-up (imports, the lock, listing)
                await _run(
                    _RunParts(images_dir, store, prompt, labeler, executor, run, run.stop_event, on_progress),
                    limit,
                    retry_failed,
                )
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
    run.finish()
    return run


@dataclass
class _RunParts:
    images_dir: Path
    store: LabelStore
    prompt: PromptSpec
    labeler: Labeler
    executor: ThreadPoolExecutor
    progress: LabelRun
    stop: threading.Event
    on_progress: Callable[[LabelRun], None] | None


async def _run(run: _RunParts, limit: int | None, retry_failed: bool) -> None:
    queue: asyncio.Queue = asyncio.Queue(maxsize=2 * run.labeler.concurrency)
    workers = [asyncio.ensure_future(_work(run, queue)) for _ in range(run.labeler.concurrency)]
    producer = asyncio.ensure_future(_produce(run, queue, len(workers), limit, retry_failed))
    tasks = [producer, *workers]
    watcher = asyncio.ensure_future(_watch(run, tasks))
    try:
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        watcher.cancel()
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome


async def _watch(run: _RunParts, tasks: list[asyncio.Future]) -> None:
    while not run.stop.is_set():
        await asyncio.sleep(_STOP_POLL_S)
    run.progress.stop()  # stopping (a Ctrl-C sets the event alone)
    for task in tasks:
        task.cancel()


async def _produce(run: _RunParts, queue: asyncio.Queue, workers: int, limit: int | None, retry_failed: bool) -> None:
    loop = asyncio.get_running_loop()
    seen: set[str] = set()
    queued = 0
    paths = iter_images(run.images_dir)
    # Hashing goes to a worker thread a batch at a time: one thread hop per image would
    # cost the event loop more than the hashing itself at hundreds of images a second.
    while batch := list(itertools.islice(paths, _HASH_BATCH)):
        for path, image_sha in await loop.run_in_executor(run.executor, _hash_all, batch):
            if limit is not None and queued >= limit:
                break
            key = item_key(image_sha, run.prompt.sha)
            if retry_failed and key not in run.store.failed:
                continue
            if key in seen or key in run.store.done or (not retry_failed and key in run.store.failed):
                run.progress.skip()
                continue
            seen.add(key)
            await queue.put((path, image_sha, key))
            queued += 1
        if limit is not None and queued >= limit:
            break
    for _ in range(workers):
        await queue.put(None)


def _hash_all(paths: list[Path]) -> list[tuple[Path, str]]:
    hashed = []
    for path in paths:
        try:
            hashed.append((path, file_sha(path)))
        except OSError:  # unreadable: keyed by its name, so it is recorded (and skipped) like any bad image
            hashed.append((path, "unreadable-" + _name_sha(path)))
    return hashed


def _name_sha(path: Path) -> str:
    return hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()


async def _work(run: _RunParts, queue: asyncio.Queue) -> None:
    try:
        while (item := await queue.get()) is not None:
            path, image_sha, key = item
            run.progress.in_flight += 1
            try:
                result = await label_one(run.labeler, run.prompt, path, run.executor)
                if result.ok:  # copied before the record is written, so a record never lacks its image
                    image = await asyncio.get_running_loop().run_in_executor(
                        run.executor, run.store.copy_image, path, image_sha
                    )
                    result.extra["image"] = image
            finally:
                run.progress.in_flight -= 1
            # No await from here on: the record is written even if a stop comes now.
            _save(run, result, path, image_sha, key)
            run.progress.record(result)
            if run.on_progress is not None:
                run.on_progress(run.progress)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except BaseException:
        run.stop.set()  # a broken disk or a bug: end the whole run rather than hang the lister
        raise


def source_fields(path: Path, images_dir: Path) -> dict:
    """``source``: the image's path in the folder, as text. A name that is not UTF-8 (possible on
    Linux) shows its other bytes as ``\\xNN`` there and keeps its exact bytes in ``source_bytes``
    (hex): ``images_dir / os.fsdecode(bytes.fromhex(...))`` is the file again."""
    relative = path.relative_to(images_dir).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:  # os.walk gave the undecodable bytes as surrogates
        raw = os.fsencode(relative)
        return {"source": raw.decode("utf-8", "backslashreplace"), "source_bytes": raw.hex()}
    return {"source": relative}


def _save(run: _RunParts, result: ItemResult, path: Path, image_sha: str, key: str) -> None:
    source = source_fields(path, run.images_dir)
    result.extra.update(source=source["source"], key=key)
    if not result.ok:
        run.store.add_failure(
            {
                "key": key,
                "image_sha": image_sha,
                "prompt_sha": run.prompt.sha,
                **source,
                "status": result.status,
                "kind": result.extra.get("kind", result.status),
                **saved_fields("reason", result.reason),
                "answer": result.answer[:2000],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        return
    image = result.extra["image"]
    messages, objects = _answer_parts(run.prompt, result, path)
    run.store.add_record(
        {
            "id": key,
            "images": [image],
            "messages": messages,
            **({"objects": objects} if objects else {}),
            "meta": {
                "labeler": run.labeler.name,
                "prompt_sha": run.prompt.sha,
                "status": "ok",
                "key": key,
                "image_sha": image_sha,
                **source,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "cost_usd": round(result.cost_usd, 8),
                "seconds": round(result.seconds, 3),
                "retries": result.retries,
            },
        }
    )


def _answer_parts(prompt: PromptSpec, result: ItemResult, path: Path) -> tuple[list[dict], dict | None]:
    """The record's messages, and its ``objects`` when the answer lists boxes (the ``grounding`` preset)."""
    from lab.errors import BadImageError
    from lab.grounding import labeled_objects
    from lab.images import image_size

    if isinstance(result.parsed, dict) and "objects" in result.parsed:
        try:
            height, width = image_size(path)
        except BadImageError:
            height = width = 0
        grounded = labeled_objects(result.parsed, width, height) if width else None
        if grounded is not None:
            return prompt.record_messages(grounded[0]), grounded[1]
    return prompt.record_messages(result.answer), None


def run_labeling(images_dir, out_dir, prompt: PromptSpec, labeler: Labeler, **options) -> LabelRun:
    """:func:`label_folder` in the calling thread (the CLI's); same options. Errors are raised."""
    return asyncio.run(label_folder(images_dir, out_dir, prompt, labeler, **options))


def start_labeling(images_dir, out_dir, prompt: PromptSpec, labeler: Labeler, **options) -> LabelRun:
    """Start :func:`label_folder` in a background thread; read the returned :class:`LabelRun`, ``stop()`` it."""

    def work(run: LabelRun) -> None:
        asyncio.run(label_folder(images_dir, out_dir, prompt, labeler, run=run, **options))

    return start_job(work, LabelRun(out_dir))
