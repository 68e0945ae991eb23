"""The training and validation samples of a run, tokenized and checked before training starts.

Every sample is encoded once here (see :mod:`lab.training.encode`), so its length is
known up front. A sample longer than ``max_length`` is never truncated: cutting it would
cut image tokens (the model then fails on a mismatch between image features and
placeholders) or the answer. With ``overlong: drop`` it is left out and counted; with
``overlong: error`` the run is refused with a sentence naming the sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import paths
from lab.dataset import absolute_media, dataset_root, load_records
from lab.errors import BadImageError, ConfigError, DatasetError
from lab.text import Msg, msg_of
from lab.training.encode import EncodedSample, encode_sample, image_token_id
from lab.training.identity import identity_records
from lab.training.mix import dataset_entries, mixed_splits

if TYPE_CHECKING:
    from lab.train_config import TrainConfig


@dataclass
class TrainingData:
    """Encoded train and validation samples, and what was left out and why."""

    train: list[EncodedSample]
    val: list[EncodedSample]
    dropped: list[tuple[str, Msg]] = field(default_factory=list)  # (sample key, reason)
    mix: list[dict] = field(default_factory=list)  # per dataset: available and taken (lab.training.mix)
    val_records: list[dict] = field(default_factory=list)  # the validation records, for answers while training

    def summary(self) -> str:
        """One line for the log: counts, token lengths and dropped samples."""
        lengths = [s.length for s in self.train]
        line = (
            f"{len(self.train)} training and {len(self.val)} validation samples, "
            f"{min(lengths)}-{max(lengths)} tokens each"
        )
        if self.dropped:
            reasons: dict[str, int] = {}
            for _, reason in self.dropped:
                kind = str(reason).split(":")[0]
                reasons[kind] = reasons.get(kind, 0) + 1
            line += "; left out " + ", ".join(f"{n} ({kind})" for kind, n in reasons.items())
        return line


def resolve_dataset(path: str) -> Path:
    """A dataset path from a config, found as :func:`lab.paths.resolve` finds it (workspace, then checkout)."""
    found = paths.resolve(path)
    if not found.exists():
        raise DatasetError("Dataset {path} not found (looked in {workspace}).", path=path, workspace=paths.workspace())
    return found


def check_datasets(cfg: TrainConfig) -> None:
    """Refuse a missing dataset, one a shared deployment may not read, one that does not parse or one
    without a record, before a run is started or queued, its folder made or its model loaded."""
    for path in [entry.path for entry in dataset_entries(cfg.dataset)] + [cfg.val_dataset]:
        if path and not load_records(resolve_dataset(path)):
            raise DatasetError("{path} has no records to train on; label or import some first.", path=path)


def _absolute(records: list[dict], root: Path) -> list[dict]:
    return [absolute_media(r, root) for r in records]


def load_splits(cfg: TrainConfig) -> tuple[list[dict], list[dict]]:
    """Train and validation records (image paths made absolute), per ``val_dataset`` or ``val_ratio``."""
    train, val, _ = load_mixed_splits(cfg)
    return train, val


def load_mixed_splits(cfg: TrainConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """:func:`load_splits` and what each dataset gave (:func:`lab.training.mix.mixed_splits`)."""
    train, val, mix = mixed_splits(cfg.dataset, cfg.val_ratio, cfg.seed, with_val=not cfg.val_dataset)
    if cfg.val_dataset:
        val_path = resolve_dataset(cfg.val_dataset)
        val = _absolute(load_records(val_path), dataset_root(val_path))
    if cfg.identity:
        train = train + identity_records(cfg.model_name, cfg.model_author)
    return train, val, mix


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """``messages`` with their system prompt replaced by ``system`` (None keeps theirs)."""
    if system is None:
        return messages
    return [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]


def build_data(
    cfg: TrainConfig, processor: Any, log: Callable[[str], None] = print, family: str | None = None
) -> TrainingData:
    """Encode the run's samples; drop or refuse overlong ones per ``cfg.overlong``.

    ``family`` (the model's ``model_type``) decides how boxes are written and whether videos can be used.
    """
    train_records, val_records, mix = load_mixed_splits(cfg)
    dropped: list[tuple[str, Msg]] = []
    train = _encode_all(train_records, cfg, processor, dropped, family)
    val = _encode_all(val_records, cfg, processor, dropped, family)
    data = TrainingData(train, val, dropped, mix, val_records)
    if not train:
        first = Msg("")
        if dropped:
            key, reason = dropped[0]
            first = Msg(" (first: sample {key}: {reason})", key=key, reason=reason)
        raise DatasetError(
            "No training samples are left out of {n_train_records}{first}.",
            n_train_records=len(train_records),
            first=first,
        )
    log(data.summary())
    for key, reason in dropped[:5]:
        log(f"  left out sample {key}: {str(reason)}")
    return data


def _encode_all(
    records: list[dict], cfg: TrainConfig, processor: Any, dropped: list, family: str | None
) -> list[EncodedSample]:
    from lab.video import VIDEO_FAMILIES, VideoBudget

    placeholder = image_token_id(processor)
    budget = VideoBudget.of(cfg)
    samples = []
    for index, record in enumerate(records):
        key = str(record.get("id", f"#{index + 1}"))
        if record.get("videos") and family not in VIDEO_FAMILIES:
            dropped.append((key, Msg("a video, which {family} models cannot take", family=family or "other")))
            continue
        try:
            sample = encode_sample(
                processor,
                key,
                with_system(record["messages"], cfg.system),
                record["images"],
                objects=record.get("objects"),
                videos=record.get("videos") or [],
                family=family,
                video_budget=budget,
            )
        except DatasetError as err:  # a video that cannot be read; the sentence names it
            dropped.append((key, msg_of(err)))
            continue
        except BadImageError as err:
            dropped.append((key, Msg("unreadable image: {err}", err=err)))
            continue
        except ValueError as err:
            dropped.append((key, Msg("cannot be encoded: {err}", err=err)))
            continue
        if sample.num_targets == 0:
            dropped.append((key, Msg("no answer tokens")))
        elif sample.length > cfg.max_length:
            if cfg.overlong == "error":
                n_image = sample.input_ids.count(placeholder)
                raise ConfigError(
                    "Sample {key} needs {length} tokens ({n_image} of them for its images) but max_length is "
                    "{max_length}; raise max_length to at least {length}, lower max_pixels, "
                    "or set overlong to drop.",
                    key=key,
                    length=sample.length,
                    n_image=n_image,
                    max_length=cfg.max_length,
                )
            dropped.append(
                (
                    key,
                    Msg(
                        "overlong: {length} tokens > max_length {max_length}",
                        length=sample.length,
                        max_length=cfg.max_length,
                    ),
                )
            )
        else:
            samples.append(sample)
    return samples
