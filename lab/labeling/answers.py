"""Judging a labeler's answer before it becomes a training record.

A strong model asked for JSON still wraps it in a Markdown fence now and then, adds a
sentence before it, or refuses. Only a clean answer should be trained on::

    >>> check_answer('```json\\n{"label": "cart", "reason": "a cart"}\\n```', want_json=True,
    ...              expected_keys=["reason", "label"]).text
    '{"label": "cart", "reason": "a cart"}'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lab.text import Msg

_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?(.*?)\n?[ \t]*```", re.S)

# Refusals are short and start the answer; matching only there keeps a caption that
# merely quotes "I can't" from being thrown away.
_REFUSAL_STARTS = re.compile(
    r"^\s*(?:i['’]m sorry|i am sorry|sorry,|i apologi[sz]e|unfortunately,? i|as an ai)"
    r"|^\s*i (?:can(?:no|')t|cannot|am unable to|won['’]t) "
    r"(?:help|assist|comply|provide|describe|identify|analy[sz]e|process|view|see)"
    r"|^\s*(?:抱歉|对不起|很抱歉|非常抱歉|我无法|我不能)",
    re.I,
)
_REFUSAL_MAX_CHARS = 300
EMPTY_ANSWER = Msg("empty answer")
CUT_OFF = Msg("answer cut off at the max tokens limit")


@dataclass
class Verdict:
    """What an answer is worth: ``ok``, ``invalid`` (with ``reason``) or ``refused``."""

    status: str
    text: str
    reason: Msg | None = None  # why it is not ok, in every language
    parsed: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def strip_fences(text: str) -> str:
    """The inside of the first Markdown code fence, or ``text`` itself (trimmed) if there is none."""
    match = _FENCE.search(text)
    return match.group(1).strip() if match else text.strip()


def parse_json_answer(text: str) -> Any:
    """Parse a JSON answer, forgiving a code fence or words around the object; raises ``ValueError``.

    The error's only argument is a :class:`~lab.text.Msg`: the reason in both languages.
    """
    body = strip_fences(text)
    try:
        return json.loads(body)
    except json.JSONDecodeError as first:
        # "Here is the JSON: {...}" — take the outermost object if it parses on its own.
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(body[start : end + 1])
            except json.JSONDecodeError:
                pass
        raise ValueError(
            Msg(
                "not valid JSON ({first_msg} at line {lineno} column {colno})",
                first_msg=first.msg,
                lineno=first.lineno,
                colno=first.colno,
            )
        ) from None


def json_body(text: str) -> str:
    """The JSON text worth keeping from an answer: fences and surrounding words removed."""
    body = strip_fences(text)
    start, end = body.find("{"), body.rfind("}")
    if body.startswith("{") or start < 0:
        return body
    return body[start : end + 1]


def missing_keys(parsed: Any, expected_keys: list[str] | tuple[str, ...]) -> list[str]:
    """The expected top-level keys that ``parsed`` lacks (all of them if it is not an object)."""
    if not isinstance(parsed, dict):
        return list(expected_keys)
    return [key for key in expected_keys if key not in parsed]


def looks_like_refusal(text: str) -> bool:
    """Whether a (short) answer reads as the model declining the task."""
    return len(text) <= _REFUSAL_MAX_CHARS and bool(_REFUSAL_STARTS.search(text))


def check_answer(
    text: str | None,
    *,
    want_json: bool = False,
    expected_keys: list[str] | tuple[str, ...] = (),
    refusal: str | None = None,
    finish_reason: str | None = None,
) -> Verdict:
    """Judge one answer; ``refusal`` and ``finish_reason`` are what the API said besides the text.

    The verdict's ``reason`` is a :class:`~lab.text.Msg`.
    """
    text = (text or "").strip()
    if refusal or finish_reason == "content_filter":
        return Verdict(
            "refused", text, Msg("refused: {refusal}", refusal=refusal or Msg("blocked by the content filter"))
        )
    if not text:
        return Verdict("invalid", text, EMPTY_ANSWER)
    if finish_reason == "length":
        return Verdict("invalid", text, CUT_OFF)
    if looks_like_refusal(text):
        return Verdict("refused", text, Msg("refused: {text}", text=text[:120]))
    if not want_json:
        return Verdict("ok", text)
    try:
        parsed = parse_json_answer(text)
    except ValueError as err:
        reason = err.args[0] if err.args and isinstance(err.args[0], Msg) else Msg("{err}", err=err)
        return Verdict("invalid", text, reason)
    if not isinstance(parsed, dict):
        return Verdict(
            "invalid", text, Msg("JSON is a {parsed_type}, not an object", parsed_type=type(parsed).__name__), parsed
        )
    missing = missing_keys(parsed, expected_keys)
    if missing:
        return Verdict("invalid", text, Msg("JSON lacks the key(s) {missing}", missing=", ".join(missing)), parsed)
    return Verdict("ok", json_body(text), parsed=parsed)


def reask_message(reason: Msg, expected_keys: list[str] | tuple[str, ...]) -> str:
    """The follow-up that asks once more for a clean JSON object after an invalid one (in English, for the model)."""
    keys = f" with the keys {', '.join(expected_keys)}" if expected_keys else ""
    return f"Your answer was not usable ({str(reason)}). Reply again with only the JSON object{keys}, nothing else."
