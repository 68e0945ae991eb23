"""Run folders: where a run lives, what it is, how far it got, and how to reproduce it.

A run folder (``checkpoints/<run>/``) holds ``config.yaml`` (the fully resolved
config), ``metrics.jsonl``, the adapter or model files with the processor, and
``checkpoint-N/`` folders. Everything here reads those files only, so it describes runs
of this process, of a CLI in another terminal and of a multi-GPU subprocess alike.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab import paths
from lab.errors import ConfigError, ModelLoadError
from lab.jobs import JobState
from lab.text import Msg, read_saved
from lab.training.metrics import last_event, log_rows, read_metrics

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

CONFIG_FILE = "config.yaml"
ADAPTER_CONFIG = "adapter_config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_UNSAFE = re.compile(r"[^\w.-]+")
_NAME = re.compile(r"\w[\w.-]*")


def runs_root(cfg: TrainConfig | None = None) -> Path:
    """The folder that holds run folders: ``cfg.output_dir`` (relative to the workspace), else the default."""
    output_dir = getattr(cfg, "output_dir", None) or "checkpoints"
    path = Path(output_dir).expanduser()
    return path if path.is_absolute() else paths.workspace() / path


def default_run_name(cfg: TrainConfig) -> str:
    """``<model>-<method>-<date-time>``, e.g. ``Qwen2.5-VL-3B-Instruct-lora-20261118-153012``."""
    model = _UNSAFE.sub("-", Path(str(cfg.model).rstrip("/")).name).strip("-") or "model"
    return f"{model}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_dir_for(cfg: TrainConfig) -> Path:
    """The run folder of ``cfg`` (its ``run_name`` must be set); on a shared deployment inside the workspace."""
    if not cfg.run_name or not _NAME.fullmatch(cfg.run_name):
        raise ConfigError(
            "run_name {run_name!r} must be a plain folder name (letters, digits, '.', '-', '_').", run_name=cfg.run_name
        )
    return paths.under(runs_root(cfg), cfg.run_name, write=True)


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's ``checkpoint-N`` folders, by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The last complete checkpoint (one with its trainer state), or None."""
    complete = [p for p in checkpoints(run_dir) if (p / "trainer_state.json").is_file()]
    return complete[-1] if complete else None


def load_run_config(run_dir: str | Path):
    """The run's saved ``TrainConfig``."""
    from lab.train_config import TrainConfig

    return TrainConfig.from_yaml(_config_file(run_dir))


def config_text(run_dir: str | Path) -> str:
    """The run's ``config.yaml`` as it was saved, to show it."""
    return _config_file(run_dir).read_text(encoding="utf-8")


def _config_file(run_dir: str | Path) -> Path:
    path = paths.check_allowed(Path(run_dir) / CONFIG_FILE)
    if not path.is_file():
        raise ConfigError(
            "{run_dir} is not a training run: it has no {config_file}.", run_dir=run_dir, config_file=CONFIG_FILE
        )
    return path


@dataclass
class RunInfo:
    """A run at a glance, for the runs table and ``describe``."""

    name: str
    path: Path
    status: JobState  # running (or died without a word), finished, stopped, failed, new
    step: int
    total_steps: int | None
    loss: float | None  # the last logged training loss
    eval_loss: float | None
    method: str
    model: str
    dataset: str
    started: float  # folder creation time, seconds since the epoch
    message: Msg | str = Msg("")  # why the run failed (older runs: the English text)

    def row(self) -> list:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))
        total = f"{self.step}/{self.total_steps}" if self.total_steps else str(self.step)
        return [self.name, self.status, self.method, self.model, total, _fmt(self.loss), _fmt(self.eval_loss), when]


RUN_COLUMNS = ["run", "status", "method", "model", "step", "loss", "eval loss", "started"]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


_EVENT_STATES = {
    "start": JobState.RUNNING,
    "end": JobState.FINISHED,
    "stop": JobState.STOPPED,
    "error": JobState.FAILED,
}


def describe_run(run_dir: str | Path) -> RunInfo:
    """Read a run folder into a :class:`RunInfo`."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    rows = log_rows(records)
    event = last_event(records) or {}
    status = _EVENT_STATES.get(event.get("event"), JobState.NEW)
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
    starts = [r for r in records if r.get("event") == "start"]
    try:
        config = load_run_config(run_dir).to_dict()
    except ConfigError:
        config = {}
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        status=status,
        step=max((r["step"] for r in rows), default=int(event.get("step") or 0)),
        total_steps=starts[-1].get("total_steps") if starts else None,
        loss=losses[-1] if losses else None,
        eval_loss=evals[-1] if evals else None,
        method=str(config.get("method", "?")),
        model=str(config.get("model", "?")),
        dataset=str(config.get("dataset", "?")),
        started=run_dir.stat().st_ctime,
        message=read_saved(event, "message"),  # older runs saved the English only (and message_zh)
    )


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Every run folder (one with a ``config.yaml``) under ``root``, newest first."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    found = [describe_run(p) for p in root.iterdir() if paths.is_allowed(p) and (p / CONFIG_FILE).is_file()]
    return sorted(found, key=lambda info: info.started, reverse=True)


def train_command(cfg: TrainConfig, base_preset: str = "lora") -> str:
    """The CLI line that reproduces ``cfg``: a preset plus the settings that differ from it."""
    overrides = cfg.cli_overrides(base_preset)
    line = ["python", "-m", "lab", "train", "--preset", base_preset]
    if overrides:
        line += ["--set", *overrides]
    return " ".join(shlex.quote(part) for part in line)


@dataclass
class RunProgress:
    """Where a run stands, read from its metrics file (so it is the same for this process, a CLI
    and a multi-GPU subprocess): for the progress bar and the status line. A job's own progress,
    live in this process, is :class:`lab.jobs.Job`'s."""

    status: JobState
    step: int
    total: int | None
    elapsed_s: float | None
    eta_s: float | None
    samples_per_s: float | None
    tokens_per_s: float | None
    loss: float | None
    eval_loss: float | None
    message: Msg | str = Msg("")  # why the run failed (older runs: the English text)


def progress(run_dir: str | Path) -> RunProgress:
    """The run's latest step, timing and throughput (a run with no metrics yet is ``new``)."""
    info = describe_run(run_dir)
    rows = log_rows(read_metrics(run_dir))
    train_rows = [r for r in rows if r.get("loss") is not None]
    last = train_rows[-1] if train_rows else {}
    return RunProgress(
        status=info.status,
        step=info.step,
        total=info.total_steps,
        elapsed_s=rows[-1].get("elapsed_s") if rows else None,
        eta_s=last.get("eta_s") if info.status is JobState.RUNNING else None,
        samples_per_s=last.get("samples_per_s"),
        tokens_per_s=last.get("tokens_per_s"),
        loss=info.loss,
        eval_loss=info.eval_loss,
        message=info.message,
    )


def curves(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """Points for the plots: ``([{step, value, series: train|eval}], [{step, value, series: lr}])``."""
    rows = log_rows(read_metrics(run_dir))
    loss = [{"step": r["step"], "value": r["loss"], "series": "train"} for r in rows if r.get("loss") is not None]
    loss += [
        {"step": r["step"], "value": r["eval_loss"], "series": "eval"} for r in rows if r.get("eval_loss") is not None
    ]
    lr = [{"step": r["step"], "value": r["lr"], "series": "lr"} for r in rows if r.get("lr") is not None]
    return sorted(loss, key=lambda p: p["step"]), lr


def score_curves(run_dir: str | Path) -> list[dict]:
    """Points of the answers' scores at each evaluation (``eval_metrics``): ``[{step, value, series: bleu|...}]``."""
    from lab.training.metrics import answer_scores

    return [
        {"step": r["step"], "value": value, "series": key.removeprefix("eval_")}
        for r in log_rows(read_metrics(run_dir))
        for key, value in answer_scores(r).items()
        if value is not None
    ]


def reward_curves(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """A GRPO run's points: ``([{step, value, series: kl}], [{step, value, series: reward | <reward name>}])``.

    The mean reward is the weighted sum of the run's rewards; each reward gets its own series
    when there are several. An SFT run has neither.
    """
    rows = [r for r in log_rows(read_metrics(run_dir)) if r.get("reward") is not None]
    kl = [{"step": r["step"], "value": r["kl"], "series": "kl"} for r in rows if r.get("kl") is not None]
    rewards = []
    for r in rows:
        rewards.append({"step": r["step"], "value": r["reward"], "series": "reward"})
        each = r.get("rewards") or {}
        if len(each) > 1:
            rewards += [
                {"step": r["step"], "value": value, "series": name} for name, value in each.items() if value is not None
            ]
    return kl, rewards


# ---------------------------------------------------------------- reading a run folder to load it


def peft_adapter_name(run_name: str) -> str:
    """The PEFT adapter name of a run: PEFT refuses dots in names (they are module paths)."""
    return run_name.replace(".", "_")


class RunFolder:
    """What the lab needs from a run folder (``checkpoints/<run>/`` or one of its ``checkpoint-N/``)."""

    def __init__(self, path: Path, config: dict, adapter_dir: Path | None, model_dir: Path | None):
        self.path, self.config, self.adapter_dir, self.model_dir = path, config, adapter_dir, model_dir
        self.name = str(
            config.get("run_name") or (path.parent.name if path.name.startswith("checkpoint-") else path.name)
        )
        self.min_pixels, self.max_pixels = config.get("min_pixels"), config.get("max_pixels")

    @property
    def base_model(self) -> str:
        """The base model the adapter was trained on: the run's config, else the adapter's own record."""
        if self.config.get("model"):
            return str(self.config["model"])
        adapter = json.loads((self.adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        if not adapter.get("base_model_name_or_path"):
            raise ModelLoadError("{path} does not say which base model it was trained on.", path=self.path)
        return str(adapter["base_model_name_or_path"])

    @classmethod
    def read(cls, run_dir: str | Path) -> RunFolder:
        """Read a run folder; raises ModelLoadError when it holds neither an adapter nor a model."""
        import yaml

        path = paths.check_allowed(Path(run_dir).expanduser())
        if not path.is_dir():
            raise ModelLoadError("Run folder {path} does not exist.", path=path)
        config_file = next((p / CONFIG_FILE for p in (path, path.parent) if (p / CONFIG_FILE).is_file()), None)
        try:
            config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file else {}
        except (OSError, yaml.YAMLError) as err:
            raise ModelLoadError(
                "{config_file} is not readable YAML ({err_type}).", config_file=config_file, err_type=type(err).__name__
            ) from None
        config = config if isinstance(config, dict) else {}
        adapter_dir = find_adapter_dir(path, config.get("run_name") or path.name)
        model_dir = path if adapter_dir is None and (path / "config.json").is_file() else None
        if adapter_dir is None and model_dir is None:
            raise ModelLoadError(
                "{path} holds no trained model: no {adapter_config} and no config.json (did the run finish?).",
                path=path,
                adapter_config=ADAPTER_CONFIG,
            )
        return cls(path.resolve(), config, adapter_dir, model_dir)


def find_run(name_or_path: str | Path) -> Path:
    """A run folder from its path or its name under the workspace's ``checkpoints/``.

    Both go through the path guard before anything is looked at, so on a shared deployment
    a path or a link out of the workspace is refused alike whether it exists or not.
    """
    from lab.paths import resolve, runs_dir, under

    text = str(name_or_path).strip()
    if text:
        path = resolve(text)  # as given, in the workspace, in the checkout
        if not path.is_dir():
            path = under(runs_dir(), text)  # a run's name
        if path.is_dir():
            return path
    raise ModelLoadError(
        "No run named {name_or_path}: it is neither a folder nor a run in {runs_dir}.",
        name_or_path=name_or_path,
        runs_dir=runs_dir(),
    )


def find_adapter_dir(run_dir: Path, run_name: str) -> Path | None:
    """Where a run's adapter files are: the folder itself, or the sub-folder PEFT makes for a named adapter."""
    for candidate in (run_dir, run_dir / peft_adapter_name(run_name), run_dir / run_name):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    found = sorted(run_dir.glob(f"*/{ADAPTER_CONFIG}"))
    found = [p.parent for p in found if not p.parent.name.startswith("checkpoint-")]
    return found[0] if len(found) == 1 else None
