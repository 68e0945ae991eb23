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

``trainer`` says what the chosen weights learn from: ``sft`` the reference answers, ``grpo``
rewards for answers the model samples itself (:mod:`lab.training.grpo`, with its settings in
the block of its own at the end). Any trainer goes with any method.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from lab.config_values import apply_overrides, format_override
from lab.errors import ConfigError
from lab.paths import PRESETS_DIR
from lab.settings import build, check, setting, settings_of
from lab.text import Msg
from lab.train_config_rules import check_rules
from lab.training.mix import normalize_datasets
from lab.training.rewards import as_entries
from lab.yaml_files import closest, dump_yaml, load_yaml_strict

DEMO_MODEL = "demo"  # the tiny random demo model, built offline on first use (lab/tiny.py)
METHODS = ("lora", "qlora", "full")
PARTS = ("language", "vision", "merger")
PART_LABELS = {
    "language": Msg("language model"),
    "vision": Msg("vision tower"),
    "merger": Msg("merger (vision → language)"),
}
DTYPES = ("auto", "bfloat16", "float16", "float32")
GENERATION_METRICS = ("bleu", "chrf", "rouge_l", "exact_match", "json_valid", "json_key_f1")
BEST_METRICS = ("eval_loss", *GENERATION_METRICS)
DEEPSPEED_STAGES = ("zero2", "zero3", "zero3_offload")
TRAINERS = ("sft", "grpo")
AUTO = "auto"  # per_device_batch_size and gradient_checkpointing chosen from the memory forecast
CHECKPOINTING_LABELS = {AUTO: Msg("auto: off when the memory allows"), True: Msg("on"), False: Msg("off")}
TRAINER_LABELS = {"sft": Msg("SFT: learn the reference answers"), "grpo": Msg("GRPO: learn from rewards")}


@dataclass
class TrainConfig:
    """Everything a training run needs; contradictions are refused when it is built."""

    # --- what to train, on what, and where to write it
    model: str = setting(DEMO_MODEL, label="Model (Hub id, folder, or demo)", widget="path")
    """Hub id (``Qwen/Qwen2.5-VL-3B-Instruct``), a local model folder, or ``demo`` for the tiny offline demo model."""
    dataset: str | list[str] = setting("data/sample", label="Dataset", widget="paths")
    """Dataset folder (with ``data.jsonl``) or a ``.jsonl`` file, or a list of them mixed into one run:
    ``[data/a, data/b:0.5, data/c:200]``. After a ``:``, a number with a point scales that dataset (``0.5``
    takes half of its samples, ``2.0`` each sample twice) and a whole number takes that many samples
    (repeating some when the dataset has fewer); in YAML an entry may also be a mapping,
    ``{path: data/b, weight: 0.5}`` or ``{path: data/c, samples: 200}``. The samples are drawn with
    ``seed``, ``val_ratio`` holds out the same share of each dataset, and the run folder's
    ``data_mix.json`` records how many each gave. A relative path is looked up in the workspace, then
    in the repository checkout, which holds the bundled ``data/sample``."""
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
    lora_targets: list[str] = setting(
        ["language"], label="LoRA on", choices=PARTS, widget="checkboxes", choice_labels=PART_LABELS
    )
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
    per_device_batch_size: int | str = setting(
        AUTO, label="Batch size per GPU", min=1, options=(AUTO, 1, 2, 4, 8, 16, 32)
    )
    """Samples per forward pass on each device, or ``auto``: on a GPU the largest batch that the memory forecast
    fits on the card (``gradient_accumulation_steps`` then changes so that the effective batch stays that of a
    batch of 1, see ``auto_keeps_effective_batch``); on the CPU 1. The run's config.yaml holds the number."""
    gradient_accumulation_steps: int = setting(16, label="Gradient accumulation", min=1)
    """Forward passes per optimizer step; effective batch = batch size x this x GPUs."""
    max_length: int = setting(2048, label="Max length (tokens)", min=32)
    """Longest sample in tokens, image tokens included."""
    overlong: str = setting("drop", label="Samples over max length", choices=("drop", "error"))
    """What to do with samples longer than ``max_length``: ``drop`` them (reported) or stop with an ``error``.
    They are never truncated: cutting a sample would cut its answer or its image tokens."""
    warmup_ratio: float = setting(0.05, label="Warmup ratio", min=0, below=1)
    """Fraction of the steps over which the learning rate ramps up from 0."""
    lr_scheduler: str = setting(
        "cosine", label="Scheduler", choices=("cosine", "linear", "constant", "constant_with_warmup")
    )
    """Learning-rate schedule after warmup: cosine, linear, constant or constant_with_warmup."""
    weight_decay: float = setting(0.0, label="Weight decay", min=0)
    """AdamW weight decay."""
    max_grad_norm: float = setting(1.0, label="Max grad norm", min=0)
    """Gradient clipping norm; 0 turns clipping off."""
    seed: int = setting(42, label="Seed")
    """Seed for the train/validation split, shuffling and adapter initialisation."""
    val_ratio: float = setting(0.01, label="Validation ratio", min=0, below=1)
    """Fraction of the dataset held out for validation (at least one sample when > 0); 0 means none."""
    gradient_checkpointing: bool | str = setting(
        AUTO, label="Gradient checkpointing", choices=(AUTO, True, False), choice_labels=CHECKPOINTING_LABELS
    )
    """Recompute activations in the backward pass: much less memory for about 30% more time. ``auto``: off on a
    GPU when the forecast says the activations fit (the fastest setting that fits), on on the CPU."""
    packing: bool = setting(False, label="Packing (no padding)")
    """Lay the samples of each forward pass end to end in one row instead of padding them to the longest
    (padding-free batches, as HF's DataCollatorWithFlattening and ms-swift's ``padding_free``): the same samples,
    steps and loss, with attention kept within each sample and each sample's own positions (Qwen-VL's 3-D
    positions; models with them and full attention only, else refused). Off by default: batches are already
    grouped by length, and on an H200 packed steps measured slower than padded ones (BENCHMARKS.md)."""
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

    # --- videos (records with "videos"; Qwen2-VL, Qwen2.5-VL and Qwen3-VL)
    video_max_frames: int = setting(16, label="Max frames per video", min=2)
    """Frames sampled from a video at most (an even number is used: two frames make one temporal patch)."""
    video_fps: float = setting(2.0, label="Video frames per second", above=0)
    """Frames per second sampled from a video file (qwen-vl-utils' rule); a folder of frames is taken as
    sampled at this rate."""
    video_max_pixels: int = setting(100352, label="Max pixels per video frame", min=3136)
    """Largest area of one video frame (128 x 28 x 28): 16 frames of this size are about 1024 tokens."""

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
    """Also log to ``tensorboard`` (event files in the run folder's ``runs/``) or ``wandb`` (offline too, with
    ``WANDB_MODE=offline``); metrics.jsonl is always written. Needs the package: ``pip install vlm-lab[logging]``."""

    # --- evaluation during training and the best checkpoint
    eval_metrics: list[str] = setting([], label="Answer and score while training", choices=GENERATION_METRICS)
    """At every evaluation, besides the validation loss, answer the first ``eval_samples`` validation samples
    (greedy) and score them with these metrics (0-100): written to metrics.jsonl as ``eval_<metric>`` and
    drawn on the live plot. Empty: the loss only."""
    eval_samples: int = setting(16, label="Samples answered at each evaluation", min=1)
    """How many validation samples (the first ones, the same each time) are answered for ``eval_metrics``."""
    eval_max_new_tokens: int = setting(128, label="Longest answer while training (tokens)", min=1)
    """Longest answer, in tokens, for ``eval_metrics``."""
    keep_best: bool = setting(False, label="End with the best checkpoint")
    """End the run with the weights of the checkpoint that scored best on ``best_metric`` (LLaMA-Factory's
    ``load_best_model_at_end``): the run folder then holds those. Needs validation samples, and save_steps a
    multiple of eval_steps so that every evaluated step has a checkpoint."""
    best_metric: str = setting("eval_loss", label="Best by", choices=BEST_METRICS)
    """What ``keep_best`` compares: ``eval_loss`` (lower is better) or one of ``eval_metrics`` (higher is better)."""

    # --- hardware
    num_gpus: int = setting(1, label="GPUs", min=1)
    """GPUs to train on; 1 trains in the app's process (on the CPU when there is no GPU), more use accelerate."""
    deepspeed: str | None = setting(None, label="DeepSpeed", choices=(None, *DEEPSPEED_STAGES))
    """DeepSpeed ZeRO for runs on several GPUs (num_gpus 2 or more, with the deepspeed package):
    ``zero2`` (shard optimizer state and gradients), ``zero3`` (shard the weights too) or ``zero3_offload``
    (ZeRO-3 with optimizer state and weights kept in CPU memory: slower, for full fine-tuning of a model
    too big for the GPUs' memory, as seeds 001/002 trained 7B). The configs are in presets/accelerate/."""

    # --- automatic fitting to the GPU (lab/training/fit.py)
    auto_keeps_effective_batch: bool = setting(True, label="Automatic batch keeps the effective batch")
    """With ``per_device_batch_size: auto``, change ``gradient_accumulation_steps`` so that batch x accumulation x
    GPUs stays what a batch of 1 would give (the batch is then a divisor of the accumulation asked for); off keeps
    the accumulation and takes the largest batch that fits."""

    # --- self-identity examples (the model's name and author, as in ms-swift's self-cognition data)
    identity: bool = setting(False, label="Add self-identity samples")
    """Mix in a few "who are you?" samples that teach the model its name and author."""
    model_name: list[str] = setting(["小黄", "Xiao Huang"], label="Model name (中文, English)")
    """The model's name, [Chinese, English]."""
    model_author: list[str] = setting(["魔搭", "ModelScope"], label="Model author (中文, English)")
    """The model's author, [Chinese, English]."""

    # --- GRPO: learning from rewards instead of from the reference answers (lab/training/grpo.py)
    trainer: str = setting("sft", label="Trainer", choices=TRAINERS, choice_labels=TRAINER_LABELS)
    """``sft`` learns the reference answers token by token; ``grpo`` samples several answers per prompt, scores them
    with ``rewards`` and learns from how each scores against its group (Group Relative Policy Optimization). Either
    trains the weights ``method`` names: LoRA, QLoRA or full."""
    num_generations: int = setting(4, label="Answers per prompt", min=2)
    """GRPO: answers sampled for each prompt; an answer's advantage is its reward against the others of its group."""
    temperature: float = setting(1.0, label="Temperature", above=0, max=2)
    """GRPO: sampling temperature of the answers; the group needs variety to learn anything."""
    max_new_tokens: int = setting(128, label="Max new tokens", min=1)
    """GRPO: longest sampled answer in tokens; an answer cut there is scored as it is."""
    beta: float = setting(0.04, label="KL weight (beta)", min=0)
    """GRPO: weight of the KL penalty that keeps the policy near the model it started from (the base with the
    adapter switched off; with ``method: full`` a frozen copy, which doubles the weights' memory); 0 turns it off."""
    clip_epsilon: float = setting(0.2, label="Clip range (epsilon)", above=0, below=1)
    """GRPO: the policy ratio is clipped to [1 - epsilon, 1 + epsilon], as in PPO; it only bites when
    ``num_iterations`` > 1."""
    num_iterations: int = setting(1, label="Updates per batch of answers", min=1)
    """GRPO: optimizer steps taken on each batch of sampled answers before new ones are sampled."""
    rewards: list[str] = setting(["json_valid"], label="Rewards")
    """GRPO: reward functions, each ``name`` or ``name:weight``: json_valid, json_key_f1, exact_match, bleu,
    rouge_l, length, format, or a function of your own, ``path/to/file.py:function`` (lab/training/rewards.py says how
    to write one). A YAML mapping ``{json_valid: 1, rouge_l: 0.5}`` works too."""
    reward_pattern: str | None = setting(None, label="Pattern of a good answer (format reward)")
    """GRPO: the regular expression the whole answer must match for the ``format`` reward."""
    target_length: int = setting(200, label="Target length in characters (length reward)", min=1)
    """GRPO: the answer length, in characters, that the ``length`` reward likes best."""

    def __post_init__(self):
        self.dataset = normalize_datasets(self.dataset)  # YAML mappings ({path, weight}) as their text
        self.rewards = as_entries(self.rewards)  # a YAML mapping {name: weight} is the list [name:weight]
        check(self)  # types, bounds and choices, from the fields above
        check_rules(self)  # the rules between fields (lab/train_config_rules.py)

    # --- YAML and overrides

    @classmethod
    def from_dict(cls, data: dict, where: str | Msg | None = None) -> TrainConfig:
        """Build from a mapping; an unknown key is a :class:`ConfigError` naming it and the closest field."""
        return build(cls, data, where=where or Msg("the training config"))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides=()) -> TrainConfig:
        """Load a YAML config, then apply ``key=value`` overrides (values read as YAML)."""
        data = load_yaml_strict(path, field_names())
        return cls.from_dict(apply_overrides(data, overrides, cls), str(path))

    @classmethod
    def from_preset(cls, name: str, overrides=()) -> TrainConfig:
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
        raise ConfigError(
            "no training preset named '{name}'{hint}; known presets: {names}.", name=name, hint=hint, names=names
        )
    return path
