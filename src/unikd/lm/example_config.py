"""The settings of ``unikd lm-distill``: a typed config read from YAML, with ``key=value`` overrides.

Unknown keys fail with the closest valid key. ``--quick`` swaps in :data:`QUICK` (a smoke test of every
stage in about a minute; its numbers mean nothing). The resolved config is saved as ``config.yaml`` in the
output folder.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unikd._yaml import read_yaml_file
from unikd.token import list_cross_tokenizer_losses

from .example_cache_settings import SparseTeacherSettings, check_sparse_teacher_settings
from .generation_settings import GenerationSettings, check_fractions
from .settings import ALIGNMENTS, parse_device, parse_dtype

METHODS = ("ce", "kd", "reverse_kl", "taid", "nkd", "dkd", "jsd")
DEFAULT_METHODS = METHODS[:6]  # the documented example; jsd runs when named
CROSS_METHODS = ("ce", *list_cross_tokenizer_losses())  # for a teacher with its own tokenizer
MODEL_KEYS = ("teacher", "student")  # a mapping (a size to build) or a string (a model to load)


@dataclass
class ModelSize:
    """A Llama decoder: ``layers`` blocks of width ``hidden`` with ``heads`` attention heads."""

    layers: int = 4
    hidden: int = 128
    heads: int = 4


@dataclass
class LMExampleConfig:
    out_dir: str = "runs/lm/stdlib"
    corpus_dir: str = ""  # empty: the standard library of the running Python
    max_bytes: int = 4_000_000  # source bytes read (train + validation)
    val_percent: int = 10  # files whose path hash mod 100 falls below this are validation
    vocab_size: int = 2048  # byte-level BPE trained on the training files
    teacher_vocab_size: int = 0  # > 0: the teacher's own BPE of this size; methods from CROSS_METHODS
    alignment: str = "span"  # how cross-tokenizer losses pair positions: span or truncation
    block_size: int = 64  # tokens per sequence (the models' context)
    # teacher / student: a ModelSize to train from scratch, or a Hugging Face model name or local folder
    teacher: ModelSize | str = field(default_factory=ModelSize)
    teacher_steps: int = 800
    teacher_lr: float = 3e-3
    student: ModelSize | str = field(default_factory=lambda: ModelSize(layers=2, hidden=64, heads=2))
    teacher_dtype: str = ""  # pretrained models: float32 (default), bfloat16, float16 or auto (as saved)
    student_dtype: str = ""
    teacher_device: str = ""  # where the teacher runs (default: the training device), e.g. cpu
    data: str = ""  # pretrained teacher: text folder, .jsonl, datasets name (empty: corpus_dir / stdlib)
    data_split: str = "train"  # the split of a datasets name
    eval_data: str = ""  # held-out data in the same forms (empty: val_percent of data)
    save_students: bool = False  # save each trained student with save_pretrained (runs/<m>/seed<k>/model)
    steps: int = 300  # student optimizer steps
    lr: float = 3e-3
    batch_size: int = 16  # sequences per optimizer step (split across processes under torchrun)
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    ce_weight: float = 1.0  # every distilled student minimises ce_weight * CE + weight * loss
    weight: float = 1.0
    hyperparameters: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per method, e.g. {kd: {temperature: 2}}
    val_blocks: int = 1024  # validation sequences scored (at most)
    # fractions of the distilled students' batches sampled by the student (on-policy) / the teacher
    # (sequence-level KD) from each block's first generation.prompt_length tokens
    on_policy: float = 0.0
    seq_kd: float = 0.0
    generation: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=48, prompt_length=16)
    )
    sample_eval: int = 0  # validation prompts whose student samples the teacher scores (val_sample_nll)
    # folder: the distilled students train from a sparse cache of the teacher (written there if missing)
    sparse_teacher: SparseTeacherSettings = field(default_factory=SparseTeacherSettings)
    fused: bool = True
    chunk_size: int = 1024
    log_steps: int = 10
    threads: int = 0  # torch CPU threads; 0: every core


QUICK: dict[str, Any] = {
    "max_bytes": 200_000,
    "vocab_size": 384,
    "block_size": 32,
    "teacher": {"layers": 2, "hidden": 32, "heads": 2},
    "teacher_steps": 20,
    "student": {"layers": 1, "hidden": 16, "heads": 2},
    "steps": 8,
    "batch_size": 8,
    "seeds": [0],
    "val_blocks": 32,
    "log_steps": 2,
}


def _closest(key: str, options: list[str]) -> str:
    match = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix or 'the config'} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise ValueError(
                f"unknown config key {prefix + key!r}{_closest(key, list(fields))}; "
                f"valid keys: {', '.join(fields)}"
            )
        default = (
            fields[key].default_factory()
            if fields[key].default_factory is not dataclasses.MISSING
            else fields[key].default
        )
        if dataclasses.is_dataclass(default) and isinstance(value, str) and key in MODEL_KEYS:
            value = value.strip()  # a model name or folder instead of a size
        elif dataclasses.is_dataclass(default):
            # keys not given keep this field's default (student.layers=3 keeps the student's width)
            given = {**dataclasses.asdict(default), **value} if isinstance(value, dict) else value
            value = _build(type(default), given, f"{prefix}{key}.")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{prefix}{key} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (
                    isinstance(default, int)
                    and not isinstance(default, bool)
                    and isinstance(value, float)
                    and not value.is_integer()
                )
            ):
                raise ValueError(f"{prefix}{key} must be a number like {default!r}, got {value!r}")
            value = type(default)(value)
        elif isinstance(default, list) and not isinstance(value, list):
            value = [value]
        elif isinstance(default, str) and not isinstance(value, str):
            value = str(value)
        kwargs[key] = value
    return cls(**kwargs)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _override(text: str) -> dict[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} is not key=value (e.g. steps=100 or student.layers=3)")
    parsed: Any = yaml.safe_load(value) if value else ""
    for part in reversed(key.split(".")):
        parsed = {part: parsed}
    return parsed


def load_example_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, quick: bool = False
) -> LMExampleConfig:
    """Defaults, then ``QUICK`` (with ``quick``), then the YAML file, then ``key=value`` overrides."""
    raw: dict[str, Any] = dict(QUICK) if quick else {}
    if path is not None:
        loaded = read_yaml_file(path, "config file", missing="check the path") or {}
        raw = _merge(raw, loaded)
    for text in overrides or []:
        raw = _merge(raw, _override(text))
    cfg = _build(LMExampleConfig, raw, "")
    check_example_config(cfg)
    return cfg


def _check_cross(cfg: LMExampleConfig) -> None:
    if cfg.alignment not in ALIGNMENTS or cfg.teacher_vocab_size < 0:
        raise ValueError(f"need alignment in {ALIGNMENTS}, teacher_vocab_size >= 0: {cfg.alignment!r}, "
                         f"{cfg.teacher_vocab_size}")
    cross = [m for m in cfg.methods if m in CROSS_METHODS[1:]]
    pair = isinstance(cfg.teacher, str) and isinstance(cfg.student, str)  # two models, two tokenizers
    if cross and not cfg.teacher_vocab_size and not pair:
        raise ValueError(f"{', '.join(cross)} distil between two tokenizers: set teacher_vocab_size=<the "
                         "teacher's BPE size> (e.g. 4096), or name two models (teacher=, student=)")
    same = [m for m in cfg.methods if m not in CROSS_METHODS]
    if (cfg.teacher_vocab_size or (cross and pair)) and same:
        raise ValueError(f"a teacher with another tokenizer takes methods from {list(CROSS_METHODS)}: {same}")
    if cfg.teacher_vocab_size and (isinstance(cfg.teacher, str) or isinstance(cfg.student, str)):
        raise ValueError(f"teacher_vocab_size={cfg.teacher_vocab_size} trains the teacher with its own "
                         "tokenizer: give teacher / student sizes to train (a named model has its tokenizer)")
    if is_cross(cfg) and (cfg.on_policy or cfg.seq_kd or cfg.sample_eval):
        raise ValueError("on_policy, seq_kd and sample_eval sample in one tokenizer: leave them at 0 here")


def is_cross(cfg: LMExampleConfig) -> bool:  # the run distils between two tokenizers (example_cross)
    return cfg.teacher_vocab_size > 0 or any(m in CROSS_METHODS[1:] for m in cfg.methods)


def check_example_config(cfg: LMExampleConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS and m not in CROSS_METHODS]
    if unknown or not cfg.methods:
        raise ValueError(
            f"methods must be a non-empty list from {list(METHODS)} (or, with teacher_vocab_size, "
            f"{list(CROSS_METHODS)}), got {cfg.methods}"
        )
    _check_cross(cfg)
    extra = sorted(set(cfg.hyperparameters) - set(cfg.methods))
    if extra:
        raise ValueError(f"hyperparameters given for methods that are not run: {extra}")
    for name, value in (
        ("block_size", cfg.block_size),
        ("steps", cfg.steps),
        ("teacher_steps", cfg.teacher_steps),
        ("batch_size", cfg.batch_size),
        ("vocab_size", cfg.vocab_size),
        ("val_blocks", cfg.val_blocks),
        ("log_steps", cfg.log_steps),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if isinstance(cfg.student, str) and not isinstance(cfg.teacher, str):
        raise ValueError(
            "student= names a model but teacher= is a size to train: give teacher=<model name or folder> "
            "too (the teacher must share the student's tokenizer)"
        )
    if not isinstance(cfg.teacher, str) and (cfg.data or cfg.eval_data):
        raise ValueError(
            "data= / eval_data= need a pretrained teacher (teacher=<model name or folder>); the example "
            "that trains its own teacher reads corpus_dir"
        )
    for key in ("teacher_dtype", "student_dtype"):
        if getattr(cfg, key) not in ("", "auto"):
            parse_dtype(getattr(cfg, key), key)
    parse_device(cfg.teacher_device or None, "teacher_device")
    for role, size in (("teacher", cfg.teacher), ("student", cfg.student)):
        if isinstance(size, str):
            if not size:
                raise ValueError(f"{role}= is empty; give a model name or folder, or {role}.layers=...")
            continue
        if min(size.layers, size.hidden, size.heads) < 1 or size.hidden % size.heads:
            raise ValueError(
                f"{role}.hidden ({size.hidden}) must be a positive multiple of {role}.heads "
                f"({size.heads}), with layers >= 1"
            )
    check_fractions(cfg.on_policy, cfg.seq_kd)
    check_sparse_teacher_settings(cfg.sparse_teacher, on_policy=cfg.on_policy, seq_kd=cfg.seq_kd)
    if cfg.sparse_teacher.enabled and isinstance(cfg.teacher, str):
        raise ValueError(
            "sparse_teacher.folder caches the built-in example's teacher on its blocks; with teacher=<model> "
            "train from a cache in Python: DistillationTrainer(student, None, args, sparse_teacher=FOLDER) "
            "(docs/lm.md, 'Training from a cached teacher')"
        )
    if cfg.sample_eval < 0:
        raise ValueError(f"sample_eval must be >= 0 (0: off), got {cfg.sample_eval}")
    if len(set(cfg.seeds)) != len(cfg.seeds) or not cfg.seeds:
        raise ValueError(f"seeds must be distinct and non-empty, got {cfg.seeds}")


def config_to_yaml(cfg: LMExampleConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


__all__ = [
    "CROSS_METHODS",
    "DEFAULT_METHODS",
    "METHODS",
    "QUICK",
    "LMExampleConfig",
    "ModelSize",
    "config_to_yaml",
    "load_example_config",
]
