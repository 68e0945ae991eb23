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

from dataclasses import dataclass, field, fields
from pathlib import Path

from lab.config_values import apply_overrides, coerce_value, format_override
from lab.errors import ConfigError
from lab.paths import PRESETS_DIR
from lab.presets import check_keys, closest, dump_yaml, load_yaml_strict
from lab.text import Msg

DEMO_MODEL = "demo"
METHODS = ("lora", "qlora", "full")
PARTS = ("language", "vision", "merger")
CHOICES = {
    "method": METHODS,
    "lr_scheduler": ("cosine", "linear", "constant", "constant_with_warmup"),
    "report_to": ("none", "tensorboard", "wandb"),
    "overlong": ("drop", "error"),
    "dtype": ("auto", "bfloat16", "float16", "float32"),
    "quant_compute_dtype": ("auto", "bfloat16", "float16", "float32"),
    "deepspeed": (None, "zero2", "zero3"),
    "quant_bits": (4, 8),
}


@dataclass
class TrainConfig:
    """Everything a training run needs; contradictions are refused when it is built."""

    # --- what to train, on what, and where to write it
    model: str = DEMO_MODEL
    """Hub id (``Qwen/Qwen2.5-VL-3B-Instruct``), a local model folder, or ``demo`` for the tiny offline demo model."""
    dataset: str = "data/sample"
    """Dataset folder (with ``data.jsonl``) or a ``.jsonl`` file. A relative path is looked up in the workspace,
    then in the repository checkout, which holds the bundled ``data/sample``."""
    val_dataset: str | None = None
    """A separate validation set; when given, ``val_ratio`` is not used."""
    output_dir: str = "checkpoints"
    """Folder that holds run folders; a relative path is inside the workspace."""
    run_name: str | None = None
    """Name of this run's folder inside ``output_dir``; None makes one from the model and the time."""
    system: str | None = None
    """System prompt that replaces the one in every sample; None keeps the samples' own."""

    # --- fine-tuning method
    method: str = "lora"
    """``lora`` (adapters on a frozen model), ``qlora`` (adapters on a quantized model) or ``full`` (train weights)."""
    lora_rank: int = 8
    """Rank of the LoRA update matrices; more rank, more capacity and memory."""
    lora_alpha: int = 32
    """LoRA scaling numerator: the update is scaled by alpha / rank (alpha / sqrt(rank) with rsLoRA)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    use_rslora: bool = False
    """Rank-stabilised LoRA: scale by alpha / sqrt(rank), which keeps high ranks learning."""
    use_dora: bool = False
    """DoRA: learn a magnitude vector next to the LoRA direction; a bit better, slower."""
    loraplus_lr_ratio: float | None = None
    """LoRA+: the B matrices learn this many times faster than A (16 is usual); None turns it off."""
    lora_targets: list[str] = field(default_factory=lambda: ["language"])
    """Parts that get LoRA adapters on their linear layers: any of ``language``, ``vision``, ``merger``."""
    train_vision: bool = False
    """Train the vision tower's full weights (with ``full``, or next to adapters elsewhere with ``lora``)."""
    train_merger: bool = False
    """Train the merger's full weights (the small projector from vision into the language model)."""
    train_language: bool = False
    """Train the language model's full weights."""
    quant_bits: int = 4
    """QLoRA: bits of the quantized base weights, 4 (NF4) or 8."""
    double_quant: bool = True
    """QLoRA: also quantize the quantization constants (saves about 0.4 bits per weight)."""
    quant_compute_dtype: str = "auto"
    """QLoRA: dtype the quantized layers compute in; ``auto`` follows ``dtype``."""
    dtype: str = "auto"
    """Training precision: ``auto`` is bfloat16 on GPUs that support it, float16 on older GPUs, float32 on CPU."""

    # --- optimisation
    learning_rate: float = 1e-4
    """Peak learning rate."""
    num_epochs: float = 5.0
    """Passes over the training set (may be fractional); used when ``max_steps`` is -1."""
    max_steps: int = -1
    """Optimizer steps to run; -1 means run ``num_epochs`` epochs."""
    per_device_batch_size: int = 1
    """Samples per forward pass on each device."""
    gradient_accumulation_steps: int = 16
    """Forward passes per optimizer step; effective batch = batch size x this x GPUs."""
    max_length: int = 2048
    """Longest sample in tokens, image tokens included."""
    overlong: str = "drop"
    """What to do with samples longer than ``max_length``: ``drop`` them (reported) or stop with an ``error``.
    They are never truncated: cutting a sample would cut its answer or its image tokens."""
    warmup_ratio: float = 0.05
    """Fraction of the steps over which the learning rate ramps up from 0."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warmup: cosine, linear, constant or constant_with_warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 turns clipping off."""
    seed: int = 42
    """Seed for the train/validation split, shuffling and adapter initialisation."""
    val_ratio: float = 0.01
    """Fraction of the dataset held out for validation (at least one sample when > 0); 0 means none."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: much less memory for about 30% more time."""
    torch_compile: bool = True
    """Compile the language model's layers with torch.compile on a CUDA GPU: about 1.4-1.7x faster
    LoRA steps after a warm-up of a few seconds, same memory (BENCHMARKS.md); a layer that cannot
    compile runs as before. Ignored on the CPU and for qlora."""

    # --- images
    min_pixels: int | None = None
    """Smallest image area the processor resizes to; None keeps the processor's default."""
    max_pixels: int | None = 1003520
    """Largest image area (1280 x 28 x 28). The processor's own default, about 12.8 MP, gives up to
    16k image tokens, far beyond ``max_length``; None keeps that default anyway."""

    # --- logging and saving
    logging_steps: int = 5
    """Optimizer steps between lines in metrics.jsonl (and the live loss plot)."""
    eval_steps: int = 50
    """Optimizer steps between validation-loss evaluations."""
    save_steps: int = 100
    """Optimizer steps between checkpoints."""
    save_total_limit: int | None = 2
    """Checkpoints to keep (the oldest are deleted); None keeps all."""
    report_to: str = "none"
    """Also log to ``tensorboard`` or ``wandb``; metrics.jsonl is always written."""

    # --- hardware
    num_gpus: int = 1
    """GPUs to train on; 1 trains in the app's process (on the CPU when there is no GPU), more use accelerate."""
    deepspeed: str | None = None
    """DeepSpeed ZeRO stage for multi-GPU runs: ``zero2`` (shard optimizer state) or ``zero3`` (shard weights too)."""

    # --- self-identity examples (the model's name and author, as in ms-swift's self-cognition data)
    identity: bool = False
    """Mix in a few "who are you?" samples that teach the model its name and author."""
    model_name: list[str] = field(default_factory=lambda: ["小黄", "Xiao Huang"])
    """The model's name, [Chinese, English]."""
    model_author: list[str] = field(default_factory=lambda: ["魔搭", "ModelScope"])
    """The model's author, [Chinese, English]."""

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, coerce_value(f.name, getattr(self, f.name), str(f.type)))
        self._check_choices()
        self._check_numbers()
        self._check_method()

    def _check_choices(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                shown = ", ".join("null" if a is None else str(a) for a in allowed)
                raise ConfigError("{name} must be one of {shown}, not '{value}'.", name=name, shown=shown, value=value)
        for part in self.lora_targets:
            if part not in PARTS:
                hint, parts = closest(part, PARTS), ", ".join(PARTS)
                raise ConfigError("lora_targets has '{part}'{hint}; parts are {parts}.",
                                  part=part, hint=hint, parts=parts)
        _require(self.model.strip() != "", Msg("model is empty; give a Hub id, a model folder or 'demo'."))
        _require(self.dataset.strip() != "", Msg("dataset is empty; give a dataset folder or a .jsonl file."))

    def _check_numbers(self) -> None:
        _require(self.learning_rate > 0, Msg("learning_rate must be greater than 0, not {learning_rate}.",
                                             learning_rate=self.learning_rate))
        _require(self.max_steps > 0 or self.num_epochs > 0,
                 Msg("max_steps and num_epochs are both <= 0, so there is nothing to train; set one of them."))
        _require(self.max_steps > 0 or self.max_steps == -1,
                 Msg("max_steps must be a positive number of steps or -1 (use num_epochs), not {max_steps}.",
                     max_steps=self.max_steps))
        for name in ("val_ratio", "warmup_ratio", "lora_dropout"):
            value = getattr(self, name)
            _require(0 <= value < 1, Msg("{name} must be at least 0 and below 1, not {value}.",
                                         name=name, value=value))
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            _require(value >= 0, Msg("{name} cannot be negative, not {value}.", name=name, value=value))
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "lora_rank", "lora_alpha", "num_gpus",
                     "logging_steps", "eval_steps", "save_steps", "save_total_limit", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            _require(value is None or value >= 1, Msg("{name} must be at least 1, not {value}.",
                                                      name=name, value=value))
        _require(self.max_length >= 32, Msg("max_length must be at least 32 tokens, not {max_length}.",
                                            max_length=self.max_length))
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
        _require(self.loraplus_lr_ratio is None or self.loraplus_lr_ratio > 0,
                 Msg("loraplus_lr_ratio must be greater than 0, not {loraplus_lr_ratio}.",
                     loraplus_lr_ratio=self.loraplus_lr_ratio))
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
        check_keys(data, field_names(), where)
        return cls(**data)

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
    return [f.name for f in fields(TrainConfig)]


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
