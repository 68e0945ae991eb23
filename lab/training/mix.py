"""Several datasets in one run: which samples each one gives, reproducibly.

A run's ``dataset`` is one path or a list of entries, each a path with an optional
``:`` and a number after it::

    dataset: [data/sample, data/sample/data_json_en.jsonl:0.5, data/other:200]

A number with a point scales the dataset (``0.5`` takes half of its samples, ``2.0``
each sample twice); a whole number takes exactly that many samples (every sample once
and then some again, when the dataset has fewer). Each dataset is split first, by
``val_ratio`` and ``seed`` (:func:`lab.dataset.split_dataset`, so no sample is on both
sides), then its training part is scaled and its validation part by the same share, so
the validation split comes from each dataset in proportion to what the run takes from
it (never repeating a validation sample). The samples taken are drawn with ``seed``:
the same config gives the same mix. :func:`mixed_splits` returns the records and, per
entry, how many were available and taken, which the run keeps in ``data_mix.json``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ConfigError

MIX_FILE = "data_mix.json"
_NUMBER = re.compile(r"^\d+(\.\d*)?$|^\.\d+$")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a run: its path, and a scale (``weight``) or a sample count (``samples``), or neither."""

    path: str
    weight: float | None = None
    samples: int | None = None

    def text(self) -> str:
        """The entry as the config writes it: ``path``, ``path:0.5`` or ``path:200``."""
        if self.samples is not None:
            return f"{self.path}:{self.samples}"
        if self.weight is not None:
            return f"{self.path}:{self.weight!r}"
        return self.path


def parse_entry(text: str) -> DatasetEntry:
    """``data/a`` -> the whole dataset; ``data/a:0.5`` -> scaled; ``data/a:200`` -> 200 samples."""
    text = str(text).strip()
    path, sep, number = text.rpartition(":")
    if not sep or not _NUMBER.match(number.strip()):
        path, number = text, ""
    path = path.strip()
    if not path:
        raise ConfigError(
            "dataset entry '{text}' names no dataset; write a path, then :0.5 or :200 if you like.", text=text
        )
    if not number:
        return DatasetEntry(path)
    if "." in number:
        weight = float(number)
        if weight <= 0:
            raise ConfigError(
                "dataset entry '{text}' scales its dataset by {weight}; use a number above 0.", text=text, weight=weight
            )
        return DatasetEntry(path, weight=weight)
    samples = int(number)
    if samples < 1:
        raise ConfigError("dataset entry '{text}' takes no samples; use at least 1.", text=text)
    return DatasetEntry(path, samples=samples)


def entry_from_mapping(item: dict) -> str:
    """A YAML mapping entry (``{path: data/b, weight: 0.5}`` or ``{path: data/c, samples: 200}``) as its text."""
    unknown = set(item) - {"path", "weight", "samples"}
    if unknown or "path" not in item or ("weight" in item and "samples" in item):
        raise ConfigError(
            "dataset entry {item} must be a path, or a mapping with path and one of weight or samples.", item=item
        )
    if "weight" in item:
        return f"{item['path']}:{float(item['weight'])!r}"
    if "samples" in item:
        return f"{item['path']}:{int(item['samples'])}"
    return str(item["path"])


def normalize_datasets(value):
    """``dataset`` as the config keeps it: mapping entries of a YAML list become their text."""
    if isinstance(value, (list, tuple)):
        return [entry_from_mapping(item) if isinstance(item, dict) else item for item in value]
    return value


def dataset_entries(value: str | list[str]) -> list[DatasetEntry]:
    """The entries of a config's ``dataset`` (one path or a list); the same path twice is refused."""
    items = value if isinstance(value, list) else [value]
    entries = [parse_entry(item) for item in items]
    seen: set[str] = set()
    for entry in entries:
        if entry.path in seen:
            raise ConfigError(
                "dataset lists {path} twice; give each dataset once, with a weight if it should count more.",
                path=entry.path,
            )
        seen.add(entry.path)
    if not entries:
        raise ConfigError("dataset is empty; give a dataset folder or a .jsonl file.")
    return entries


def _wanted(entry: DatasetEntry, available: int) -> int:
    if entry.samples is not None:
        return entry.samples if available else 0
    if entry.weight is not None:
        return round(entry.weight * available)
    return available


def _draw(records: list, count: int, rng: random.Random) -> list:
    """``count`` of ``records``: every one as often as fits, the rest drawn without repeats, file order kept."""
    if not records or count <= 0:
        return []
    rounds, rest = divmod(count, len(records))
    picked = sorted(rng.sample(range(len(records)), rest))
    return records * rounds + [records[i] for i in picked]


def _share_of(val: list, taken: int, available: int, rng: random.Random) -> list:
    """The validation records in the share the training part was taken in, each at most once."""
    if not val or not available or not taken:
        return []
    count = min(len(val), max(1, round(len(val) * taken / available)))
    return _draw(val, count, rng)


def mixed_splits(value: str | list[str], val_ratio: float, seed: int, with_val: bool = True):
    """``(train, val, mix)``: the records of every dataset entry (image and video paths absolute) and what each gave.

    ``with_val`` False leaves validation to another set (``val_dataset``): each dataset is
    then used whole for training.
    """
    from lab.dataset import absolute_media, dataset_root, split_dataset
    from lab.training.data import resolve_dataset

    train, val, mix = [], [], []
    for index, entry in enumerate(dataset_entries(value)):
        path = resolve_dataset(entry.path)
        part_train, part_val = split_dataset(path, val_ratio if with_val else 0.0, seed)
        rng = random.Random(f"{seed}\0{index}\0{entry.path}")
        taken = _draw(part_train, _wanted(entry, len(part_train)), rng)
        held = _share_of(part_val, len(taken), len(part_train), rng)
        root = dataset_root(path)
        train += [absolute_media(r, root) for r in taken]
        val += [absolute_media(r, root) for r in held]
        mix.append(
            {
                "dataset": entry.path,
                "weight": entry.weight,
                "samples": entry.samples,
                "train_available": len(part_train),
                "val_available": len(part_val),
                "train": len(taken),
                "val": len(held),
            }
        )
    return train, val, mix


def write_data_mix(run_dir: Path, mix: list[dict]) -> None:
    """``data_mix.json``: per dataset of the run, the samples it had and the samples taken (train and validation)."""
    (run_dir / MIX_FILE).write_text(json.dumps(mix, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
