"""Labeling one image: prepare it, ask the labeler, judge the answer, price it.

Shared by the prompt preview and the batch run, so both see the same statuses:
``ok``, ``invalid`` (unusable answer), ``refused``, ``failed`` (HTTP error, timeout,
malformed response) and ``bad_image`` (the file could not be used).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lab.errors import BadImageError
from lab.labeling.answers import check_answer, reask_message
from lab.labeling.costs import Price
from lab.presets import prompt_sha, with_image_placeholder
from lab.text import Msg


class LabelFailure(Exception):
    """A request that failed for good (after the retries); ``kind`` is e.g. ``http_500`` or ``timeout``.

    ``reason`` is a :class:`~lab.text.Msg`, so the page can show it in Chinese.
    """

    def __init__(self, kind: str, reason: Msg, retries: int = 0):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retries = retries


@dataclass
class Reply:
    """One answer from a labeler, with what it cost in tokens and time."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0
    finish_reason: str | None = None
    refusal: str | None = None


class Labeler(Protocol):
    """What the batch run needs from a labeler (an API model or the loaded local model)."""

    name: str
    concurrency: int
    price: Price | None
    reask: bool

    def prepare(self, path: Path) -> Any:
        """Open and encode an image for :meth:`ask` (runs in a worker thread); raises BadImageError."""

    async def ask(self, prepared: Any, system: str, user: str, history: list[tuple[str, str]] = ()) -> Reply:
        """Answer ``user`` about the image; ``history`` holds (answer, follow-up) pairs; raises LabelFailure."""


@dataclass(frozen=True)
class PromptSpec:
    """The prompt a run asks with, and what a good answer looks like."""

    system: str
    user: str
    want_json: bool = False
    expected_keys: tuple[str, ...] = ()

    @property
    def sha(self) -> str:
        return prompt_sha(self.system, self.user)

    @classmethod
    def from_preset(cls, preset, lang: str = "en") -> PromptSpec:
        system, user, keys = preset.prompt(lang)
        return cls(system, user, bool(preset.json), tuple(keys))

    @classmethod
    def from_job(cls, job: dict) -> PromptSpec:
        """The prompt saved in a dataset's ``label_job.json``."""
        saved = job["prompt"]
        return cls(
            saved["system"], saved["user"], bool(saved.get("want_json")), tuple(saved.get("expected_keys") or ())
        )

    def record_messages(self, answer: str) -> list[dict]:
        """The dataset's messages for one labeled image (``<image>`` marks where it goes)."""
        messages = [{"role": "system", "content": self.system}] if self.system.strip() else []
        messages.append({"role": "user", "content": with_image_placeholder(self.user)})
        messages.append({"role": "assistant", "content": answer})
        return messages


@dataclass
class ItemResult:
    """The outcome for one image; ``reason`` (why it is not ``ok``) is a :class:`~lab.text.Msg`."""

    source: str
    status: str
    answer: str = ""
    reason: Msg | None = None
    parsed: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    retries: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


async def label_one(labeler: Labeler, prompt: PromptSpec, path: Path, executor: Executor | None = None) -> ItemResult:
    """Label the image at ``path``; never raises for a bad image or a failed request."""
    start = time.perf_counter()
    result = ItemResult(source=str(path), status="failed")
    try:
        prepared = await asyncio.get_running_loop().run_in_executor(executor, labeler.prepare, Path(path))
        reply = await labeler.ask(prepared, prompt.system, prompt.user)
        _add(result, reply)
        verdict = _judge(reply, prompt)
        if verdict.status == "invalid" and labeler.reask and prompt.want_json:
            reply = await labeler.ask(
                prepared,
                prompt.system,
                prompt.user,
                [(reply.text, reask_message(verdict.reason, prompt.expected_keys))],
            )
            _add(result, reply)
            verdict = _judge(reply, prompt)
        result.status, result.answer, result.reason, result.parsed = (
            verdict.status,
            verdict.text,
            verdict.reason,
            verdict.parsed,
        )
    except BadImageError as err:
        result.status, result.reason = "bad_image", err.reason
    except LabelFailure as err:
        result.reason = err.reason
        result.retries += err.retries
        result.extra["kind"] = err.kind
    if labeler.price is not None:
        result.cost_usd = labeler.price.cost(result.prompt_tokens, result.completion_tokens)
    result.seconds = time.perf_counter() - start
    return result


def _judge(reply: Reply, prompt: PromptSpec):
    return check_answer(
        reply.text,
        want_json=prompt.want_json,
        expected_keys=prompt.expected_keys,
        refusal=reply.refusal,
        finish_reason=reply.finish_reason,
    )


def _add(result: ItemResult, reply: Reply) -> None:
    result.prompt_tokens += reply.prompt_tokens
    result.completion_tokens += reply.completion_tokens
    result.retries += reply.retries
