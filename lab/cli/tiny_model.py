"""``python -m lab tiny-model``: build a tiny random model folder, offline, in seconds."""

from __future__ import annotations

from lab.families import tiny_families  # the table alone: no torch, so --help stays instant


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tiny-model",
        help="build a tiny random vision-language model (offline, for tests and demos)",
        description="Build a tiny randomly initialised model with the real architecture, tokenizer and chat "
        "template of a model family (its real processor classes, its real special-token ids), without any "
        "download. Its answers are noise: it is for trying the lab's workflow (training, evaluation, chat) on a CPU.",
    )
    parser.add_argument(
        "--family", choices=tiny_families(), default="qwen2_5_vl", help="model family (default: %(default)s)"
    )
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="folder to write (default: the workspace's models/tiny-FAMILY)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from lab import paths
    from lab.tiny import build_tiny_model, tiny_model_info

    out = args.out or paths.demo_model_dir(args.family)
    folder = build_tiny_model(args.family, out, seed=args.seed)
    info = tiny_model_info(folder) or {}
    print(folder)
    print(
        f"tiny random {args.family} model: {info.get('num_parameters', 0):,} parameters, "
        f"vocabulary of {info.get('vocab_size', 0):,} tokens, seed {args.seed}"
    )
    return 0
