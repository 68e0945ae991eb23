"""``python -m lab prompt ...``: the Prompt design tab on the command line.

List and show the prompt presets, try one prompt (or two, A and B) on a few images with the
labeler (an API, or a local model or run), check the answers (usable, JSON, keys), and save
a prompt as a preset the labeling run can use::

    python -m lab prompt preview --prompt ui_function_json --lang zh --samples 4
    python -m lab prompt preview --user "<image>Describe it." --user-b "<image>用一句话描述。" --json
    python -m lab prompt save my_caption --user "<image>Describe the component in one sentence."
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.labeling.client import LabelerConfig
from lab.settings import add_flags
from lab.text import Msg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prompt",
        help="list, show, preview (A/B, JSON check) and save prompt presets",
        description="Design a labeling prompt: see the presets, try one or two prompts on a few images through the "
        "labeler and check their answers, save the one you like as a preset.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list", help="the prompt presets (bundled, then saved)", description="The prompt presets (bundled, then saved)."
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)

    show = actions.add_parser(
        "show",
        help="a preset's system prompt, user prompt and expected JSON keys",
        description="A preset's system prompt, user prompt and expected JSON keys.",
    )
    show.add_argument("name", help="preset name or YAML file")
    show.add_argument("--lang", choices=["en", "zh"], default="en", help="language of the prompt (default: en)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)

    preview = actions.add_parser(
        "preview",
        help="try prompt A (and B) on a few images: answers, latency, tokens, cost, JSON check",
        description="Label a few images with prompt A (and B when any --*-b option is given) exactly as a labeling "
        "run would, and show each answer with its latency, tokens, cost and whether it is usable "
        "(valid JSON with the expected keys, for a JSON prompt). Exit status 1 when no answer is usable. "
        "The API key is read from OPENAI_API_KEY (or the provider's variable), as for 'label'.",
    )
    _add_prompt_options(preview, "")
    _add_prompt_options(preview, "-b", " of prompt B")
    images = preview.add_mutually_exclusive_group()
    images.add_argument("--images", nargs="+", metavar="IMG", help="image files (at most 8)")
    images.add_argument(
        "--samples", type=int, default=4, metavar="N", help="the first N images of the bundled sample set (default: 4)"
    )
    preview.add_argument(
        "--local-model",
        default=None,
        metavar="NAME",
        help="answer with a local model or a training run instead of an API (see 'label --help')",
    )
    add_flags(preview, LabelerConfig, title="labeler")
    preview.add_argument("--json", action="store_true", help="print the results as JSON")
    preview.set_defaults(func=run_preview)

    save = actions.add_parser(
        "save",
        help="save a prompt as a preset (in the workspace's presets/prompts/)",
        description="Save a prompt (a preset's, changed by the options) under a new name; "
        "the other language of a preset saved before under that name is kept.",
    )
    save.add_argument("name", help="new preset name (letters, digits, _ and -)")
    _add_prompt_options(save, "")
    save.add_argument("--title", default="", help="title shown in lists")
    save.set_defaults(func=run_save)


def _add_prompt_options(parser: argparse.ArgumentParser, suffix: str, of: str = "") -> None:
    """--prompt/--lang/--system/--user/--json-answer/--keys (``suffix`` -b: prompt B's)."""
    group = parser.add_argument_group(f"prompt{suffix.replace('-', ' ').upper()}".strip())
    dest = suffix.replace("-", "_")
    group.add_argument(
        f"--prompt{suffix}",
        dest=f"prompt{dest}",
        default=None,
        metavar="PRESET",
        help=f"preset name or YAML file{of} (default: sample_caption)",
    )
    group.add_argument(
        f"--lang{suffix}",
        dest=f"lang{dest}",
        choices=["en", "zh"],
        default=None,
        help=f"language of the preset{of} (default: en)",
    )
    group.add_argument(
        f"--system{suffix}", dest=f"system{dest}", default=None, help=f"system prompt{of} (replaces the preset's)"
    )
    group.add_argument(
        f"--user{suffix}",
        dest=f"user{dest}",
        default=None,
        help=f"user prompt{of}; <image> marks where the picture goes (replaces the preset's)",
    )
    group.add_argument(
        f"--json-answer{suffix}",
        dest=f"json_answer{dest}",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"the answer{of} is a JSON object (default: the preset's)",
    )
    group.add_argument(
        f"--keys{suffix}",
        dest=f"keys{dest}",
        default=None,
        metavar="A,B",
        help=f"expected top-level JSON keys{of}, comma-separated (default: the preset's)",
    )


def prompt_spec(args: argparse.Namespace, suffix: str = ""):
    """The prompt the options describe (``suffix`` "_b": prompt B's), or None for a B that was not asked for."""
    from lab.errors import ConfigError
    from lab.labeling.item import PromptSpec
    from lab.presets import load_prompt_preset

    given = {
        name: getattr(args, name + suffix, None) for name in ("prompt", "lang", "system", "user", "json_answer", "keys")
    }
    if suffix and all(value is None for value in given.values()):
        return None
    preset = load_prompt_preset(given["prompt"] or "sample_caption")
    system, user, keys = preset.prompt(given["lang"] or "en")
    if given["keys"] is not None:
        keys = [k.strip() for k in given["keys"].replace("，", ",").split(",") if k.strip()]
    user = given["user"] if given["user"] is not None else user
    if not user.strip():
        raise ConfigError("The user prompt is empty; write what to ask about each image.")
    want_json = preset.json if given["json_answer"] is None else given["json_answer"]
    return PromptSpec(given["system"] if given["system"] is not None else system, user, bool(want_json), tuple(keys))


def run_list(args: argparse.Namespace) -> int:
    from lab.errors import cli_lang
    from lab.presets import list_prompt_presets, load_prompt_preset, user_prompts_dir

    lang, rows = cli_lang(), []
    for name in list_prompt_presets():
        preset = load_prompt_preset(name)
        saved = preset.source is not None and preset.source.parent == user_prompts_dir()
        rows.append(
            {"name": name, "title": preset.label(lang), "json": preset.json, "languages": preset.langs, "saved": saved}
        )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        kind = "JSON" if row["json"] else "text"
        print(f"{row['name']:<24} {kind:<5} {','.join(row['languages']):<6} {row['title']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from lab.presets import load_prompt_preset

    preset = load_prompt_preset(args.name)
    system, user, keys = preset.prompt(args.lang)
    shown = {
        "name": preset.name,
        "lang": args.lang if args.lang in preset.langs else preset.langs[0],
        "system": system,
        "user": user,
        "json": preset.json,
        "expected_keys": keys,
    }
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    for key in ("name", "lang", "json", "expected_keys", "system", "user"):
        value = ", ".join(shown[key]) if key == "expected_keys" else shown[key]
        print(f"{key}: {value}")
    return 0


def _images(args: argparse.Namespace) -> list:
    from lab.errors import ConfigError
    from lab.images import open_image
    from lab.labeling.preview import MAX_PREVIEW_IMAGES, sample_images

    if args.images:
        images = list(args.images)
    else:
        if not 1 <= args.samples <= MAX_PREVIEW_IMAGES:
            raise ConfigError(
                "A preview takes at most {max_preview_images} images; {n_images} were given.",
                max_preview_images=MAX_PREVIEW_IMAGES,
                n_images=args.samples,
            )
        images = [str(p) for p in sample_images()[: args.samples]]
    for image in images:
        open_image(image)  # a bad picture is refused before the labeler starts (or a model loads)
    return images


def _labeler(args: argparse.Namespace):
    from lab.labeling.client import ApiLabeler
    from lab.settings import from_flags

    if args.local_model:
        from lab.cli.label import local_labeler

        return local_labeler(args)
    return ApiLabeler(from_flags(LabelerConfig, args))


def run_preview(args: argparse.Namespace) -> int:
    from lab.errors import cli_lang, localize
    from lab.labeling.preview import preview_line, stream_preview

    prompts = [p for p in (prompt_spec(args), prompt_spec(args, "_b")) if p is not None]
    images = _images(args)
    labeler = _labeler(args)
    lang, names, seen = cli_lang(), ["A", "B"], set()
    results = []
    for results in stream_preview(images, prompts, labeler):
        for v, row in enumerate(results):
            for i, result in enumerate(row):
                if result is not None and (v, i) not in seen and not args.json:
                    seen.add((v, i))
                    print(_result_line(names[v], images[i], result, lang), flush=True)
    if args.json:
        print(json.dumps(_as_json(prompts, images, results, lang), ensure_ascii=False, indent=2))
    else:
        for name, row in zip(names, results):
            print(localize(preview_line(name, row), lang))
    if not any(r.ok for row in results for r in row):
        print(localize(Msg("No answer is usable yet; the reasons are above."), lang), file=sys.stderr)
        return 1
    return 0


def _result_line(name: str, image: str, result, lang: str) -> str:
    from pathlib import Path

    from lab.errors import localize

    head = (
        f"{name} {Path(image).name} {result.status} {result.seconds:.2f}s "
        f"{result.prompt_tokens}+{result.completion_tokens} ${result.cost_usd:.4f}"
    )
    reason = f" [{localize(result.reason, lang)}]" if result.reason else ""
    return f"{head}{reason}: {' '.join(result.answer.split())[:300]}"


def _as_json(prompts, images, results, lang: str) -> dict:
    from lab.errors import localize
    from lab.labeling.preview import preview_line, preview_totals

    variants = []
    for name, prompt, row in zip("AB", prompts, results):
        items = [
            {
                "image": str(image),
                "status": r.status,
                "ok": r.ok,
                "answer": r.answer,
                "reason": localize(r.reason, lang) if r.reason else None,
                "json_ok": r.ok if prompt.want_json else None,
                "seconds": round(r.seconds, 3),
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "cost_usd": r.cost_usd,
            }
            for image, r in zip(images, row)
        ]
        variants.append(
            {
                "name": name,
                "prompt": {
                    "system": prompt.system,
                    "user": prompt.user,
                    "json": prompt.want_json,
                    "expected_keys": list(prompt.expected_keys),
                },
                "usable": sum(r.ok for r in row),
                "totals": preview_totals(row),
                "summary": localize(preview_line(name, row), lang),
                "results": items,
            }
        )
    return {"variants": variants}


def run_save(args: argparse.Namespace) -> int:
    from lab.errors import cli_lang, localize
    from lab.presets import PromptText, save_prompt_text

    spec = prompt_spec(args)
    path = save_prompt_text(
        args.name, args.lang or "en", PromptText(spec.system, spec.user, spec.expected_keys), spec.want_json, args.title
    )
    print(
        localize(
            Msg(
                "Saved {path}; label with it: python -m lab label --prompt {name} ...",
                path=path,
                name=args.name.strip(),
            ),
            cli_lang(),
        )
    )
    return 0
