"""``python -m lab label``: label a folder of images into a dataset folder through an API.

The API key comes from the environment (``OPENAI_API_KEY``, or the provider's own
variable such as ``DASHSCOPE_API_KEY``), never from a flag: flags end up in shell
history and process lists. It is sent only to the URL it belongs to (``OPENAI_BASE_URL``,
else OpenAI; the provider's ``base_url``); for another server set ``OPENAI_BASE_URL``.
Seed scripts' flags (``--image_folder``, ``--output_json``, ``--max_retries``) are
accepted as aliases.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from lab.cli.eval import add_source_flags, source_options
from lab.cli.stopping import StopOnCtrlC
from lab.labeling.client import LabelerConfig
from lab.settings import add_flags
from lab.text import Msg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "label",
        help="label a folder of images through an OpenAI-compatible API (resumable)",
        description="Label every image of a folder with a prompt through any OpenAI-compatible API (OpenAI, "
        "DashScope, vLLM, Ollama) into a dataset folder. Rerunning skips what is done; Ctrl-C stops "
        "and keeps it. The API key is read from OPENAI_API_KEY (or the provider's variable) "
        "and sent only to OPENAI_BASE_URL (else OpenAI) or the provider's own URL.",
    )
    parser.add_argument(
        "--images", "--image_folder", dest="images", help="folder of images to label (default: the last run's)"
    )
    parser.add_argument("--prompt", help="prompt preset name or YAML file (default: the last run's)")
    parser.add_argument(
        "--lang", choices=["en", "zh"], default=None, help="language of the preset's prompt (default: en)"
    )
    parser.add_argument(
        "--out",
        "--output_json",
        dest="out",
        required=True,
        help="dataset folder to write (data.jsonl, images/, failures.jsonl)",
    )
    parser.add_argument(
        "--local-model",
        default=None,
        metavar="NAME",
        help="label with a local model instead of an API: 'demo', a Hub id, a folder, or a training run "
        "(its name under checkpoints/ or its folder: the fine-tuned model); flags not given take "
        "the local labeler's defaults (64 answer tokens, 200,704 pixels, temperature 0.7)",
    )
    add_source_flags(parser)
    parser.add_argument("--limit", type=int, default=None, help="label at most N more images in this run")
    add_flags(parser, LabelerConfig, title="labeler (a flag not given keeps the last run's setting here)")
    parser.add_argument("--retry-failed", action="store_true", help="redo only the images that failed before")
    parser.add_argument("--estimate", action="store_true", help="print the cost estimate and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.errors import ConfigError, cli_lang, localize
    from lab.labeling.batch import run_labeling
    from lab.labeling.estimate import estimate_folder
    from lab.labeling.store import job_settings, load_job

    out = _out_dir(args.out)
    job = load_job(out) or {}
    images = args.images or job.get("images")
    if not images:
        raise ConfigError("Give --images DIR, the folder of pictures to label.")
    prompt, preset, lang = _prompt(args, job)
    labeler, settings = _labeler(args, job, estimate_only=args.estimate)
    estimate = estimate_folder(
        images, out, prompt, labeler.name, max_pixels=settings.get("max_pixels"), price=labeler.price, limit=args.limit
    )
    lang, summary = cli_lang(), estimate.summary()
    print(localize(Msg("estimate: {summary}", summary=summary), lang), file=sys.stderr)
    if args.estimate:
        return 0
    stop = threading.Event()
    with _progress_bar() as show, StopOnCtrlC(stop, STOPPING):
        progress = run_labeling(
            images,
            out,
            prompt,
            labeler,
            limit=args.limit,
            retry_failed=args.retry_failed,
            stop=stop,
            on_progress=show,
            job=job_settings(prompt, settings, preset=preset, lang=lang, limit=args.limit),
        )
        show(progress, final=True)
    print(localize(progress.line(), lang), file=sys.stderr)
    if progress.failed:
        failed = Msg(
            "{failed} image(s) failed; reasons are in {out}; rerun with --retry-failed to try them again.",
            failed=progress.failed,
            out=out / "failures.jsonl",
        )
        print(localize(failed, lang), file=sys.stderr)
    print(out)
    if progress.state == "stopped":
        return 130
    return nothing_done(progress, lang)


def nothing_done(progress, lang: str) -> int:
    """1, with the reason, when images were tried and none was labeled; else 0."""
    from lab.errors import localize

    if progress.ok or not progress.failed:
        return 0
    first = next((item for item in progress.recent if not item.ok), None)
    reason = Msg("{source}: {reason}", source=Path(first.source).name, reason=first.reason) if first else Msg("")
    print(
        localize(Msg("Nothing was labeled: every image failed (the first: {reason}).", reason=reason), lang),
        file=sys.stderr,
    )
    return 1


STOPPING = Msg("stopping; finished items are kept (Ctrl-C again to quit at once)")


def _out_dir(out: str) -> Path:
    path = Path(out).expanduser()
    if path.suffix.lower() in (".json", ".jsonl"):  # seed 000's --output_json names a file
        path = path.with_suffix("")
        print(f"note: writing the dataset folder {path}", file=sys.stderr)
    return path


def _prompt(args, job: dict):
    from lab.errors import ConfigError
    from lab.labeling.item import PromptSpec
    from lab.presets import load_prompt_preset

    lang = args.lang or job.get("lang") or "en"
    if args.prompt:
        return PromptSpec.from_preset(load_prompt_preset(args.prompt), lang), args.prompt, lang
    if job.get("prompt"):
        return PromptSpec.from_job(job), job.get("preset", ""), lang
    raise ConfigError("Give --prompt, a prompt preset name or YAML file (see presets/prompts/).")


def _labeler(args, job: dict, estimate_only: bool = False):
    """The labeler and its settings (without the key) for label_job.json; an estimate's needs no key."""
    from lab.errors import ConfigError
    from lab.labeling.client import ApiLabeler
    from lab.labeling.costs import price_for
    from lab.settings import build, flag_values, renamed, settings_of

    if args.local_model:
        labeler = local_labeler(args)
        return labeler, {"model": labeler.name, "local": True, "max_pixels": labeler.max_pixels}
    saved = renamed(LabelerConfig, job.get("labeler") or {})  # older runs saved max_tokens
    given = flag_values(LabelerConfig, args)
    if saved.get("local") and not {"provider", "base_url", "model"} & set(given):
        raise ConfigError(
            "The last run here used a local model; give --local-model NAME to go on with it, "
            "or --provider / --base-url / --model for an API."
        )
    if "provider" in given or "base_url" in given:  # a new endpoint: the last run's model and URL no longer apply
        saved.pop("model", None)
        saved.pop("base_url", None)
    kept = {s.name: saved[s.name] for s in settings_of(LabelerConfig) if s.name in saved and not s.secret}
    config = build(LabelerConfig, {**kept, **given})
    if estimate_only:  # an estimate sends nothing, so it asks for no key
        resolved = config.resolved(need_key=False)
        return SimpleNamespace(name=resolved.model, price=price_for(resolved.model)), resolved.public_dict()
    labeler = ApiLabeler(config)
    return labeler, labeler.config.public_dict()


def local_labeler(args):
    """The labeler of ``--local-model NAME`` (a model, or a run with its adapter on): the local labeler's
    defaults under the labeler flags given."""
    from lab.errors import cli_lang, localize
    from lab.handle import ModelHandle
    from lab.labeling.local import LocalLabeler, local_config
    from lab.settings import from_flags

    config = from_flags(LabelerConfig, args, base=local_config())
    handle = ModelHandle()
    print(localize(Msg("Loading {name} ...", name=args.local_model), cli_lang()), file=sys.stderr)
    handle.load_any(args.local_model, **source_options(args))
    return LocalLabeler(handle, config)


class _progress_bar:
    """A tqdm bar on stderr: done / failed / cost / rate / ETA, redrawn at most 10 times a second."""

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(
            total=0,
            unit="img",
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}] {desc}",
        )
        self.last = 0.0
        return self.show

    def show(self, progress, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        eta = f"{progress.eta_s:.0f}s" if progress.eta_s is not None else "?"
        self.bar.total = progress.total
        self.bar.n = progress.ok + progress.failed + progress.skipped
        self.bar.set_description_str(
            f"ok {progress.ok} · failed {progress.failed} · skipped {progress.skipped} · "
            f"${progress.cost_usd:.4f} · {progress.rate:.1f} img/s · ETA {eta}",
            refresh=False,
        )
        self.bar.refresh()

    def __exit__(self, *exc):
        self.bar.close()
