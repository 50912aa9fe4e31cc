"""The loss-term contract: what a loss module may ask of the engine.

A term is a loss module from :mod:`unikd.losses`. The engine never switches on method names; it reads
three declarations of the module's class and supplies what they name:

- ``requires``: the names of its forward() arguments after ``student_logits``, from :data:`REQUIRES`;
- its ``__init__`` keyword arguments that are in :data:`CONTEXT` (everything else is a hyperparameter,
  set from the config's ``loss`` section);
- ``taps``: the tap KIND (:data:`TAP_KINDS`) where its feature inputs are read.

These are facts about losses, so they live beside them: the config checks and the objective both read them
from here. Extend a vocabulary together with the engine's one builder of that input
(:meth:`unikd.engine.objective.objective.Objective._input` for ``requires``) and docs/architecture.md.
"""

from __future__ import annotations

import inspect
from typing import Any

REQUIRES: dict[str, str] = {
    "target": "int64 (N,) class indices, or float (N, C) soft labels (mixup/cutmix)",
    "teacher_logits": "(N, C) float32, detached: the live teacher, the teacher-output cache, or (online "
    "training) the other network's logits",
    "student_features": "list of the student's outputs at the module's taps, in tap order (with gradient)",
    "teacher_features": "list of the teacher's outputs at the module's taps (no gradient)",
    "student_embedding": "(N, D) student feature at the module's embedding tap, pooled",
    "teacher_embedding": "(N, D) teacher feature at the module's embedding tap, pooled",
    "indices": "int64 (N,) dataset indices of the batch rows",
    "epoch_progress": "float: finished epochs, counting this step, e.g. 2.25 a quarter into epoch 3",
    "images": "(N, C, H, W) float32: the normalised batch the student ran on (for a second student pass)",
    "sample_weights": "float32 (N,) weights of the instance selection (`selection`), detached; else all 1",
}
TEACHER_INPUTS = frozenset({"teacher_logits", "teacher_features", "teacher_embedding"})
TEACHER_TAP_INPUTS = frozenset({"teacher_features", "teacher_embedding"})
# Keyword arguments of a module's __init__ that the engine supplies (everything else is a hyperparameter).
CONTEXT: dict[str, str] = {
    "num_classes": "int: classes of the student's head",
    "num_samples": "int: size of the training set",
    "student_shapes": "list of per-sample shapes (e.g. (C, H, W)) at the module's student taps",
    "teacher_shapes": "list of per-sample shapes at the module's teacher taps",
    "in_features": "int: width D of the student embedding",
    "teacher_in_features": "int: width D of the teacher embedding",
    "total_epochs": "int: the run's epochs",
    "role": "str: 'student' (the run's student; every run without peers) or 'peer' (another network of "
    "online training, online.peers)",
    "train_labels": "int64 (num_samples,) class of every training sample (CRD draws negatives by class); "
    "None on a transfer set (data.transfer: no labels)",
    "student_head": "callable() -> (weight (C, D), bias (C,) or None) of the student's classifier (the "
    "nn.Linear at the module's student embedding tap), its current parameters",
    "teacher_head": "callable() -> (weight, bias) of the teacher's classifier (frozen)",
    "student_rerun": "callable(images, perturb) -> (N, D): the student's pooled embedding from a second "
    "forward of `images` with perturb(x) replacing the output x at the module's student tap",
}


def requires_of(obj: Any) -> tuple[str, ...]:
    """The validated ``requires`` of a loss module or class."""
    name = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    req = getattr(obj, "requires", None)
    if not isinstance(req, tuple) or not all(isinstance(r, str) for r in req):
        raise ValueError(
            f"loss module {name} must declare `requires` as a tuple of input names (e.g. "
            f"('teacher_logits', 'target')); vocabulary: {', '.join(REQUIRES)}"
        )
    unknown = [r for r in req if r not in REQUIRES]
    if unknown:
        raise ValueError(
            f"loss module {name} requires {unknown}, which the engine does not supply; vocabulary: "
            f"{', '.join(REQUIRES)} (docs/architecture.md)"
        )
    return req


def needs_teacher(obj: Any) -> bool:
    """Whether a loss module or class reads anything of the teacher's."""
    return any(r in TEACHER_INPUTS for r in requires_of(obj))


def hyperparameters(cls: type) -> dict[str, inspect.Parameter]:
    """The config-settable arguments of a loss module class: its __init__ arguments that are not context."""
    params = inspect.signature(cls).parameters.values()
    return {
        p.name: p
        for p in params
        if p.name not in CONTEXT
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def context_arguments(cls: type) -> list[str]:
    """The context keyword arguments (:data:`CONTEXT`) that a loss module class accepts."""
    names = inspect.signature(cls).parameters
    return [n for n in CONTEXT if n in names]


# kind -> meaning (the documented vocabulary; extend it here and in docs/architecture.md)
TAP_KINDS: dict[str, str] = {
    "stages": "every stage output, in order (mdistiller's feats[1:]; used by AT)",
    "hint": "the second stage output (mdistiller's FitNet hint layer 2)",
    "last": "the last stage output (mdistiller's feats[-1]; used by SP)",
    "segments": "the segment boundaries of Extended-KD (default: every stage output, as `stages`)",
    "embedding": "the input of the final nn.Linear: the pooled pre-classifier feature "
    "(mdistiller's pooled_feat)",
    "uskd": "the USKD weak-head feature (config key `feature`; default: unikd.models.default_feature)",
    "mixdist": "where KD³'s MixDistribution mixes the feature statistics (default: the first stage output)",
}
# Kinds the ``taps`` config section may override (the USKD feature has its own key, ``feature``).
CONFIG_KINDS = tuple(k for k in TAP_KINDS if k != "uskd")


__all__ = [
    "CONFIG_KINDS",
    "CONTEXT",
    "REQUIRES",
    "TAP_KINDS",
    "TEACHER_INPUTS",
    "TEACHER_TAP_INPUTS",
    "context_arguments",
    "hyperparameters",
    "needs_teacher",
    "requires_of",
]
