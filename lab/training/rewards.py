"""Reward functions for GRPO: built-in scores of an answer against its reference, and a person's own.

A GRPO run (``trainer: grpo``) scores every sampled answer with the functions named in
``rewards`` and learns from the weighted sum. An entry is a built-in name, or a Python file
and a function in it, each with an optional weight after a colon (1 when left out)::

    rewards: [json_valid, rouge_l:0.5, my_rewards.py:brevity:0.2]
    rewards: {json_valid: 1, rouge_l: 0.5}          # a mapping works too

Built-in rewards, each between 0 and 1 (the scores of :mod:`lab.evaluation.metrics`, so
Chinese is cut into words for BLEU and ROUGE-L as in Evaluate):

* ``json_valid``: the answer parses as JSON (a ```json fence allowed) of the reference's kind,
  an object for an object, a list for a list (a bare number is valid JSON too, and an easy
  reward to earn without doing the task);
* ``json_key_f1``: F1 of the answer's JSON key paths against the reference's;
* ``exact_match``: the answer equals the reference (whitespace collapsed);
* ``bleu``: sentence BLEU-4 against the reference;
* ``rouge_l``: ROUGE-L F-measure against the reference (``rougeL`` is read as ``rouge_l``);
* ``length``: closeness to ``target_length`` characters, ``1 - |n - target| / max(n, target)``;
* ``format``: the whole answer matches the regular expression ``reward_pattern``.

A function of your own takes the answers of a batch and their references and returns one
number per answer (higher is better)::

    def brevity(completions: list[str], references: list[str], **kw) -> list[float]:
        return [1.0 if len(c) <= 80 else 0.0 for c in completions]

``kw`` holds ``prompts`` (each answer's question: the last user message, ``<image>``
placeholders kept) and ``images`` (each answer's image paths); accept ``**kw`` so that
more can be passed later. The file is checked before the run starts (it exists, has the
function, and the function returns one number per answer on a small trial call). Such a
file runs code in the training process, so a shared deployment refuses it.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import ConfigError, LabError
from lab.yaml_files import closest

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

BUILT_IN = ("json_valid", "json_key_f1", "exact_match", "bleu", "rouge_l", "length", "format")
ALIASES = {"rougeL": "rouge_l", "rouge-l": "rouge_l", "rougel": "rouge_l"}
_FILE = re.compile(r"^(?P<path>.+\.py):(?P<function>[A-Za-z_]\w*)(?::(?P<weight>[^:]+))?$")

RewardFn = Callable[..., list]


@dataclass(frozen=True)
class RewardSpec:
    """One entry of ``rewards``: a built-in or a file's function, and its weight."""

    name: str  # what metrics.jsonl and the plot call it: the built-in's name, or "<file stem>:<function>"
    weight: float
    path: str | None = None  # the Python file of a function of one's own
    function: str | None = None


@dataclass
class Reward:
    """A reward ready to score: its name, weight and function."""

    name: str
    weight: float
    fn: RewardFn


# ---------------------------------------------------------------- reading the entries


def as_entries(value: Any) -> Any:
    """A YAML mapping ``{name: weight}`` as the list form ``["name:weight"]``; anything else as it is."""
    if isinstance(value, dict):
        return [f"{name}:{weight}" for name, weight in value.items()]
    return value


def parse_rewards(entries: list[str]) -> list[RewardSpec]:
    """Read the ``rewards`` entries; a name, a weight or a repeat that cannot be right is one :class:`ConfigError`."""
    specs = [_parse_entry(str(entry).strip()) for entry in entries]
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("rewards names '{name}' twice; give each reward once, with its weight.", name=name)
    return specs


def _parse_entry(entry: str) -> RewardSpec:
    found = _FILE.match(entry)
    if found:
        path, function = found.group("path"), found.group("function")
        weight = _weight(entry, found.group("weight"))
        return RewardSpec(f"{Path(path).stem}:{function}", weight, path, function)
    name, _, weight = entry.partition(":")
    name = ALIASES.get(name.strip(), name.strip())
    if name not in BUILT_IN:
        if name.endswith(".py") or "/" in name:
            raise ConfigError(
                "rewards has '{entry}': a reward from a file is written path/to/file.py:function.", entry=entry
            )
        raise ConfigError(
            "rewards has '{name}'{hint}; the built-in rewards are {names}, or give a function of your "
            "own as path/to/file.py:function.",
            name=name,
            hint=closest(name, BUILT_IN),
            names=", ".join(BUILT_IN),
        )
    return RewardSpec(name, _weight(entry, weight if weight else None))


def _weight(entry: str, text: str | None) -> float:
    if text is None:
        return 1.0
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise ConfigError("rewards has '{entry}', whose weight '{text}' is not a number.", entry=entry, text=text)
    return weight


# ---------------------------------------------------------------- the built-in rewards


def _json_valid(completions: list[str], references: list[str], **kw) -> list[float]:
    from lab.evaluation.metrics import parse_json

    out = []
    for completion, reference in zip(completions, references):
        parsed, wanted = parse_json(completion), parse_json(reference)
        kind_ok = not isinstance(wanted, (dict, list)) or isinstance(parsed, type(wanted))
        out.append(1.0 if parsed is not None and kind_ok else 0.0)
    return out


def _scaled(metric: Callable[[str, str], float]) -> RewardFn:
    """A reward from one of the evaluator's per-sample scores (0-100), scaled to 0-1."""

    def reward(completions: list[str], references: list[str], **kw) -> list[float]:
        return [metric(c, r) / 100.0 for c, r in zip(completions, references)]

    return reward


def _bleu(completions: list[str], references: list[str], **kw) -> list[float]:
    from sacrebleu.metrics import BLEU

    from lab.evaluation.metrics import bleu_tokenizer

    # The evaluator's choice, made for each reference: sacrebleu's zh tokenizer when it is Chinese.
    scorers = {name: BLEU(tokenize=name, effective_order=True) for name in ("zh", "13a")}
    return [scorers[bleu_tokenizer([r])].sentence_score(c, [r]).score / 100.0 for c, r in zip(completions, references)]


def _rouge_l(prediction: str, reference: str) -> float:
    from lab.evaluation.metrics import rouge_scores

    return rouge_scores(prediction, reference)["rouge_l"]


def length_reward(target: int) -> RewardFn:
    """1 at ``target`` characters, falling toward 0 for answers much shorter or longer."""

    def reward(completions: list[str], references: list[str], **kw) -> list[float]:
        return [1.0 - abs(len(c) - target) / max(len(c), target) for c in completions]

    return reward


def format_reward(pattern: str) -> RewardFn:
    """1 when the whole answer matches ``pattern`` (``.`` matches line breaks too), else 0."""
    compiled = re.compile(pattern, re.S)

    def reward(completions: list[str], references: list[str], **kw) -> list[float]:
        return [1.0 if compiled.fullmatch(c) else 0.0 for c in completions]

    return reward


def built_in(name: str, cfg: TrainConfig) -> RewardFn:
    """The function of built-in reward ``name``, with its settings from ``cfg``."""
    from lab.evaluation.metrics import exact_match, json_key_f1

    if name == "length":
        return length_reward(cfg.target_length)
    if name == "format":
        return format_reward(cfg.reward_pattern)
    return {
        "json_valid": _json_valid,
        "json_key_f1": _scaled(json_key_f1),
        "exact_match": _scaled(exact_match),
        "bleu": _bleu,
        "rouge_l": _scaled(_rouge_l),
    }[name]


def check_pattern(pattern: str | None) -> None:
    """A regular expression for the ``format`` reward, or one :class:`ConfigError` saying why it is not one."""
    if pattern is None:
        raise ConfigError("The format reward needs reward_pattern, the regular expression a good answer matches.")
    try:
        re.compile(pattern)
    except re.error as err:
        raise ConfigError("reward_pattern is not a regular expression: {err}.", err=err) from None


# ---------------------------------------------------------------- functions from a file


def _load_function(spec: RewardSpec) -> RewardFn:
    """Import the file of ``spec`` and return its function; each problem is one sentence."""
    from lab import paths

    path = paths.resolve(spec.path)
    if not path.is_file():
        raise ConfigError("Reward file {path} not found.", path=spec.path)
    module_name = f"lab_reward_{abs(hash(str(path)))}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module  # before it runs: a dataclass in the file looks its module up there
    try:
        loader.loader.exec_module(module)
    except Exception as err:  # the person's code: whatever it raises is a reason to show
        sys.modules.pop(module_name, None)
        raise ConfigError("Reward file {path} cannot be loaded: {err}", path=spec.path, err=_first_line(err)) from None
    fn = getattr(module, spec.function, None)
    if fn is None:
        raise ConfigError("Reward file {path} has no function {function}.", path=spec.path, function=spec.function)
    if not callable(fn):
        raise ConfigError("{function} in {path} is not a function.", path=spec.path, function=spec.function)
    return fn


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def checked_scores(reward: Reward, values: Any, n: int) -> list[float]:
    """``values`` as ``n`` finite floats, or a :class:`LabError` naming the reward and what it returned."""
    ok = (
        isinstance(values, (list, tuple))
        and len(values) == n
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )
    if not ok:
        shown = repr(values)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise LabError(
            "Reward function {name} must return a list of {n} numbers, one per answer; it returned {shown}.",
            name=reward.name,
            n=n,
            shown=shown,
        )
    return [float(v) for v in values]


TRIAL = dict(
    completions=['{"label": "cat"}', "A cat on a sofa."],
    references=['{"label": "cat"}', "A cat."],
    prompts=["<image>What is it?", "<image>Describe the picture."],
    images=[[], []],
)


def _trial_call(reward: Reward) -> None:
    """Call a function of one's own once on two made-up answers, so a mistake shows before the model loads."""
    try:
        values = reward.fn(TRIAL["completions"], TRIAL["references"], prompts=TRIAL["prompts"], images=TRIAL["images"])
    except Exception as err:  # the person's code
        raise ConfigError(
            "Reward function {name} failed on a trial call: {err}", name=reward.name, err=_first_line(err)
        ) from None
    try:
        checked_scores(reward, values, len(TRIAL["completions"]))
    except LabError as err:
        raise ConfigError(err.msg) from None  # dynamic template: the sentence checked_scores made


# ---------------------------------------------------------------- loading and scoring


def load_rewards(cfg: TrainConfig) -> list[Reward]:
    """The rewards of ``cfg``, ready to score: functions from files imported and tried once.

    On a shared deployment a file is refused before it is looked at: it would run code on the server.
    So is the format reward: a visitor's regular expression can backtrack for hours on one answer.
    """
    from lab.paths import restricted

    specs = parse_rewards(cfg.rewards)
    if restricted() and any(spec.path for spec in specs):
        raise ConfigError(
            "This shared deployment accepts only the built-in rewards ({names}): a reward from a "
            "Python file would run code on the server.",
            names=", ".join(BUILT_IN),
        )
    if restricted() and any(spec.name == "format" for spec in specs):
        raise ConfigError(
            "This shared deployment does not run the format reward: a regular expression typed by a visitor "
            "can keep the server busy for hours on one answer. Use json_valid, json_key_f1, exact_match, bleu, "
            "rouge_l or length."
        )
    rewards = []
    for spec in specs:
        if spec.path is None:
            rewards.append(Reward(spec.name, spec.weight, built_in(spec.name, cfg)))
            continue
        reward = Reward(spec.name, spec.weight, _load_function(spec))
        _trial_call(reward)
        rewards.append(reward)
    return rewards


def score(rewards: list[Reward], completions: list[str], references: list[str], **kw) -> tuple[list[float], dict]:
    """``(total per answer, {reward name: scores per answer})``: the total is the weighted sum."""
    per_reward = {}
    for reward in rewards:
        try:
            values = reward.fn(completions, references, **kw)
        except Exception as err:  # a function of one's own failing mid-run: name it
            raise LabError("Reward function {name} failed: {err}", name=reward.name, err=_first_line(err)) from None
        per_reward[reward.name] = checked_scores(reward, values, len(completions))
    totals = [sum(r.weight * per_reward[r.name][i] for r in rewards) for i in range(len(completions))]
    return totals, per_reward
