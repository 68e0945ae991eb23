"""``python -m lab eval``: score a model (or a run's adapter, or an endpoint) on a dataset."""

from __future__ import annotations

import argparse
import sys

from lab.evaluation.endpoint import EndpointConfig
from lab.evaluation.runner import EvalSettings
from lab.settings import add_flags
from lab.text import Msg


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model / --adapter / --quantization / --device, shared by eval and chat."""
    parser.add_argument("--model", default=None, help="Hub id, local folder or 'demo' (the tiny offline model); with --adapter, the base model (default: the run's)")
    parser.add_argument("--adapter", default=None, metavar="RUN", help="a training run (name under checkpoints/ or folder): its LoRA adapter, or its fine-tuned model")
    parser.add_argument("--quantization", choices=["4bit", "8bit"], default=None, help="load the model quantized (needs a CUDA GPU)")
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
        "eval", help="score a model on a dataset (BLEU, chrF, ROUGE, CIDEr-D, exact match, JSON)",
        description="Generate answers for a dataset in batches and score them against its reference answers. "
        "Results are saved in the run folder (eval/NAME.json + NAME.jsonl), or in the workspace's eval/.",
    )
    add_model_arguments(parser)
    parser.add_argument("--dataset", default=None, help="dataset folder or .jsonl file (default with --adapter: the run's validation split)")
    add_flags(parser, EvalSettings, title="generation")
    parser.add_argument("--endpoint", default=None, metavar="URL", help="score an OpenAI-compatible server instead (e.g. http://localhost:8000/v1); --model is the served model's name")
    parser.add_argument("--api-key-env", default=None, metavar="NAME",
                        help="read the endpoint's API key from this environment variable (default: OPENAI_API_KEY "
                             "when the URL is OPENAI_BASE_URL or OpenAI's, EMPTY for a local server)")
    parser.add_argument("--api-key", default=None, help="deprecated, the key ends up in shell history and the process list: use --api-key-env")
    add_flags(parser, EndpointConfig, exclude=("max_new_tokens", "temperature"), title="with --endpoint")
    parser.set_defaults(func=run)


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
        line = Msg("skipped {id}: {reason}", id=skip['id'], reason=skip['reason'])
        lines.append(localize(line, lang))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lab.errors import ConfigError
    from lab.evaluation.runner import run_evaluation, samples_from_dataset, samples_from_run
    from lab.handle import ModelHandle
    from lab.training.runs import find_run
    from lab.settings import from_flags

    if args.endpoint:
        return _run_endpoint(args)
    settings = from_flags(EvalSettings, args)
    if args.dataset:
        samples, source = samples_from_dataset(args.dataset), args.dataset
    elif args.adapter:
        samples, source = samples_from_run(find_run(args.adapter))
    else:
        raise ConfigError("Name the data to evaluate on with --dataset (or pass --adapter RUN to use its validation split).")
    handle = ModelHandle()
    handle.load_model_or_run(args.model, args.adapter, quantization=args.quantization, device=args.device,
                             **source_options(args))
    result = run_evaluation(handle, samples, settings, source=source, progress=_progress)
    print(file=sys.stderr)
    print(format_result(result))
    return _status(result)


def _run_endpoint(args: argparse.Namespace) -> int:
    from lab.errors import ConfigError
    from lab.evaluation.endpoint import evaluate_endpoint
    from lab.evaluation.runner import samples_from_dataset
    from lab.settings import from_flags

    if not args.dataset or not args.model:
        raise ConfigError("With --endpoint, give --dataset and --model (the name the server serves).")
    settings = from_flags(EvalSettings, args)
    config = from_flags(EndpointConfig, args, base_url=args.endpoint, model=args.model, api_key=_api_key(args))
    result = evaluate_endpoint(samples_from_dataset(args.dataset), config, name=settings.name, source=args.dataset,
                               limit=settings.limit or None, progress=_progress)  # fmt: skip
    print(file=sys.stderr)
    print(format_result(result))
    return _status(result)


def _status(result) -> int:
    """1 when no sample was scored (the skipped ones' reasons are printed above), else 0."""
    from lab.errors import cli_lang, localize

    if result.samples:
        return 0
    print(localize(Msg("No sample was scored; the reasons are above."), cli_lang()), file=sys.stderr)
    return 1


def _api_key(args: argparse.Namespace) -> str | None:
    """The key the person named for the endpoint: ``--api-key-env NAME``, or the deprecated ``--api-key``."""
    import os

    from lab.errors import ConfigError, cli_lang, localize

    if args.api_key:
        warning = Msg("warning: --api-key leaves the key in shell history and the process list; put it in an "
                      "environment variable and pass --api-key-env NAME instead.")
        print(localize(warning, cli_lang()), file=sys.stderr)
        return args.api_key
    if not args.api_key_env:
        return None
    key = os.environ.get(args.api_key_env, "").strip()
    if not key:
        raise ConfigError("--api-key-env names {api_key_env}, which is not set or empty.", api_key_env=args.api_key_env)
    return key
