"""The sections of the training config (``data``, ``teacher``, ``loss``, ...) and one ``loss.terms`` entry:
plain dataclasses with their defaults. Every key is listed in the config reference of docs/training.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TermConfig:
    """One term of the objective: ``weight * ramp(warmup_epochs) * <method's loss>(**params)``."""

    name: str
    method: str
    weight: float = 1.0
    warmup_epochs: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = "cifar100"
    root: str | None = None
    download: bool = False
    cache_dir: str | None = None
    samples_per_class: int | None = None
    subset_test: bool = True
    val_split: int = 0
    split_seed: int | None = None
    image_size: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 512
    loader: str = "memory"
    num_workers: int = 2
    crop_padding: int = 4
    hflip: bool = True
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    # The ImageNet protocol (crop=rrc): RandomResizedCrop training views, Resize + CenterCrop evaluation.
    crop: str = "pad"  # pad (crop_padding + random crop) | rrc (RandomResizedCrop to crop_size)
    crop_size: int | None = None
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333333333333])
    eval_resize: int | None = None  # eval: shorter side resized to this, then centre crop_size (null: /0.875)
    randaugment: str | None = None  # timm syntax, e.g. rand-m9-mstd0.5-inc1 (DeiT)
    random_erasing: float = 0.0  # probability (DeiT: 0.25)
    # Classes removed from the student's training split only (unikd.data.drop): a list of class indices,
    # or a count of classes drawn with drop_seed (default 0). Validation and test keep every class.
    drop_classes: int | list[int] | None = None
    drop_seed: int | None = None
    # An unlabeled transfer set the student trains on instead of the task's training split
    # (unikd.data.transfer): {name, root, split, samples_per_class, limit, seed, channels, download};
    # validation and test stay those of data.name.
    transfer: dict[str, Any] | None = None


@dataclass
class TeacherConfig:
    model: str | None = None
    checkpoint: str | None = None
    pretrained: bool = False  # torchvision/timm weights, or the teacher registry for zoo models
    model_args: dict[str, Any] = field(default_factory=dict)
    min_top1: float | None = None
    cache: str | None = None


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    weight: float = 1.0
    warmup_epochs: float = 0.0
    smoothing: float = 0.1
    target: str | None = None  # labels (null) | teacher_argmax: the class the CE and target-reading terms use
    # hyperparameters of the method's loss module (validated against its signature)
    params: dict[str, Any] = field(default_factory=dict)
    # the terms form (empty: the single-method form above)
    terms: list[TermConfig] = field(default_factory=list)


@dataclass
class TapsConfig:
    # tap kind -> module paths (``path`` = its output, ``path:input`` = its input), overriding the defaults
    student: dict[str, list[str]] = field(default_factory=dict)
    teacher: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class OnlineConfig:
    # online training: the other networks, trained with `model` (the student) in this run
    peers: list[str] = field(default_factory=list)


@dataclass
class DiagnosticsConfig:
    every: int = 0  # steps between gradient measurements of the loss terms; 0 = off
    ratio: float = 100.0  # warn when a term's gradient is > ratio x or < 1/ratio x the CE's ...
    patience: int = 5  # ... at this many measurements in a row
    layer: str | None = None  # module path of the student's "last shared layer"; null = found automatically
    monitors: bool = True  # log the terms' monitor values every step (NKD/USKD: <term>_kl); false skips them


@dataclass
class SelectionConfig:
    # dynamic instance selection (unikd.engine.objective.selection): the objective on the rows the
    # teacher and the
    # student predict confidently
    method: str | None = None  # null = off | kd3
    threshold: float = 0.5  # a row trains when the largest combined probability is at least this
    teacher_share: list[float] = field(default_factory=lambda: [1.0, 0.5])  # a at the start, at ramp_epochs
    ramp_epochs: float | None = None  # null = the run's epochs
    weights: str = "mask"  # mask | confidence (the sample_weights of the selected rows)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5.0e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    no_decay_norm_bias: bool = True
    clip_grad_norm: float | None = None


@dataclass
class SchedConfig:
    name: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr_factor: float = 0.0
