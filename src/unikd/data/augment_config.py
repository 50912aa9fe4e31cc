"""The settings of the training views (:class:`AugmentConfig`), checked when built; the views themselves
are made in :mod:`unikd.data.augment`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from unikd.data.randaugment import RandAugmentSpec

__all__ = ["AUGMENT_VERSION", "CROPS", "AugmentConfig"]

CROPS = ("pad", "rrc")
AUGMENT_VERSION = 2  # bump when the mapping (seed, epoch, i) -> view changes (invalidates output caches)


@dataclass(frozen=True)
class AugmentConfig:
    """Everything besides (seed, epoch, i) and the data that determines a training view."""

    crop_padding: int = 4
    hflip: bool = True
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    crop: str = "pad"  # pad: crop_padding zero padding + random crop; rrc: RandomResizedCrop to crop_size
    crop_size: int | None = None  # rrc output size (also the eval centre crop)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    randaugment: str | None = None  # timm-style spec, e.g. "rand-m9-mstd0.5-inc1"
    random_erasing: float = 0.0  # probability (DeiT: 0.25)

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        object.__setattr__(self, "crop_ratio", tuple(float(v) for v in self.crop_ratio))
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.crop == "rrc" and (self.crop_size is None or self.crop_size < 1):
            raise ValueError("crop=rrc needs crop_size (the output size, e.g. 224); set data.crop_size")
        if self.crop == "pad" and self.crop_size is not None:
            raise ValueError("crop_size applies to crop=rrc only; set data.crop=rrc or data.crop_size=null")
        for name, lo in (("crop_scale", 0.0), ("crop_ratio", 0.0)):
            a, b = getattr(self, name)
            if not (lo < a <= b):
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(a, b)}")
        if self.crop_scale[1] > 1.0:
            raise ValueError(f"crop_scale is an area fraction, at most 1; got {self.crop_scale}")
        if self.randaugment is not None:
            RandAugmentSpec.parse(self.randaugment)  # fails early with the syntax
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {self.random_erasing}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}; use 0 to disable cropping")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables it), got {getattr(self, name)}")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {self.mix_prob}")

    @property
    def mixing(self) -> bool:
        """True when mixup or cutmix is on (targets are then float soft labels)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def as_dict(self) -> dict:
        return asdict(self)

    def view_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of a training view of a (height x width) source."""
        if self.crop == "rrc":
            return self.crop_size, self.crop_size  # type: ignore[return-value]
        return height, width
