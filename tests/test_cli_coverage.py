"""Everything a tab does has a command: the running app's events, each mapped to ``python -m lab ...``.

The app's own config lists its events by ``api_name``. Each one is either a tab action with the
command (and flags) that does the same on the command line, or one of the few events that only
arrange the page, listed with the reason. A new endpoint without an entry here fails, and so
does an entry whose command or flag the CLI does not have.
"""

from __future__ import annotations

import argparse

from lab.cli import build_parser

# api_name -> the command line that does what the tab does (a command, sub-commands, flags).
COMMAND_FOR = {
    # The header: each command loads its own model (or run) and frees it when it ends.
    "model_load": "chat --model --quantization",
    "model_load_run": "chat --adapter",
    "model_use_adapter": "chat --adapter --no-adapter",
    "model_runs": "runs list",
    "model_adapters": "runs list",
    # Prompt design
    "prompt_load": "prompt show",
    "prompt_load_lang": "prompt show --lang",
    "prompt_presets": "prompt list",
    "prompt_preview": "prompt preview --prompt --prompt-b --json",
    "prompt_save": "prompt save --title",
    "prompt_provider": "prompt preview --provider --base-url --model",
    "prompt_use_local": "prompt preview --local-model",
    # Labeling
    "label_provider": "label --provider --base-url --model",
    "label_use_local": "label --local-model",
    "label_upload": "label --images",
    "label_presets": "prompt list",
    "label_estimate": "label --estimate",
    "label_start": "label --limit",
    "label_retry": "label --retry-failed",
    "label_stop": "label",  # Ctrl-C stops after saving what is finished
    "label_progress": "review --failures",
    "label_review_load": "review --json",
    "label_review_save": "review --edit --reject --interactive",
    "label_export": "data export --format",
    # Dataset
    "dataset_list": "data list",
    "dataset_show": "data show",
    "dataset_select": "data show",
    "dataset_page": "data show --page",
    "dataset_page_prev": "data show --page",
    "dataset_page_next": "data show --page",
    "dataset_check": "data check",
    "dataset_split": "data split --val-ratio --seed",
    "dataset_export": "data export --format",
    "dataset_import": "data import --format",
    # Train
    "train_preset": "train --preset",
    "train_start": "train --preset --set",
    "train_stop": "train",  # Ctrl-C stops after the current step and saves
    "train_command": "train --show-command",
    "train_poll": "runs show",
    "train_runs": "runs list",
    "train_show_run": "runs show",
    "train_resume": "train --resume",
    "train_load_run": "chat --adapter",
    "train_forecast": "train --dry-run --card",
    # Evaluate
    "evaluate": "eval --dataset --compare-base --batch-size --max-new-tokens --limit",
    "evaluate_endpoint": "eval --endpoint --api-key-env --concurrency",
    "evaluate_stop": "eval",  # Ctrl-C stops after the batch; the answered samples are scored and kept
    "evaluate_sort": "eval show --sort",
    "evaluate_data_choices": "data list",
    "evaluate_saved_list": "eval list",
    "evaluate_load": "eval show --json",
    "evaluate_sample": "eval show --sample",
    # Chat: a conversation on the terminal (/image, /adapter, /compare, /reset; Ctrl-C stops an answer)
    "chat": "chat --image --prompt --history --system --temperature --top-p --max-new-tokens",
    "chat_stop": "chat",
    "chat_clear": "chat --history",
    "chat_compare_mode": "chat --compare",
    # Export
    "export": "export --adapter --out --dtype --push-to-hub",
    "export_command": "export --show-command",
    "export_runs": "runs list",
}

# Events that only arrange the page, with why no command is needed.
PAGE_ONLY = {
    "lang_en": "the page's language switch; the CLI speaks LAB_LANG",
    "lang_zh": "the page's language switch; the CLI speaks LAB_LANG",
    "lang_en_tables": "rewrites table headers after the switch",
    "lang_zh_tables": "rewrites table headers after the switch",
    "lang_en_labels": "sends the tabs' names again after the switch",
    "lang_zh_labels": "sends the tabs' names again after the switch",
    "lang_en_dataset_summary_text": "rewrites a shown line after the switch",
    "lang_zh_dataset_summary_text": "rewrites a shown line after the switch",
    "lang_en_dataset_page_text": "rewrites a shown line after the switch",
    "lang_zh_dataset_page_text": "rewrites a shown line after the switch",
    "localize_tables": "table headers in the page's language as it loads",
    "dataset_summary_text": "a line made before the page existed, in its language",
    "dataset_page_text": "a line made before the page existed, in its language",
    "prompt_page_lang": "a Chinese page starts with Chinese prompts (the CLI: --lang)",
    "label_page_lang": "a Chinese page starts with Chinese prompts (the CLI: --lang)",
    "label_follow": "copies the labeler chosen in Prompt design into the Labeling tab's form",
    "model_unload": "a command frees its model when it ends",
    "model_status": "the header's line about the app's shared model; a command says what it loads",
    "train_trainer": "shows the GRPO fields when the trainer is grpo; a command sets trainer=grpo",
    "train_tab_select": "preselects the newest dataset as the tab opens; a command names its dataset",
    "export_tab_select": "preselects the newest run as the tab opens; a command names its run",
}


def _has(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """Why ``words`` (sub-commands, then flags) is not a command line of ``parser``; None when it is."""
    for word in words:
        if word.startswith("--"):
            if word not in parser._option_string_actions:
                return f"{parser.prog} has no {word}"
            continue
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subcommands or word not in subcommands[0].choices:
            return f"{parser.prog} has no command {word}"
        parser = subcommands[0].choices[word]
    return None


def test_every_tab_action_has_a_command(launch_app):
    app, ctx, client = launch_app(model="")
    events = {dep["api_name"] for dep in app.config["dependencies"] if dep.get("api_name")}
    unmapped = sorted(events - set(COMMAND_FOR) - set(PAGE_ONLY))
    assert not unmapped, f"tab actions without a command (add one to the CLI and to COMMAND_FOR): {unmapped}"
    gone = sorted((set(COMMAND_FOR) | set(PAGE_ONLY)) - events)
    assert not gone, f"entries for events the app no longer has: {gone}"
    assert not set(COMMAND_FOR) & set(PAGE_ONLY)
    parser = build_parser()
    wrong = [f"{api}: {why}" for api, line in COMMAND_FOR.items() if (why := _has(parser, line.split()))]
    assert not wrong, wrong


def test_the_check_sees_a_missing_command_or_flag():
    parser = build_parser()
    assert _has(parser, ["prompt", "preview", "--prompt-b"]) is None
    assert _has(parser, ["prompt", "nothing"]) == "python -m lab prompt has no command nothing"
    assert _has(parser, ["runs", "show", "--sort"]) == "python -m lab runs show has no --sort"
