"""Context arguments that hand a term access to a network without making it the term's own.

``student_head`` / ``teacher_head`` (:class:`ClassifierParams`) return the current weight and bias of a
network's classifier; ``student_rerun`` (:class:`StudentRerun`) runs the student a second time with one
feature map replaced (KD³'s MixDistribution). They are plain objects, not modules: a term module that
stores them does not register the network's parameters (which would put them in the objective's
optimizer group, its DDP gradient averaging and its checkpoint entry a second time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from unikd.engine.objective.taps import TapSet, parse_spec


class ClassifierParams:
    """``() -> (weight, bias)`` of the ``nn.Linear`` whose input the embedding tap ``spec`` reads."""

    def __init__(self, model: nn.Module, spec: str, role: str) -> None:
        path, what = parse_spec(spec)
        module = model.get_submodule(path)
        if what != "input" or not isinstance(module, nn.Linear):
            raise ValueError(
                f"aligning the classifier needs the {role}'s embedding tap to be the input of its final "
                "nn.Linear "
                f"(e.g. fc:input), got {spec!r} ({type(module).__name__}); set taps.{role}.embedding"
            )
        self.linear = module

    def __call__(self) -> tuple[Tensor, Tensor | None]:
        return self.linear.weight, self.linear.bias


class StudentRerun:
    """``(images, perturb) -> (N, D)``: the student's pooled embedding (tap ``embedding_spec``) from a second
    forward of ``images`` in which ``perturb(x)`` replaces the tensor ``x`` at ``perturb_spec`` (a module's
    output, or with ``:input`` its first input). Runs in the student's current mode (training: BatchNorm
    normalises with the batch's statistics and updates its running ones, as in the first forward)."""

    def __init__(self, model: nn.Module, perturb_spec: str, embedding_spec: str) -> None:
        self.model, self.perturb_spec, self.embedding_spec = model, perturb_spec, embedding_spec
        path, self._what = parse_spec(perturb_spec)
        self._module = model.get_submodule(path)

    def __call__(self, images: Tensor, perturb: Callable[[Tensor], Tensor]) -> Tensor:
        from unikd.models import pool_feature

        if self._what == "output":
            handle = self._module.register_forward_hook(lambda m, args, out: perturb(out))
        else:
            handle = self._module.register_forward_pre_hook(lambda m, args: (perturb(args[0]), *args[1:]))
        try:
            with TapSet(self.model, [self.embedding_spec]) as taps:
                self.model(images)
                return pool_feature(taps.outputs()[self.embedding_spec])
        finally:
            handle.remove()


def network_context(plan: Any, taps: Any, student: nn.Module, teacher: nn.Module | None) -> dict[str, Any]:
    """The values of the context arguments ``student_head``, ``teacher_head`` and ``student_rerun`` that
    ``plan``'s module accepts (``taps``: its resolved tap specs)."""
    out: dict[str, Any] = {}
    if "student_head" in plan.context:
        out["student_head"] = ClassifierParams(student, taps.student_embedding, "student")
    if "teacher_head" in plan.context:
        assert teacher is not None, "a term reading the teacher's classifier needs the live teacher"
        out["teacher_head"] = ClassifierParams(teacher, taps.teacher_embedding, "teacher")
    if "student_rerun" in plan.context:
        if len(taps.student_features) != 1 or not taps.student_embedding:
            raise ValueError(f"term {plan.name!r} perturbs one student feature map; its student taps are "
                             f"{list(taps.student_features)}: set taps.student.{plan.cls.taps} to one module "
                             "path")
        out["student_rerun"] = StudentRerun(student, taps.student_features[0], taps.student_embedding)
    return out


__all__ = ["ClassifierParams", "StudentRerun", "network_context"]
