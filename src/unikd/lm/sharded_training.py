"""The Trainer's hooks for a student sharded with FSDP2 (``fully_shard``), before or after construction.

Accelerate would wrap such a student in DDP (and refuses ``DTensor`` parameters there); FSDP2 already
reduce-scatters the gradients, so the student is prepared for autocast only, never wrapped. The constructor's
probe forward (and any evaluation) leaves the root unit's parameters gathered, so every unit is resharded
before the optimizer is built from the parameters. Gradient accumulation syncs on the micro-batch that ends
the optimizer step only (``set_requires_gradient_sync``). Saving gathers the full weights on every process
and writes them from the first; the optimizer state, sharded across the processes, is not saved (refused
unless ``save_only_model=True`` or ``save_strategy='no'``). DeepSpeed ZeRO-3 (the Trainer's ``deepspeed``
argument) trains on the unfused path only; ``fused=True`` is refused there.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .sharding import check_saving, full_state_dict, is_sharded, reshard, set_gradient_sync


class ShardedStudentMixin:
    """Mixed into :class:`~unikd.lm.DistillationMixin`; inert for a student that is not sharded."""

    def _check_zero3(self, fused: bool) -> None:
        """ZeRO-3 partitions the head into empty local tensors outside the forward: no fused loss there."""
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)  # type: ignore[attr-defined]
        if fused and getattr(self, "is_deepspeed_enabled", False) and getattr(plugin, "zero_stage", 0) == 3:
            raise ValueError(
                "DeepSpeed ZeRO-3 partitions every parameter, the output head included, so the fused loss "
                "cannot apply the head outside the model's forward: use DistillSettings(fused=False) (the "
                "loss from the logits the model computes), or ZeRO-1/2, or shard with FSDP2 (fully_shard), "
                "whose head the fused loss gathers"
            )

    def _student_is_sharded(self) -> bool:
        return is_sharded(self.model)  # type: ignore[attr-defined]

    def _wrap_model(self, model: nn.Module, training: bool = True, dataloader: Any = None) -> nn.Module:
        if not (self._student_is_sharded() and not getattr(self, "is_fsdp_enabled", False)):
            return super()._wrap_model(model, training=training, dataloader=dataloader)  # type: ignore[misc]
        if training:
            check_saving(self.args)  # type: ignore[attr-defined]
        # autocast (bf16/fp16) as accelerate applies it, and the mark that stops its DDP wrap
        return self.accelerator.prepare_model(  # type: ignore[attr-defined]
            model, device_placement=False, evaluation_mode=True
        )

    def create_optimizer(self, model: nn.Module | None = None) -> Any:
        reshard(self.model)  # type: ignore[attr-defined]
        return super().create_optimizer(model)  # type: ignore[misc]

    def _sync_gradients_of(self, model: nn.Module) -> None:
        """Before each training micro-batch of a sharded student: sync only on the step's last one."""
        if model.training and is_sharded(model):
            set_gradient_sync(model, bool(self.accelerator.sync_gradients))  # type: ignore[attr-defined]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if state_dict is None and self._student_is_sharded():
            state_dict = full_state_dict(self.model)  # type: ignore[attr-defined]  # a collective
            if not self.args.should_save:  # type: ignore[attr-defined]
                return
        super()._save(output_dir, state_dict=state_dict)  # type: ignore[misc]


__all__ = ["ShardedStudentMixin"]
