"""``python -m lab eval``: score a model (or a run's adapter, or an endpoint) on a dataset."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from lab.cli.stopping import StopOnCtrlC
from lab.evaluation.endpoint import EndpointConfig
from lab.evaluation.runner import EvalSettings
from lab.settings import add_flags
from lab.text import Msg

STOPPING = Msg("stopping after this batch; the answered samples are scored and kept (Ctrl-C again to quit at once)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model / --adapter / --quantization / --device, shared by eval and chat."""
    parser.add_argument(
        "--model",
        default=None,
        help=(
            "Hub id, local folder or 'demo' (the tiny offline model); with --adapter, the base model "
            "(default: the run's)"
        ),
    )
    parser.add_argument(
        "--adapter",
        default=None,
        metavar="RUN",
        help="a training run (name under checkpoints/ or folder): its LoRA adapter, or its fine-tuned model",
    )
    parser.add_argument(
        "--quantization",
        choices=["4bit", "8bit"],
        default=None,
        help="load the model quantized with bitsandbytes (4bit is NF4); a CUDA GPU, or the CPU (slower)",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:N")
    add_source_flags(parser)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """--trust-remote-code / --hub, for every command that loads a model."""
    from lab.hubs import SourceSettings

    add_flags(parser, SourceSettings, title="model source")


def source_options(args: argparse.Namespace) -> dict:
    """``load_model`` options from --trust-remote-code / --hub."""
    from lab.hubs import SourceSettings
    from lab.settings import from_flags

    return from_flags(SourceSettings, args).load_options()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score a model on a dataset (BLEU, chrF, ROUGE, CIDEr-D, exact match, JSON)",
        description="Generate answers for a dataset in batches and score them against its reference answers. "
        "Results are saved in the run folder (eval/NAME.json + NAME.jsonl), or in the workspace's eval/.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset folder or .jsonl file (default with --adapter: the run's validation split)",
    )
    add_flags(parser, EvalSettings, title="generation")
    parser.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help=(
            "score an OpenAI-compatible server instead (e.g. http://localhost:8000/v1); --model is the served "
            "model's name"
        ),
    )
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="read the endpoint's API key from this environment variable (default: OPENAI_API_KEY "
        "when the URL is OPENAI_BASE_URL or OpenAI's, EMPTY for a local server)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="deprecated, the key ends up in shell history and the process list: use --api-key-env",
    )
    add_flags(parser, EndpointConfig, exclude=("max_new_tokens", "temperature"), title="with --endpoint")
    parser.set_defaults(func=run)
    saved = parser.add_subparsers(
        dest="action", metavar="[list | show]", help="browse saved results instead: 'eval list', 'eval show RESULT'"
    )
    listing = saved.add_parser(
        "list",
        help="saved evaluation results, newest first (the workspace's and every run's)",
        description="Saved evaluation results, newest first (the workspace's and every run's).",
    )
    listing.add_argument("--adapter", dest="run", default=None, metavar="RUN", help="only this run's results")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    show = saved.add_parser(
        "show",
        help="one saved result: metrics per variant and the samples",
        description="One saved result: metrics per variant and the samples.",
    )
    show.add_argument("result", help="a result's .json file (see 'eval list')")
    show.add_argument(
        "--sort",
        choices=["gain", "loss", "id"],
        default="gain",
        help="order of the samples: largest gain first, largest loss first, or as in the data",
    )
    show.add_argument(
        "--sample", default=None, metavar="ID", help="show one sample in full: prompt, reference, answers, scores"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)


def _progress(done: int, total: int, eta: float | None) -> None:
    eta_text = f" · ETA {eta:.0f} s" if eta is not None else ""
    print(f"\r{done}/{total} samples{eta_text}   ", end="", file=sys.stderr, flush=True)


def format_result(result) -> str:
    """A plain-text table of the metrics per variant, and where the results are."""
    from lab.errors import cli_lang, localize
    from lab.evaluation.report import metrics_table, summary_line

    lang = cli_lang()
    headers, rows = metrics_table(result)
    lines = [f"{headers[0]:<14}" + "".join(f"{h:>12}" for h in headers[1:])]
    lines += [f"{row[0]:<14}" + "".join(f"{v:>12.2f}" for v in row[1:]) for row in rows]
    lines.append(localize(summary_line(result), lang))
    for skip in result.skipped:
        line = Msg("skipped {id}: {reason}", id=skip["id"], reason=skip["reason"])
        lines.append(localize(line, lang))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lab.errors import ConfigError
    from lab.evaluation.runner import run_evaluation, samples_from_dataset, samples_from_run
    from lab.handle import ModelHandle
    from lab.settings import from_flags
    from lab.training.runs import find_run

    if args.endpoint:
        return _run_endpoint(args)
    settings = from_flags(EvalSettings, args)
    if args.dataset:
        samples, source = samples_from_dataset(args.dataset), args.dataset
    elif args.adapter:
        samples, source = samples_from_run(find_run(args.adapter))
    else:
        raise ConfigError(
            "Name the data to evaluate on with --dataset (or pass --adapter RUN to use its validation split)."
        )
    handle = ModelHandle()
    handle.load_model_or_run(
        args.model, args.adapter, quantization=args.quantization, device=args.device, **source_options(args)
    )
    stop = threading.Event()
    with StopOnCtrlC(stop, STOPPING):
        result = run_evaluation(handle, samples, settings, source=source, progress=_progress, stop=stop)
    print(file=sys.stderr)
    print(format_result(result))
    return nothing_scored(result)


def _run_endpoint(args: argparse.Namespace) -> int:
    from lab.errors import ConfigError
    from lab.evaluation.endpoint import evaluate_endpoint
    from lab.evaluation.runner import samples_from_dataset
    from lab.settings import from_flags

    if not args.dataset or not args.model:
        raise ConfigError("With --endpoint, give --dataset and --model (the name the server serves).")
    settings = from_flags(EvalSettings, args)
    config = from_flags(EndpointConfig, args, base_url=args.endpoint, model=args.model, api_key=_api_key(args))
    stop = threading.Event()
    with StopOnCtrlC(stop, STOPPING):
        result = evaluate_endpoint(
            samples_from_dataset(args.dataset),
            config,
            name=settings.name,
            source=args.dataset,
            limit=settings.limit or None,
            progress=_progress,
            stop=stop,
        )
    print(file=sys.stderr)
    print(format_result(result))
    return nothing_scored(result)


def nothing_scored(result) -> int:
    """1, with the reason, when no sample could be scored (every image unreadable, every request failed); else 0."""
    from lab.errors import cli_lang, localize

    if result.samples or result.stopped and not result.skipped:
        return 0
    print(
        localize(Msg("Nothing was scored: every sample was skipped (the reasons are above)."), cli_lang()),
        file=sys.stderr,
    )
    return 1


def _api_key(args: argparse.Namespace) -> str | None:
    """The key the person named for the endpoint: ``--api-key-env NAME``, or the deprecated ``--api-key``."""
    import os

    from lab.errors import ConfigError, cli_lang, localize

    if args.api_key:
        warning = Msg(
            "warning: --api-key leaves the key in shell history and the process list; put it in an "
            "environment variable and pass --api-key-env NAME instead."
        )
        print(localize(warning, cli_lang()), file=sys.stderr)
        return args.api_key
    if not args.api_key_env:
        return None
    key = os.environ.get(args.api_key_env, "").strip()
    if not key:
        raise ConfigError("--api-key-env names {api_key_env}, which is not set or empty.", api_key_env=args.api_key_env)
    return key


def run_list(args: argparse.Namespace) -> int:
    from lab import paths
    from lab.evaluation.runner import list_results, load_result
    from lab.handle import find_run
    from lab.training.runs import list_runs

    folders = (
        [find_run(args.run) / "eval"]
        if args.run
        else [paths.workspace() / "eval"] + [info.path / "eval" for info in list_runs()]
    )
    found = sorted(
        (p for folder in folders for p in list_results(folder)), key=lambda p: p.stat().st_mtime, reverse=True
    )
    rows = []
    for path in found:
        result = load_result(path)
        rows.append(
            {
                "path": str(path),
                "name": result.name,
                "source": result.source,
                "variants": result.variants,
                "scored": len(result.samples),
                "total": result.total,
                "model": result.model,
                "metrics": result.metrics,
            }
        )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        print(f"{row['path']}  {row['scored']}/{row['total']}  {'/'.join(row['variants'])}  {row['source']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from lab.errors import ConfigError, cli_lang, localize
    from lab.evaluation.report import sample_table, summary_line
    from lab.evaluation.runner import load_result

    result = load_result(args.result)
    if args.sample is not None:
        sample = next((s for s in result.samples if str(s["id"]) == args.sample), None)
        if sample is None:
            raise ConfigError("No sample {id} in {path}.", id=args.sample, path=args.result)
        print(json.dumps(sample, ensure_ascii=False, indent=2) if args.json else _sample_text(sample, cli_lang()))
        return 0
    headers, rows = sample_table(result, args.sort)
    if args.json:
        shown = {
            "name": result.name,
            "source": result.source,
            "variants": result.variants,
            "metrics": result.metrics,
            "summary": localize(summary_line(result), cli_lang()),
            "samples": [dict(zip(headers, r)) for r in rows],
        }
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    print(format_result(result))
    for row in rows:
        print("  ".join(" ".join(str(v).split())[:60] if isinstance(v, str) else f"{v:g}" for v in row))
    return 0


def _sample_text(sample: dict, lang: str) -> str:
    from lab.errors import localize

    lines = [f"{sample['id']} · {sample['prompt']}", f"{localize(Msg('reference'), lang)}: {sample['reference']}"]
    for variant, answer in sample["answers"].items():
        scores = ", ".join(f"{k} {v:.1f}" for k, v in sample["scores"][variant].items())
        lines.append(f"{variant}: {answer}\n    {scores}")
    return "\n".join(lines)
