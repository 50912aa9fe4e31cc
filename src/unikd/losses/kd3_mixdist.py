"""KD³ MixDistribution (Tang, Chen, Niu, Sugiyama and Gong, "Distribution Shift Matters for Knowledge
Distillation with Webly Collected Images", ICCV 2023, arXiv:2307.11469), part 3 of 3: "a new contrastive
learning block called MixDistribution to generate perturbed data with a new distribution for instance
alignment, so that the student network can further learn a distribution-invariant representation" (the
paper's abstract).

Perturbation (``mix_distribution``): at a student feature map ``x`` (tap kind ``mixdist``, by default the
first stage), each sample's per-channel statistics are replaced by a mixture of its own and a partner's:

    mu, sigma = mean and std of x over (H, W), per sample and channel  (constants: no gradient)
    x' = (lam * sigma + (1 - lam) * sigma[perm]) * (x - mu) / sigma + lam * mu + (1 - lam) * mu[perm]

``perm`` a random permutation of the batch, ``lam ~ Beta(alpha, alpha)`` per sample: statistics no sample
of the batch has, i.e. data of a new distribution with the content of the original. The student runs again
from the images with ``x`` replaced by ``x'`` (the harness's ``student_rerun``), giving the perturbed
embedding ``f'_S`` (the pooled input of its classifier).

Instance alignment (``kd3_mixdist_loss``): InfoNCE with the teacher's embedding of the ORIGINAL image as
the positive and the teacher's embeddings of the other images of the batch as negatives,

    kd3_mixdist = -1/N sum_i log softmax_j(<u_i, v_j> / tau)_i,   u = norm(g_S(f'_S)), v = norm(g_T(f_T))

with trainable linear heads ``g_S``, ``g_T`` to ``feat_dim`` and L2 normalisation, so the student's
representation of a perturbed image must identify the teacher's representation of the clean one.

The paper's method section could not be read, so these choices are this library's, not the paper's: the
perturbation is MixStyle's (Zhou et al., "Domain Generalization with MixStyle", ICLR 2021: statistics over
H and W, detached, eps 1e-6, a partner from a random permutation, Beta(alpha, alpha) with alpha 0.1) applied
to every sample; where it acts (the first stage); the teacher-anchored InfoNCE with in-batch negatives;
the heads (linear, ``feat_dim`` 128) and ``temperature`` 0.1. The random permutation and ``lam`` are drawn
from the batch's dataset indices and the training progress, so they are the same on a resumed run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import as_float32, nan_if_nonfinite
from ._features import check_embedding, check_same_batch, check_shapes, common_dtype
from .checks import checks_enabled

Rerun = Callable[[Tensor, Callable[[Tensor], Tensor]], Tensor]


def mix_distribution(x: Tensor, perm: Tensor, lam: Tensor, *, eps: float = 1e-6) -> Tensor:
    """``x`` ``(N, C, H, W)`` with each sample's channel statistics mixed with those of ``perm``'s sample.

    ``perm``: int64 ``(N,)`` permutation; ``lam``: ``(N,)`` mixing weights in [0, 1] (1 keeps ``x``). The
    mean and standard deviation (over H, W; ``sqrt(var + eps)``, var unbiased as ``torch.var``) are
    detached, so the gradient reaches ``x`` through the normalised map only (as in MixStyle).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"mix_distribution needs a floating (N, C, H, W) feature map, got {what}")
    n = x.shape[0]
    if not isinstance(perm, Tensor) or perm.shape != (n,) or perm.is_floating_point():
        raise ValueError(f"perm must be an integer (N,) = ({n},) permutation")
    if checks_enabled() and not torch.equal(perm.sort().values.cpu(), torch.arange(n)):
        raise ValueError(f"perm must be a permutation of 0..{n - 1}, got {perm.tolist()}")
    if not isinstance(lam, Tensor) or lam.shape != (n,):
        raise ValueError(f"lam must be a (N,) = ({n},) tensor of weights in [0, 1]")
    if checks_enabled() and not bool(((lam >= 0) & (lam <= 1)).all()):
        raise ValueError(f"lam must be a (N,) = ({n},) tensor of weights in [0, 1]")
    if x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"mix_distribution needs at least 2 positions per channel, got {tuple(x.shape[2:])}")
    mu = x.mean(dim=(2, 3), keepdim=True).detach()
    sigma = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt().detach()
    lam = lam.to(x.dtype).view(n, 1, 1, 1)
    perm = perm.to(x.device)
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
    return (x - mu) / sigma * sigma_mix + mu_mix


def kd3_mixdist_loss(student_emb: Tensor, teacher_emb: Tensor, *, temperature: float = 0.1) -> Tensor:
    """InfoNCE of the L2-normalised rows: row i of ``student_emb`` against every row of ``teacher_emb``,
    row i being the positive; the batch mean. Inputs ``(N, D)`` of one width (after the heads); the
    teacher side is NOT detached (its head is trained), pass teacher features detached before their head.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    s = check_embedding(student_emb, "student_emb")
    t = check_embedding(teacher_emb, "teacher_emb")
    check_same_batch(s, t, "student_emb", "teacher_emb")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"student_emb has D={s.shape[1]} but teacher_emb D={t.shape[1]}; map both to one "
                         "width "
                         "(KD3MixDistLoss owns those heads)")
    dtype = common_dtype(s, t)
    u, v = F.normalize(s.to(dtype), dim=1), F.normalize(t.to(dtype), dim=1)
    logits = u @ v.T / temperature
    target = torch.arange(s.shape[0], device=s.device)
    return nan_if_nonfinite(F.cross_entropy(logits, target), s, t)


def draw_mix(indices: Tensor, epoch_progress: float, n: int, alpha: float) -> tuple[Tensor, Tensor]:
    """The partner permutation and ``lam ~ Beta(alpha, alpha)`` of one step: a pure function of the batch's
    dataset indices and the training progress (no global random state, so a resumed run draws the same)."""
    key = [int(round(float(epoch_progress) * 2**20))] + [int(i) for i in indices.detach().cpu().tolist()]
    rng = np.random.default_rng(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]))
    perm = torch.from_numpy(rng.permutation(n)).long()
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=n)).float()
    return perm, lam


class KD3MixDistLoss(nn.Module):
    """KD³ MixDistribution: :func:`kd3_mixdist_loss` of the student's embedding of perturbed data
    (:func:`mix_distribution` at the ``mixdist`` tap, a second student forward through ``student_rerun``)
    against the teacher's embedding of the original images.

    Called as ``loss(student_logits, teacher_embedding, images, indices, epoch_progress)``. Built with the
    embedding widths, the per-sample shape at the ``mixdist`` tap and the harness's ``student_rerun``
    (``(images, perturb) -> (N, D_S)``, not owned: the student stays the run's). Owns the two heads.
    """

    requires = ("teacher_embedding", "images", "indices", "epoch_progress")
    taps = "mixdist"

    def __init__(self, in_features: int, teacher_in_features: int, student_shapes: Sequence[Sequence[int]],
                 student_rerun: Rerun, *, alpha: float = 0.1, temperature: float = 0.1,
                 feat_dim: int = 128) -> None:
        super().__init__()
        shapes = check_shapes(student_shapes, "student_shapes")
        if len(shapes) != 1 or len(shapes[0]) != 3:
            raise ValueError("MixDistribution perturbs one (C, H, W) student feature map; "
                             "taps.student.mixdist "
                             f"gives {shapes}: set it to one convolutional stage, e.g. layer1")
        if not callable(student_rerun) or isinstance(student_rerun, nn.Module):
            raise ValueError("student_rerun must be the harness's callable (images, perturb) -> embedding")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
                math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0 (Beta(alpha, alpha)), got {alpha!r}")
        if isinstance(feat_dim, bool) or not isinstance(feat_dim, int) or feat_dim < 1:
            raise ValueError(f"feat_dim must be an int >= 1, got {feat_dim!r}")
        kd3_mixdist_loss(torch.ones(1, 1), torch.ones(1, 1), temperature=temperature)  # validates it
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.student_head = nn.Linear(in_features, feat_dim)
        self.teacher_head = nn.Linear(teacher_in_features, feat_dim)
        self._rerun = (student_rerun,)  # a tuple: not registered (the student is not this module's)

    def forward(self, student_logits: Tensor, teacher_embedding: Tensor, images: Tensor, indices: Tensor,
                epoch_progress: float) -> Tensor:
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError("images must be the (N, C, H, W) batch the student was run on")
        t = check_embedding(teacher_embedding, "teacher_embedding").detach()
        if images.shape[0] < 2:  # one row has nothing to tell apart (InfoNCE 0): skip the second pass
            return t.new_zeros((), dtype=torch.float32)
        perm, lam = draw_mix(indices, epoch_progress, images.shape[0], self.alpha)
        perturbed = self._rerun[0](images, lambda x: mix_distribution(x, perm, lam.to(x.device)))
        w = self.student_head.weight
        u = self.student_head(as_float32(perturbed).to(w.dtype))
        v = self.teacher_head(t.to(w.dtype))
        return kd3_mixdist_loss(u, v, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}"


__all__ = ["KD3MixDistLoss", "draw_mix", "kd3_mixdist_loss", "mix_distribution"]
