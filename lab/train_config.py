"""The training configuration: one dataclass that the UI form, the CLI and the YAML presets fill.

A run saves its fully resolved ``TrainConfig`` as ``config.yaml`` next to its
checkpoints. Presets live in ``presets/train/<name>.yaml``; a field a preset leaves out
keeps the default below. ``--set key=value`` overrides are read with YAML typing
(:mod:`lab.config_values`)::

    cfg = TrainConfig.from_preset("lora", ["lora_rank=16", "lora_targets=[language,vision]"])
    cfg.cli_overrides("lora")   # -> ['lora_rank=16', 'lora_targets=[language, vision]']

The model is split in three parts that can be trained or frozen independently:
``vision`` (the ViT), ``merger`` (the projector from vision features into the language
model) and ``language`` (the LLM). With ``method: lora`` or ``qlora`` the parts in
``lora_targets`` get adapters; ``train_<part>`` trains a part's full weights (with
``full``, or next to adapters on the other parts with ``lora``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from lab.config_values import apply_overrides, format_override
from lab.errors import ConfigError
from lab.paths import PRESETS_DIR
from lab.presets import closest, dump_yaml, load_yaml_strict
from lab.settings import build, check, setting, settings_of
from lab.text import Msg

DEMO_MODEL = "demo"
METHODS = ("lora", "qlora", "full")
PARTS = ("language", "vision", "merger")
PART_LABELS = {"language": Msg("language model"), "vision": Msg("vision tower"),
               "merger": Msg("merger (vision → language)")}
DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class TrainConfig:
    """Everything a training run needs; contradictions are refused when it is built."""

    # --- what to train, on what, and where to write it
    model: str = setting(DEMO_MODEL, label="Model (Hub id, folder, or demo)", widget="path")
    """Hub id (``Qwen/Qwen2.5-VL-3B-Instruct``), a local model folder, or ``demo`` for the tiny offline demo model."""
    dataset: str = setting("data/sample", label="Dataset", widget="path")
    """Dataset folder (with ``data.jsonl``) or a ``.jsonl`` file. A relative path is looked up in the workspace,
    then in the repository checkout, which holds the bundled ``data/sample``."""
    val_dataset: str | None = setting(None, label="Validation dataset (optional)", widget="path")
    """A separate validation set; when given, ``val_ratio`` is not used."""
    output_dir: str = setting("checkpoints", label="Output folder")
    """Folder that holds run folders; a relative path is inside the workspace."""
    run_name: str | None = setting(None, label="Run name (empty: automatic)")
    """Name of this run's folder inside ``output_dir``; None makes one from the model and the time."""
    system: str | None = setting(None, label="System prompt for every sample (empty: keep the samples')")
    """System prompt that replaces the one in every sample; None keeps the samples' own."""

    # --- where the model comes from
    trust_remote_code: bool = setting(False, label="Trust remote code")
    """Run the Python code a model ships with (its config's auto_map); only for authors you trust. Refused on
    shared deployments."""
    hub: str | None = setting(None, label="Download models from", choices=(None, "huggingface", "modelscope"))
    """Where a Hub id is downloaded from: huggingface or modelscope; None: $LAB_MODEL_HUB, else the Hugging Face Hub."""

    # --- fine-tuning method
    method: str = setting("lora", label="Method", choices=METHODS)
    """``lora`` (adapters on a frozen model), ``qlora`` (adapters on a quantized model) or ``full`` (train weights)."""
    lora_rank: int = setting(8, label="LoRA rank", min=1)
    """Rank of the LoRA update matrices; more rank, more capacity and memory."""
    lora_alpha: int = setting(32, label="LoRA alpha", min=1)
    """LoRA scaling numerator: the update is scaled by alpha / rank (alpha / sqrt(rank) with rsLoRA)."""
    lora_dropout: float = setting(0.05, label="LoRA dropout", min=0, below=1)
    """Dropout on the LoRA input during training."""
    use_rslora: bool = setting(False, label="rsLoRA")
    """Rank-stabilised LoRA: scale by alpha / sqrt(rank), which keeps high ranks learning."""
    use_dora: bool = setting(False, label="DoRA")
    """DoRA: learn a magnitude vector next to the LoRA direction; a bit better, slower."""
    loraplus_lr_ratio: float | None = setting(None, label="LoRA+ learning-rate ratio (empty: off)", above=0)
    """LoRA+: the B matrices learn this many times faster than A (16 is usual); None turns it off."""
    lora_targets: list[str] = setting(["language"], label="LoRA on", choices=PARTS,
                                      widget="checkboxes", choice_labels=PART_LABELS)
    """Parts that get LoRA adapters on their linear layers: any of ``language``, ``vision``, ``merger``."""
    train_vision: bool = setting(False, label="Train the vision tower (full)")
    """Train the vision tower's full weights (with ``full``, or next to adapters elsewhere with ``lora``)."""
    train_merger: bool = setting(False, label="Train the merger (full)")
    """Train the merger's full weights (the small projector from vision into the language model)."""
    train_language: bool = setting(False, label="Train the language model (full)")
    """Train the language model's full weights."""
    quant_bits: int = setting(4, label="QLoRA bits", choices=(4, 8))
    """QLoRA: bits of the quantized base weights, 4 (NF4) or 8."""
    double_quant: bool = setting(True, label="Double quantization")
    """QLoRA: also quantize the quantization constants (saves about 0.4 bits per weight)."""
    quant_compute_dtype: str = setting("auto", label="QLoRA compute dtype", choices=DTYPES)
    """QLoRA: dtype the quantized layers compute in; ``auto`` follows ``dtype``."""
    dtype: str = setting("auto", label="Precision", choices=DTYPES)
    """Training precision: ``auto`` is bfloat16 on GPUs that support it, float16 on older GPUs, float32 on CPU."""

    # --- optimisation
    learning_rate: float = setting(1e-4, label="Learning rate", above=0)
    """Peak learning rate."""
    num_epochs: float = setting(5.0, label="Epochs")
    """Passes over the training set (may be fractional); used when ``max_steps`` is -1."""
    max_steps: int = setting(-1, label="Max steps (-1: use epochs)")
    """Optimizer steps to run; -1 means run ``num_epochs`` epochs."""
    per_device_batch_size: int = setting(1, label="Batch size per GPU", min=1)
    """Samples per forward pass on each device."""
    gradient_accumulation_steps: int = setting(16, label="Gradient accumulation", min=1)
    """Forward passes per optimizer step; effective batch = batch size x this x GPUs."""
    max_length: int = setting(2048, label="Max length (tokens)", min=32)
    """Longest sample in tokens, image tokens included."""
    overlong: str = setting("drop", label="Samples over max length", choices=("drop", "error"))
    """What to do with samples longer than ``max_length``: ``drop`` them (reported) or stop with an ``error``.
    They are never truncated: cutting a sample would cut its answer or its image tokens."""
    warmup_ratio: float = setting(0.05, label="Warmup ratio", min=0, below=1)
    """Fraction of the steps over which the learning rate ramps up from 0."""
    lr_scheduler: str = setting("cosine", label="Scheduler",
                                choices=("cosine", "linear", "constant", "constant_with_warmup"))
    """Learning-rate schedule after warmup: cosine, linear, constant or constant_with_warmup."""
    weight_decay: float = setting(0.0, label="Weight decay", min=0)
    """AdamW weight decay."""
    max_grad_norm: float = setting(1.0, label="Max grad norm", min=0)
    """Gradient clipping norm; 0 turns clipping off."""
    seed: int = setting(42, label="Seed")
    """Seed for the train/validation split, shuffling and adapter initialisation."""
    val_ratio: float = setting(0.01, label="Validation ratio", min=0, below=1)
    """Fraction of the dataset held out for validation (at least one sample when > 0); 0 means none."""
    gradient_checkpointing: bool = setting(True, label="Gradient checkpointing")
    """Recompute activations in the backward pass: much less memory for about 30% more time."""
    torch_compile: bool = setting(True, label="torch.compile (GPU)")
    """Compile the language model's layers with torch.compile on a CUDA GPU: about 1.4-1.7x faster
    LoRA steps after a warm-up of a few seconds, same memory (BENCHMARKS.md); a layer that cannot
    compile runs as before. Ignored on the CPU and for qlora."""

    # --- images
    min_pixels: int | None = setting(None, label="Min pixels per image", min=1)
    """Smallest image area the processor resizes to; None keeps the processor's default."""
    max_pixels: int | None = setting(1003520, label="Max pixels per image", min=1)
    """Largest image area (1280 x 28 x 28). The processor's own default, about 12.8 MP, gives up to
    16k image tokens, far beyond ``max_length``; None keeps that default anyway."""

    # --- logging and saving
    logging_steps: int = setting(5, label="Log every N steps", min=1)
    """Optimizer steps between lines in metrics.jsonl (and the live loss plot)."""
    eval_steps: int = setting(50, label="Evaluate every N steps", min=1)
    """Optimizer steps between validation-loss evaluations."""
    save_steps: int = setting(100, label="Save every N steps", min=1)
    """Optimizer steps between checkpoints."""
    save_total_limit: int | None = setting(2, label="Checkpoints to keep", min=1)
    """Checkpoints to keep (the oldest are deleted); None keeps all."""
    report_to: str = setting("none", label="Also log to", choices=("none", "tensorboard", "wandb"))
    """Also log to ``tensorboard`` or ``wandb``; metrics.jsonl is always written."""

    # --- hardware
    num_gpus: int = setting(1, label="GPUs", min=1)
    """GPUs to train on; 1 trains in the app's process (on the CPU when there is no GPU), more use accelerate."""
    deepspeed: str | None = setting(None, label="DeepSpeed", choices=(None, "zero2", "zero3"))
    """DeepSpeed ZeRO stage for multi-GPU runs: ``zero2`` (shard optimizer state) or ``zero3`` (shard weights too)."""

    # --- self-identity examples (the model's name and author, as in ms-swift's self-cognition data)
    identity: bool = setting(False, label="Add self-identity samples")
    """Mix in a few "who are you?" samples that teach the model its name and author."""
    model_name: list[str] = setting(["小黄", "Xiao Huang"], label="Model name (中文, English)")
    """The model's name, [Chinese, English]."""
    model_author: list[str] = setting(["魔搭", "ModelScope"], label="Model author (中文, English)")
    """The model's author, [Chinese, English]."""

    def __post_init__(self):
        check(self)  # types, bounds and choices, from the fields above
        _require(self.model.strip() != "", Msg("model is empty; give a Hub id, a model folder or 'demo'."))
        _require(self.dataset.strip() != "", Msg("dataset is empty; give a dataset folder or a .jsonl file."))
        self._check_numbers()
        self._check_method()

    def _check_numbers(self) -> None:
        _require(self.max_steps > 0 or self.num_epochs > 0,
                 Msg("max_steps and num_epochs are both <= 0, so there is nothing to train; set one of them."))
        _require(self.max_steps > 0 or self.max_steps == -1,
                 Msg("max_steps must be a positive number of steps or -1 (use num_epochs), not {max_steps}.",
                     max_steps=self.max_steps))
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ConfigError("min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}).",
                              min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        for name in ("model_name", "model_author"):
            value = getattr(self, name)
            _require(len(value) == 2 and all(v.strip() for v in value),
                     Msg("{name} must be two names, [Chinese, English], not {value}.", name=name, value=value))

    def _check_method(self) -> None:
        trained = [part for part in PARTS if getattr(self, f"train_{part}")]
        if self.method == "full":
            for name in ("use_rslora", "use_dora", "loraplus_lr_ratio"):
                _require(getattr(self, name) in (False, None),
                         Msg("{name} applies to LoRA adapters, but method is 'full'; "
                             "use method 'lora' or turn it off.", name=name))
            _require(bool(trained), Msg("method 'full' with train_vision, train_merger and train_language all false "
                                        "trains nothing; set at least one to true."))
            return
        _require(bool(self.lora_targets), Msg("method '{method}' needs at least one part in lora_targets; "
                                              "to train parts without adapters use method 'full'.",
                                              method=self.method))
        if self.method == "qlora":
            if trained:
                raise ConfigError("qlora keeps the base weights quantized, which cannot train, so train_{trained} "
                                  "must be false; use method 'lora' to train full weights next to adapters.",
                                  trained=trained[0])
            _require(self.deepspeed != "zero3", Msg("qlora cannot be combined with DeepSpeed zero3, which shards the "
                                                    "quantized weights; use zero2 or method 'lora'."))
        for part in trained:
            _require(part not in self.lora_targets, Msg("'{part}' is in lora_targets and train_{part} is true; "
                                                        "a part gets either adapters or full training, not both.",
                                                        part=part))

    # --- YAML and overrides

    @classmethod
    def from_dict(cls, data: dict, where: str | Msg = Msg("the training config")) -> "TrainConfig":
        """Build from a mapping; an unknown key is a :class:`ConfigError` naming it and the closest field."""
        return build(cls, data, where=where)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides=()) -> "TrainConfig":
        """Load a YAML config, then apply ``key=value`` overrides (values read as YAML)."""
        data = load_yaml_strict(path, field_names())
        return cls.from_dict(apply_overrides(data, overrides, cls), str(path))

    @classmethod
    def from_preset(cls, name: str, overrides=()) -> "TrainConfig":
        """Load ``presets/train/<name>.yaml`` (or a YAML path), then apply overrides."""
        return cls.from_yaml(train_preset_path(name), overrides)

    def to_dict(self) -> dict:
        """Every field and its value, in declaration order."""
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    def to_yaml(self, path: str | Path) -> Path:
        """Write the fully resolved config (every field) to ``path`` and return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(self.to_dict()), encoding="utf-8")
        return path

    def cli_overrides(self, base_preset: str = "lora") -> list[str]:
        """The ``key=value`` list that turns preset ``base_preset`` into this config (for "Show command")."""
        base = TrainConfig.from_preset(base_preset).to_dict()
        return [f"{name}={format_override(value)}" for name, value in self.to_dict().items() if base[name] != value]


def _require(ok: bool, sentence: Msg) -> None:
    if not ok:
        raise ConfigError(sentence)  # dynamic template: the Msg a check failed with


def _copy(value):
    return list(value) if isinstance(value, list) else value


def field_names() -> list[str]:
    """The fields' names, and the names they had before (read back from older run configs)."""
    return [name for s in settings_of(TrainConfig) for name in (s.name, *s.old_names)]


def train_presets_dir() -> Path:
    return PRESETS_DIR / "train"


def list_train_presets() -> list[str]:
    """Names of the bundled training presets."""
    return sorted(p.stem for p in train_presets_dir().glob("*.yaml"))


def train_preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; a path to a YAML file is returned as is."""
    if str(name).endswith((".yaml", ".yml")) or "/" in str(name):
        return Path(name).expanduser()
    path = train_presets_dir() / f"{name}.yaml"
    if not path.is_file():
        known = list_train_presets()
        hint, names = closest(name, known), ", ".join(known)
        raise ConfigError("no training preset named '{name}'{hint}; known presets: {names}.",
                          name=name, hint=hint, names=names)
    return path
