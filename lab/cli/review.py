"""``python -m lab review DATASET``: read, accept, edit and reject the answers of a labeled dataset.

What the Labeling tab's "Review and export" does: a rejected item leaves ``data.jsonl``
(so nothing trains on it) for ``rejected.jsonl`` (so a rerun does not label it again); an
edited answer must still be usable (valid JSON with the expected keys for a JSON prompt)::

    python -m lab review data/labeled                       # the items, one a line
    python -m lab review data/labeled --json                # ... as JSON, for a script
    python -m lab review data/labeled --edit 3f2a "A red button." --reject 9c01
    python -m lab review data/labeled --interactive         # accept / edit / reject, item by item
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.text import Msg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "review",
        help="list, accept, edit or reject the answers of a labeled dataset",
        description="Review a dataset made by 'label': list its answers (and its failures), edit answers, reject "
        "items. Without --edit, --edits, --reject or --interactive it only lists.",
    )
    parser.add_argument("dataset", help="the labeled dataset: a name under data/ or a folder")
    parser.add_argument(
        "--edit",
        nargs=2,
        action="append",
        default=[],
        metavar=("ID", "TEXT"),
        help="replace the answer of item ID (repeat for several)",
    )
    parser.add_argument("--edits", metavar="FILE", help='a JSON file of {"ID": "new answer", ...}')
    parser.add_argument(
        "--reject", action="append", default=[], metavar="ID", help="reject item ID (repeat for several)"
    )
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="go through the items one by one: [a]ccept, [e]dit, [r]eject, [q]uit (saves at the end)",
    )
    parser.add_argument("--failures", action="store_true", help="list the images that failed and why, instead")
    parser.add_argument("--json", action="store_true", help="print the items (or failures) as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.dataset import named_dataset
    from lab.errors import cli_lang, localize
    from lab.labeling.review import list_failures, list_items

    folder, lang = named_dataset(args.dataset), cli_lang()
    if args.failures:
        rows = [{**row, "reason": localize(row["reason"], lang)} for row in list_failures(folder)]
        _print(rows, args.json, ("source", "status", "reason"))
        return 0
    edits = dict(args.edit)
    if args.edits:
        edits.update(_read_edits(args.edits))
    rejects = list(args.reject)
    if args.interactive:
        more_edits, more_rejects = _walk(list_items(folder), lang)
        edits.update(more_edits)
        rejects += more_rejects
    if not edits and not rejects:
        if not args.interactive:
            _print(list_items(folder), args.json, ("id", "source", "answer"))
        return 0
    return _save(folder, edits, rejects, lang)


def _save(folder, edits: dict, rejects: list, lang: str) -> int:
    from lab.errors import localize
    from lab.labeling.review import save_review
    from lab.labeling.store import load_job

    prompt = (load_job(folder) or {}).get("prompt") or {}
    saved = save_review(
        folder, edits, rejects, want_json=bool(prompt.get("want_json")), expected_keys=prompt.get("expected_keys") or ()
    )
    print(localize(saved.summary(), lang))
    return 0


def _read_edits(path: str) -> dict[str, str]:
    from lab.errors import ConfigError
    from lab.paths import check_allowed

    try:
        data = json.loads(check_allowed(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            "Cannot read the edits in {path} ({err_type}).", path=path, err_type=type(err).__name__
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError('{path} must hold a JSON object of "id": "new answer" pairs.', path=path)
    return {str(k): v for k, v in data.items()}


def _print(rows: list[dict], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        print("  ".join(" ".join(str(row.get(c, "")).split()) for c in columns))


def _walk(items: list[dict], lang: str) -> tuple[dict[str, str], list[str]]:
    """Ask about each item on the terminal: a keeps it, e takes a new answer (one line), r rejects, q stops."""
    from lab.errors import localize

    edits: dict[str, str] = {}
    rejects: list[str] = []
    question = localize(Msg("[a]ccept, [e]dit, [r]eject, [q]uit? "), lang)
    for n, item in enumerate(items, start=1):
        print(f"\n[{n}/{len(items)}] {item['id']}  {item['source']}\n{item['answer']}")
        choice = _ask(question)
        while choice not in ("a", "e", "r", "q", "", None):
            choice = _ask(question)
        answer = _ask(localize(Msg("new answer: "), lang)) if choice == "e" else ""
        if choice in ("q", None) or answer is None:
            break
        if choice == "e":
            edits[item["id"]] = answer
        elif choice == "r":
            rejects.append(item["id"])
    return edits, rejects


def _ask(question: str) -> str | None:
    """The line typed, or None at the end of the input (piped answers ran out: keep what was decided)."""
    try:
        return input(question).strip()
    except EOFError:
        print(file=sys.stderr)
        return None
