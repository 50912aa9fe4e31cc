"""Build any registered loss module with a small context and the keyword inputs of one training step.

Inputs are built from the module's ``requires`` (the engine's vocabulary), so a new module is covered
without touching this file unless it needs a new kind of input or context (then ``build_case`` fails with
what to add). Everything is deterministic for one seed, and ``case.device`` moves the inputs (and what the
head / rerun callables return) to another device, e.g. ``"meta"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import unikd.losses as L
from unikd.losses.contract import context_arguments, requires_of

N, C, D_S, D_T, SAMPLES = 4, 5, 4, 6, 20
SHAPES = {"stages": [(4, 8, 8), (8, 4, 4), (16, 2, 2)]}  # per tap kind; others get one (4, 8, 8) map
# hyperparameters that keep a module small or give it the state of a run past its first steps
EXTRA = {
    "crd": {"num_negatives": 4},  # fewer than the 16 samples of other classes: the one-draw path
    "nd": {"class_means": torch.arange(C * D_T, dtype=torch.float32).view(C, D_T).cos() + 1.5},
}


@dataclass
class Case:
    name: str
    seed: int = 0
    device: str = "cpu"
    params: dict = field(default_factory=dict)  # fixed tensors the callables read (heads, rerun weights)

    def _make(self, *shape: int, grad: bool = False) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((self.seed, shape)) % 2**31)
        return torch.randn(*shape, generator=g).to(self.device).requires_grad_(grad)

    def head(self, role: str):
        d = D_S if role == "student" else D_T
        w = torch.linspace(-1, 1, C * d).view(C, d)
        return lambda: (w.to(self.device), torch.zeros(C, device=self.device))

    def rerun(self, images: torch.Tensor, perturb) -> torch.Tensor:
        # a fixed "student" from images to the mixdist map (N, 4, 8, 8), perturbed, pooled to (N, D_S)
        x = torch.cat([images, images[:, :1]], dim=1)
        return perturb(x * 1.5).mean(dim=(2, 3))

    def inputs(self) -> dict:
        cls = L.LOSSES.get(self.name)
        shapes = SHAPES.get(getattr(cls, "taps", None), [(4, 8, 8)])
        g = torch.Generator().manual_seed(self.seed)
        make = {
            "target": lambda: torch.randint(0, C, (N,), generator=g).to(self.device),
            "teacher_logits": lambda: self._make(N, C),
            "student_features": lambda: [self._make(N, *s, grad=True) for s in shapes],
            "teacher_features": lambda: [self._make(N, *s) for s in shapes],
            "student_embedding": lambda: self._make(N, D_S, grad=True),
            "teacher_embedding": lambda: self._make(N, D_T),
            # dataset indices stay on the host for kd3_mixdist: it draws its mix there (docs/losses.md)
            "indices": lambda: torch.randperm(SAMPLES, generator=g)[:N].to(
                "cpu" if self.name == "kd3_mixdist" else self.device
            ),
            "epoch_progress": lambda: 1.5,
            "images": lambda: self._make(N, 3, 8, 8),
            "sample_weights": lambda: self._make(N).abs(),
        }
        out = {"student_logits": self._make(N, C, grad=True)}
        for r in requires_of(cls):
            if r not in make:
                raise AssertionError(f"{self.name} requires {r!r}: teach {__file__} to make it")
            out[r] = make[r]()
        return out

    def module(self) -> torch.nn.Module:
        cls = L.LOSSES.get(self.name)
        shapes = SHAPES.get(getattr(cls, "taps", None), [(4, 8, 8)])
        ctx = {
            "num_classes": C,
            "num_samples": SAMPLES,
            "in_features": D_S,
            "teacher_in_features": D_T,
            "student_shapes": shapes,
            "teacher_shapes": shapes,
            "total_epochs": 3,
            "role": "student",
            "train_labels": torch.arange(SAMPLES) % C,
            "student_head": self.head("student"),
            "teacher_head": self.head("teacher"),
            "student_rerun": self.rerun,
        }
        torch.manual_seed(self.seed)
        return L.create_loss(
            self.name, **{k: ctx[k] for k in context_arguments(cls)}, **EXTRA.get(self.name, {})
        )


def leaves(inputs: dict) -> list[torch.Tensor]:
    flat = [t for v in inputs.values() for t in (v if isinstance(v, list) else [v])]
    return [t for t in flat if isinstance(t, torch.Tensor) and t.requires_grad]
