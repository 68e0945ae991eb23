"""``python -m lab runs ...``: the training runs, as the Train tab's "Past runs" shows them.

``runs list`` is the runs table; ``runs show RUN`` is a run's status line, its loss curve
(as text), its config and its saved evaluations. Both read the run folders only, so they
describe a run going on in the app, in another terminal or on several GPUs alike. A run is
used by naming it: ``--adapter RUN`` of eval, chat and export, ``--local-model RUN`` of
label and prompt preview, ``train --resume RUN``.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list the training runs, or show one (status, curve, config)",
        description="The training runs under checkpoints/ (or another output_dir).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="every run, newest first: status, method, model, step, loss",
        description="Every run, newest first: status, method, model, step, loss.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    show = actions.add_parser(
        "show",
        help="one run: status, progress, loss curve, config, saved evaluations",
        description="One run: status, progress, loss curve, config, saved evaluations.",
    )
    show.add_argument("run", help="a run's name under checkpoints/ or its folder")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    from lab.errors import cli_lang, localize
    from lab.training.runs import RUN_COLUMNS, list_runs

    lang, runs = cli_lang(), list_runs()
    if args.json:
        print(json.dumps([_info(info, lang) for info in runs], ensure_ascii=False, indent=2))
        return 0
    rows = [[str(localize(v.label, lang)) if hasattr(v, "label") else str(v) for v in info.row()] for info in runs]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(RUN_COLUMNS)]
    for row in [RUN_COLUMNS, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _info(info, lang: str) -> dict:
    from lab.errors import localize

    return {
        "name": info.name,
        "path": str(info.path),
        "status": info.status.value,
        "step": info.step,
        "total_steps": info.total_steps,
        "loss": info.loss,
        "eval_loss": info.eval_loss,
        "method": info.method,
        "model": info.model,
        "dataset": info.dataset,
        "started": info.started,
        "message": localize(info.message, lang) or None,
    }


def run_show(args: argparse.Namespace) -> int:
    from lab.errors import cli_lang, localize
    from lab.evaluation.runner import list_results
    from lab.handle import find_run
    from lab.training.runs import config_text, curves, describe_run, progress

    run_dir, lang = find_run(args.run), cli_lang()
    info, now = describe_run(run_dir), progress(run_dir)
    loss, _ = curves(run_dir)
    results = [str(p) for p in list_results(run_dir / "eval")]
    if args.json:
        shown = {
            **_info(info, lang),
            "eta_s": now.eta_s,
            "elapsed_s": now.elapsed_s,
            "samples_per_s": now.samples_per_s,
            "loss_curve": loss,
            "config": config_text(run_dir),
            "evaluations": results,
        }
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    total = f"/{info.total_steps}" if info.total_steps else ""
    print(
        f"{info.name} · {localize(info.status.label, lang)} · step {info.step}{total} · loss {_num(info.loss)}"
        f" · eval loss {_num(info.eval_loss)} · {info.path}"
    )
    if info.message:
        print(localize(info.message, lang))
    print(curve_text([p for p in loss if p["series"] == "train"]))
    print(config_text(run_dir).rstrip())
    for path in results:
        print(f"evaluation: {path}")
    return 0


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def curve_text(points: list[dict], width: int = 60) -> str:
    """The loss curve as one line of block characters (high to low: █ to ▁), first and last value at its ends."""
    if not points:
        return ""
    values = [p["value"] for p in points]
    step = max(1, len(values) // width)
    sampled = values[::step]
    low, high = min(sampled), max(sampled)
    blocks = "▁▂▃▄▅▆▇█"
    bars = "".join(blocks[round((v - low) / (high - low) * 7) if high > low else 0] for v in sampled)
    return f"loss {values[0]:.4f} {bars} {values[-1]:.4f}"
