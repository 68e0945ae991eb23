"""``python -m lab train``: fine-tune a model from a preset or a YAML config, with ``--set`` overrides."""

from __future__ import annotations

import argparse
import os

from lab.cli.eval import add_source_flags
from lab.cli.stopping import StopOnCtrlC
from lab.hubs import SourceSettings
from lab.settings import flag_values
from lab.text import Msg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model (LoRA, QLoRA or full) on a dataset",
        description="Train with the settings of a preset (presets/train/NAME.yaml) or a YAML config, changed with "
        "--set key=value (keys are TrainConfig's fields). The run folder checkpoints/RUN/ gets config.yaml, "
        "metrics.jsonl, the adapter or model, and checkpoints. With num_gpus > 1 it runs under accelerate launch. "
        "Ctrl-C stops after the current step and saves.",
        epilog="examples:  python -m lab train --preset cpu_demo\n"
        "           python -m lab train --preset lora --set model=Qwen/Qwen2.5-VL-3B-Instruct dataset=data/mine\n"
        "           python -m lab train --resume RUN",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="a YAML training config (e.g. a run's config.yaml)")
    source.add_argument("--preset", metavar="NAME", help="a training preset: lora, qlora, full, cpu_demo, ...")
    source.add_argument(
        "--resume", metavar="RUN", help="continue a run (name under checkpoints/ or folder) from its last checkpoint"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="change a setting, e.g. --set learning_rate=2e-4 lora_targets=[language,vision]",
    )
    parser.add_argument(
        "--show-command", action="store_true", help="print the command that reproduces this config and exit"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the forecast (peak GPU memory, speed, whether it fits, the automatic batch and "
        "checkpointing) and exit without loading the model",
    )
    parser.add_argument("--json", action="store_true", help="with --dry-run: the forecast as JSON")
    parser.add_argument(
        "--card",
        metavar="NAME",
        default=None,
        help="with --dry-run: plan for this GPU instead of this machine's (h200, h100-80g, a100-80g, "
        "a100-40g, l40s, a10g, 4090, 3090, t4)",
    )
    add_source_flags(parser)
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """``(config, resume)`` from the command line; --trust-remote-code and --hub set the config's fields."""
    cfg, resume = _config(args)
    given = flag_values(SourceSettings, args)
    if given:
        from lab.train_config import TrainConfig

        cfg = TrainConfig.from_dict({**cfg.to_dict(), **given})
    return cfg, resume


def _config(args: argparse.Namespace):
    from lab.train_config import TrainConfig

    if args.resume:
        from lab.training.runs import find_run, load_run_config

        run_dir = find_run(args.resume)
        cfg = load_run_config(run_dir)
        if args.overrides:  # e.g. more steps for the resumed run
            cfg = TrainConfig.from_dict({**cfg.to_dict(), **_override_dict(cfg, args.overrides)})
        return cfg, True
    if args.config:
        return TrainConfig.from_yaml(args.config, args.overrides), False
    return TrainConfig.from_preset(args.preset, args.overrides), False


def _override_dict(cfg, overrides) -> dict:
    from lab.config_values import apply_overrides

    return apply_overrides(cfg.to_dict(), overrides, type(cfg))


def _in_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from lab.training.runs import train_command

    cfg, resume = build_config(args)
    if args.show_command:
        print(train_command(cfg, args.preset or "lora"))
        return 0
    if args.dry_run:
        return _dry_run(cfg, args.card, args.json)
    stop = threading.Event()
    with StopOnCtrlC(stop, STOPPING, signals=(signal.SIGINT, signal.SIGTERM)):  # SIGTERM: a scheduler's stop
        return _train(cfg, resume, stop)


STOPPING = Msg("Stopping after the current step (again to quit at once) ...")


def _dry_run(cfg, card: str | None, as_json: bool) -> int:
    """The forecast of ``cfg``: nothing loads, and torch is imported only to ask a GPU of this machine."""
    import json

    from lab.errors import cli_lang, localize
    from lab.models import gpu_present
    from lab.training.fit import as_dict, plan, report

    found = plan(cfg, "cuda" if card is None and gpu_present() else "cpu", card)
    print(
        json.dumps(as_dict(found, cfg.model), indent=2) if as_json else localize(report(found, cfg.model), cli_lang())
    )
    return 0


def _train(cfg, resume: bool, stop) -> int:
    from lab.training.preflight import check_run_environment

    check_run_environment(cfg)  # before a run folder is made or a model loads, as the Train tab does
    if cfg.num_gpus > 1 and not _in_distributed_launch():
        from lab.training.launch import run_accelerate
        from lab.training.run_folder import prepare_run_dir

        run_dir = prepare_run_dir(cfg, resume)
        return run_accelerate(run_dir, cfg.num_gpus, cfg.deepspeed, stop, resume=resume)
    from lab.training.launch import is_main_process
    from lab.training.runner import run_training

    quiet = not is_main_process()
    result = run_training(
        cfg, stop=stop, resume=resume, log=(lambda line: None) if quiet else print, echo_metrics=not quiet
    )
    if not quiet:
        print(f"run folder: {result.run_dir}")
    return 0
