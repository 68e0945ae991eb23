"""Export a run as one complete model folder, push it to the Hub, serve it with vLLM.

A LoRA run is merged into its base model (loaded unquantized, so a QLoRA run merges
into full-precision weights) and saved with everything ``from_pretrained`` and
``vllm serve`` need: ``config.json``, safetensors weights, ``generation_config.json``,
the processor (image processor + tokenizer) and the chat template. Merged VLM folders
that lack the tokenizer or processor files are a known LLaMA-Factory bug; here a
missing file fails the export instead of surfacing at serving time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from lab.errors import ConfigError, LabError, ModelLoadError
from lab.handle import resolve_model_name
from lab.paths import check_allowed
from lab.settings import check, setting
from lab.text import Msg
from lab.training.runs import RunFolder, find_run

# Files a complete folder has; each tuple is "one of these".
REQUIRED_FILES = (
    ("config.json",),
    ("generation_config.json",),
    ("tokenizer_config.json",),
    ("tokenizer.json", "vocab.json"),
    ("preprocessor_config.json", "processor_config.json"),
    ("chat_template.jinja", "chat_template.json"),
)


@dataclass
class ExportSettings:
    """How to merge and save a run, where to push it, and how the printed ``vllm serve`` recipe serves it."""

    base: str = setting(
        "", label="Base model (empty: the one the run was trained on)", flags=("--model",), metavar="MODEL"
    )
    """The base model to merge into (empty: the one the run was trained on); 'demo' is the tiny offline model."""
    dtype: str = setting("auto", label="Weights dtype", options=("auto", "bfloat16", "float16", "float32"))
    """Weights dtype: auto (the base model's), bfloat16 (bf16), float16 (fp16), float32 (fp32)."""
    device: str = setting("cpu", label="Merge on", options=("cpu", "cuda"))
    """Where to merge: cpu (needs RAM for the whole model) or cuda."""
    overwrite: bool = setting(False, label="Replace the output folder if it exists")
    """Replace what is in the output folder."""
    push_to_hub: str = setting("", label="Push to the Hugging Face Hub as user/name (optional)", metavar="ID")
    """Also upload to this Hugging Face Hub repo, user/name."""
    token: str = setting("", label="Hub token (empty: the saved login or HF_TOKEN)", secret=True, widget="password")
    """Hugging Face token for the push; empty: the saved login or HF_TOKEN."""
    public: bool = setting(False, label="Public repo")
    """Make the Hub repo public (else private)."""
    max_model_len: int = setting(8192, label="vLLM --max-model-len", min=256)
    """For the vllm command: the longest request in tokens; without it vLLM reserves the model's full context."""
    images_per_prompt: int = setting(5, label="Images per prompt", min=0)
    """For the vllm command: images one request may carry."""
    gpu_memory_utilization: float = setting(
        0.9, label="GPU memory utilization", above=0, max=1, widget="slider", ui_min=0.1, step=0.05
    )
    """For the vllm command: the share of GPU memory vLLM may take."""

    def __post_init__(self):
        check(self)


@dataclass
class ExportResult:
    out_dir: Path
    base_model: str
    run: str
    merged: bool
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    hub_url: str | None = None


def missing_files(folder: str | Path) -> list[str]:
    """The required files a model folder lacks (``a | b`` when either would do); also checks for weights."""
    folder = Path(folder)
    missing = [" | ".join(names) for names in REQUIRED_FILES if not any((folder / n).is_file() for n in names)]
    if not list(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    return missing


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    settings: ExportSettings | None = None,
    source: dict | None = None,
    **changes,
) -> ExportResult:
    """Merge the run's adapter into the base model (default: the run's) and save a complete folder.

    ``settings`` (or the defaults), with ``changes`` to its fields. A full fine-tuning run is
    re-saved the same way. The folder is written next to ``out_dir`` and renamed into place, so
    a failed export leaves nothing half-written. ``dtype`` "auto" keeps the base model's own
    dtype (as in its config). ``source`` holds the loading options of the base model
    (:meth:`lab.hubs.SourceSettings.load_options`: trust_remote_code, hub).
    """
    settings = replace(settings or ExportSettings(), **changes)
    start = time.perf_counter()
    run = RunFolder.read(find_run(run_dir))
    out_dir = check_allowed(Path(out_dir).expanduser().resolve(), write=True)
    _check_out_dir(out_dir, run.path, settings.overwrite)
    base_name = settings.base or (run.base_model if run.adapter_dir else str(run.model_dir))
    staging = out_dir.parent / f".{out_dir.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_merged(run, resolve_model_name(base_name), staging, settings.dtype, settings.device, source or {})
        missing = missing_files(staging)
        if missing:
            raise LabError(
                "The exported folder would lack {missing}; nothing was written to {out_dir}.",
                missing=", ".join(missing),
                out_dir=out_dir,
            )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = ExportResult(
        out_dir,
        base_name,
        run.name,
        run.adapter_dir is not None,
        sorted(p.name for p in out_dir.iterdir()),
        round(time.perf_counter() - start, 2),
    )
    if settings.push_to_hub:
        result.hub_url = push_folder(
            out_dir, settings.push_to_hub, token=settings.token or None, private=not settings.public
        )
    return result


def _check_out_dir(out_dir: Path, run_path: Path, overwrite: bool) -> None:
    if out_dir == run_path or run_path in out_dir.parents:
        raise ConfigError("Export into a folder outside the run ({run_path}), not into it.", run_path=run_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("{out_dir} is a file; choose a folder to export into.", out_dir=out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError("{out_dir} is not empty; choose a new folder or allow overwriting.", out_dir=out_dir)


def _write_merged(run: RunFolder, base: str, folder: Path, dtype: str, device: str, source: dict) -> None:
    from lab.models import load_model
    from lab.pixel_limits import set_image_pixels

    if dtype == "auto":
        dtype = _config_dtype(base)
    loaded = load_model(base, dtype=dtype, device=device, **source)
    model = loaded.model
    if run.adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(run.adapter_dir)).merge_and_unload()
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ModelLoadError(
                "The adapter of {run_name} does not fit {base}: {detail}", run_name=run.name, base=base, detail=detail
            ) from None
    # A run that trained lm_head apart from the tied embeddings stays untied: PEFT's merge
    # clears tie_word_embeddings (a test checks it, as saving tied would drop the trained head).
    model.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    processor = _run_processor(run) or loaded.processor
    # The run saw images at its own pixel bounds; a server must resize them the same way.
    set_image_pixels(processor, min_pixels=run.min_pixels, max_pixels=run.max_pixels, family=loaded.family)
    processor.save_pretrained(folder)
    _ensure_chat_template(folder, processor)
    card = {
        "base_model": base if not Path(base).exists() else Path(base).name,
        "run": run.name,
        "merged_lora": run.adapter_dir is not None,
        "exported": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (folder / "lab_export.json").write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _config_dtype(base: str) -> str:
    """The dtype the base model's config names (``auto`` for a folder or Hub id without one)."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError):
        return "auto"
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(dtype).removeprefix("torch.") if dtype else "auto"


def _run_processor(run: RunFolder):
    """The processor saved in the run folder (it carries the run's pixel bounds), if any."""
    from transformers import AutoProcessor

    for folder in (run.path, run.path.parent):
        if (folder / "tokenizer_config.json").is_file():
            try:
                return AutoProcessor.from_pretrained(folder)
            except (OSError, ValueError, TypeError):
                return None
    return None


def _ensure_chat_template(folder: Path, processor) -> None:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    if not template:
        raise LabError("The model has no chat template, so a server could not format conversations for it.")
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")


# ---------------------------------------------------------------- the Hub


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = True) -> str:
    """Upload an exported folder to the Hugging Face Hub model repo ``repo_id``; returns its URL."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if "/" not in repo_id.strip("/"):
        raise ConfigError("Name the Hub repo as user/name (or org/name), not {repo_id!r}.", repo_id=repo_id)
    if hub_offline():
        raise LabError(
            "Cannot push to the Hugging Face Hub offline (HF_HUB_OFFLINE is set); the folder is saved locally."
        )
    token = token or get_token()
    if not token:
        raise LabError(
            "Pushing to the Hub needs a Hugging Face token: run 'hf auth login', set HF_TOKEN, or paste one."
        )
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload model exported by VLM Lab")
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        refused = Msg("the token was refused")
        reason = refused if status in (401, 403) else f"HTTP {status}" if status else str(err)[:200]
        raise LabError(
            "The Hugging Face Hub refused the upload to {repo_id} ({reason}).", repo_id=repo_id, reason=reason
        ) from None
    except OSError as err:  # connection errors of the HTTP client are OSErrors
        raise LabError(
            "Cannot reach the Hugging Face Hub ({err_type}); the folder is saved locally.", err_type=type(err).__name__
        ) from None
    return str(url)


# ---------------------------------------------------------------- serving recipe


def vllm_command(
    model_dir: str | Path,
    settings: ExportSettings | None = None,
    *,
    served_name: str | None = None,
    port: int = 8000,
    dtype: str = "bfloat16",
    tensor_parallel_size: int = 1,
    **changes,
) -> str:
    """The ``vllm serve`` command for an exported folder, with the flags that matter for VLMs.

    The serving numbers come from ``settings`` (or the defaults) with ``changes`` to its fields
    (``max_model_len=...``). ``--max-model-len``: without it vLLM reserves the model's full
    context (128k for Qwen2.5-VL) and refuses to start when the KV cache cannot hold that much.
    """
    settings = replace(settings or ExportSettings(), **changes)
    name = served_name or Path(model_dir).name
    lines = [
        f"vllm serve {_quote(str(model_dir))}",
        f"--served-model-name {_quote(name)}",
        f"--port {int(port)}",
        f"--dtype {dtype}",
        f"--max-model-len {settings.max_model_len}",
        f"--limit-mm-per-prompt '{json.dumps({'image': settings.images_per_prompt, 'video': 0})}'",
        f"--gpu-memory-utilization {settings.gpu_memory_utilization:g}",
    ]
    if tensor_parallel_size > 1:
        lines.append(f"--tensor-parallel-size {int(tensor_parallel_size)}")
    return " \\\n  ".join(lines)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def openai_snippet(served_name: str, *, port: int = 8000, prompt: str = "Describe this image.") -> str:
    """Python that sends a local image to the served model with the ``openai`` client."""
    return f"""# pip install openai
import base64
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:{int(port)}/v1", api_key="EMPTY")
with open("image.png", "rb") as f:
    image_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
reply = client.chat.completions.create(
    model={served_name!r},
    messages=[{{"role": "user", "content": [
        {{"type": "image_url", "image_url": {{"url": image_url}}}},
        {{"type": "text", "text": {prompt!r}}},
    ]}}],
    max_tokens=512,
    temperature=0,
)
print(reply.choices[0].message.content)
"""
