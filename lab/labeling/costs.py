"""What labeling costs: a price table a person can edit, per-item cost, run estimates.

Prices live in ``presets/prices.yaml`` (US dollars per million tokens); entries in
``<workspace>/presets/prices.yaml`` win over the bundled ones, so a user can correct a
price without touching the checkout. A run records the tokens the API reports and
prices them; before a run, :func:`estimate_run` guesses from image sizes and prompt
length, which is honest about being a guess (its ``note`` says what it assumed).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ConfigError
from lab.paths import PRESETS_DIR, workspace
from lab.text import Msg
from lab.yaml_files import check_keys, load_yaml_strict

PRICE_KEYS = ("input", "output", "image")
IMAGE_RULE_KEYS = ("tiles", "base", "per_tile", "patches", "multiplier", "max_patches")
_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")
# When nothing better is known (no earlier records, no preview): a caption is short, a
# JSON description longer.
DEFAULT_COMPLETION_TOKENS = {False: 80, True: 300}


@dataclass(frozen=True)
class Price:
    """Dollars per million input and output tokens, and how the model counts image tokens."""

    model: str
    input: float
    output: float
    image: dict | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of one request in US dollars."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


FREE = Price("local", 0.0, 0.0)


def bundled_prices_file() -> Path:
    """The price table that ships with the lab."""
    return PRESETS_DIR / "prices.yaml"


def user_prices_file() -> Path:
    """The user's own prices, laid over the bundled ones."""
    return workspace() / "presets" / "prices.yaml"


def load_price_table() -> dict[str, Price]:
    """The bundled prices with the user's file laid over them; a malformed entry is a ConfigError."""
    table: dict[str, Price] = {}
    for path in (bundled_prices_file(), user_prices_file()):
        if path.is_file():
            table.update(_read_prices(path))
    return table


def _read_prices(path: Path) -> dict[str, Price]:
    data = load_yaml_strict(path, ("models",))
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise ConfigError("{path}: 'models' must map model names to prices.", path=path)
    table = {}
    for name, entry in models.items():
        where = Msg("the price of '{name}' in {path}", name=name, path=path)
        if not isinstance(entry, dict):
            raise ConfigError("{where} must be a mapping with input and output.", where=where)
        check_keys(entry, PRICE_KEYS, where)
        image = entry.get("image")
        if image is not None:
            if not isinstance(image, dict):
                raise ConfigError("'image' in {where} must be a mapping, like {{patches: 28}}.", where=where)
            check_keys(image, IMAGE_RULE_KEYS, Msg("'image' of {where}", where=where))
        try:
            table[str(name)] = Price(str(name), float(entry.get("input", 0)), float(entry.get("output", 0)), image)
        except (TypeError, ValueError):
            raise ConfigError(
                "{where}: input and output must be numbers (dollars per million tokens).", where=where
            ) from None
    return table


def price_for(model: str, table: dict[str, Price] | None = None) -> Price | None:
    """The price of ``model``: an exact entry, else the longest matching ``name*`` entry, else None."""
    table = load_price_table() if table is None else table
    if model in table:
        return table[model]
    matches = [name for name in table if "*" in name and fnmatch.fnmatchcase(model, name)]
    return table[max(matches, key=len)] if matches else None


def text_tokens(text: str) -> int:
    """A rough token count without a tokenizer: a Chinese character ~1 token, other text ~4 characters."""
    cjk = len(_CJK.findall(text or ""))
    return cjk + math.ceil((len(text or "") - cjk) / 4)


def size_within_budget(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The size :func:`lab.images.downscale` gives a ``width`` x ``height`` image."""
    if not max_pixels or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def image_tokens(width: int, height: int, rule: dict | None) -> int:
    """Tokens one picture costs under a price entry's ``image`` rule (Qwen-style 28 px patches if none)."""
    rule = rule or {"patches": 28}
    if "tiles" in rule:
        tile = int(rule["tiles"])
        scale = min(1.0, 2048 / max(width, height))
        w, h = width * scale, height * scale
        scale = min(1.0, 768 / min(w, h))
        tiles = math.ceil(w * scale / tile) * math.ceil(h * scale / tile)
        return int(rule.get("base", 85) + rule.get("per_tile", 170) * tiles)
    patch = int(rule.get("patches", 28))
    count = math.ceil(width / patch) * math.ceil(height / patch)
    count = min(count, int(rule.get("max_patches", count)))
    return math.ceil(count * float(rule.get("multiplier", 1.0)))


@dataclass
class Estimate:
    """The expected cost of labeling ``todo`` more images (``priced`` False: no price known)."""

    images: int
    todo: int
    prompt_tokens: int  # per image
    completion_tokens: int  # per image
    cost_usd: float
    priced: bool
    note: Msg  # what was assumed, in both languages

    def summary(self) -> Msg:
        """One sentence: how many images, tokens each, the cost and what was assumed."""
        cost = Msg("about ${cost_usd:.4f}", cost_usd=self.cost_usd) if self.priced else Msg("cost unknown")
        return Msg(
            "{todo} of {images} images to label, ~{prompt_tokens} + {completion_tokens} tokens each: {cost}. {note}",
            todo=self.todo,
            images=self.images,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=cost,
            note=self.note,
        )


def estimate_run(
    sizes: Iterable[tuple[int, int]],
    *,
    system: str,
    user: str,
    model: str,
    images: int,
    todo: int,
    max_pixels: int | None = None,
    completion_tokens: int | None = None,
    want_json: bool = False,
    price: Price | None = None,
) -> Estimate:
    """Estimate a run from the sizes of (a sample of) the images still to label."""
    price = price if price is not None else price_for(model)
    rule = price.image if price else None
    per_image = [image_tokens(*size_within_budget(w, h, max_pixels), rule) for w, h in sizes]
    image_part = round(sum(per_image) / len(per_image)) if per_image else 0
    prompt = image_part + text_tokens(system) + text_tokens(user) + 10  # message framing
    measured = completion_tokens is not None
    completion = completion_tokens if measured else DEFAULT_COMPLETION_TOKENS[bool(want_json)]
    cost = price.cost(prompt, completion) * todo if price else 0.0
    if measured:
        note = Msg("answer length measured on earlier answers.")
    else:
        note = Msg(
            "answer length assumed ({completion} tokens); run a preview for a better estimate.", completion=completion
        )
    if price is None:
        note = Msg(
            "no price for '{model}' in presets/prices.yaml; add one to see costs. {note}", model=model, note=note
        )
    return Estimate(images, todo, prompt, completion, cost, price is not None, note)
