"""``python -m lab export``: merge a run's LoRA adapter into its base and save a complete model folder."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="merge a LoRA run into its base model and save a complete model folder",
        description="Merge a run's LoRA adapter into its base model and save a folder that loads with from_pretrained "
        "and serves with vLLM (safetensors, processor, tokenizer, chat template, generation config).",
    )
    parser.add_argument("--model", default=None, help="the base model (default: the one the run was trained on); 'demo' is the tiny offline model")
    parser.add_argument("--adapter", required=True, metavar="RUN", help="the training run: a name under checkpoints/ or a folder")
    parser.add_argument("--out", required=True, help="new (or empty) folder for the merged model")
    parser.add_argument("--overwrite", action="store_true", help="replace what is in --out")
    parser.add_argument("--dtype", default="auto", help="weights dtype: auto (the base model's), bf16, fp16, fp32")
    parser.add_argument("--device", default="cpu", help="where to merge: cpu (default, needs RAM for the whole model) or cuda")
    parser.add_argument("--push-to-hub", default=None, metavar="ID", help="also upload to the Hugging Face Hub repo user/name")
    parser.add_argument("--public", action="store_true", help="make the Hub repo public (default: private)")
    parser.add_argument("--max-model-len", type=int, default=8192, help="for the printed vllm command (default: 8192)")
    parser.add_argument("--images-per-prompt", type=int, default=5, help="for the printed vllm command (default: 5)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="for the printed vllm command (default: 0.9)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.export import export_run, openai_snippet, vllm_command

    result = export_run(args.adapter, args.out, base=args.model, dtype=args.dtype, device=args.device,
                        overwrite=args.overwrite, push_to_hub=args.push_to_hub, private=not args.public)  # fmt: skip
    what = "Merged the LoRA adapter of" if result.merged else "Saved the fine-tuned model of"
    print(f"{what} {result.run} into {result.out_dir} ({result.seconds:.1f} s): {', '.join(result.files)}")
    if result.hub_url:
        print(f"Uploaded to {result.hub_url}")
    print("\nServe it with vLLM:\n")
    print(vllm_command(result.out_dir, max_model_len=args.max_model_len, images_per_prompt=args.images_per_prompt,
                       gpu_memory_utilization=args.gpu_memory_utilization))  # fmt: skip
    print("\nCall it with the openai client:\n")
    print(openai_snippet(result.out_dir.name))
    return 0
