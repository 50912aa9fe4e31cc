"""The training step, written once for the K >= 1 networks of a run (``c.networks``: the student, then the
peers of online training).

Every network runs forward once on the same batch; network k's objective receives the teacher's logits
(offline) or the other networks' logits, detached (online: a term that reads them is averaged over them).
The term values of every network are all-reduced in one collective and checked for finiteness, then one
backward of the summed losses gives each network exactly the gradient of its own objective (nothing flows
between networks), and each network clips, steps its optimiser, its schedule and its EMA. The objective
itself (``ce_weight * CE + sum_i weight_i * ramp_i * term_i``) lives in
:mod:`unikd.engine.objective.objective`; the step reuses its named values instead of recomputing them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from unikd.engine.config.transfer import step_target
from unikd.engine.run.distributed import all_reduce_sum, average_gradients


class NonFiniteLossError(RuntimeError):
    """Raised when a loss term is NaN or infinite; the message names the step and the term."""


def check_finite(values: Tensor, names: list[str], *, step: int, epoch: int, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite term (``values`` aligned with names)."""
    bad = [(n, float(v)) for n, v in zip(names, values.tolist()) if not torch.isfinite(torch.tensor(v))]
    if not bad:
        return
    # Prefer naming a component over the total: the total is non-finite because a component is.
    components = [b for b in bad if b[0] != "loss"] or bad
    name, value = components[0]
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (epoch {epoch}): term {name!r} = {value}. "
        f"Training stopped; {where}. Lower optim.lr, enable optim.clip_grad_norm, use precision=fp32, "
        "or check the data and the teacher."
    )


def train_step(c: Any, batch: Any, epoch: int, position: int, steps: int, where: str,
               mode: Any = None) -> tuple[Tensor, int]:
    """One optimiser step of every network of ``c`` (the run's Components) on ``batch`` (step ``position``
    of ``steps`` in ``epoch``). Returns the loss terms averaged over ranks (float32, ``c.term_names()``
    order) and the number of training rows (all ranks) whose student top-1 hit the (hard or argmax) target;
    each peer's hits are added to its ``epoch_correct``. ``where`` says which checkpoint is kept when a term
    is not finite. ``mode`` (a :class:`~unikd.engine.loop.step_mode.StepMode`) picks the compiled forward
    under compile=step; without it the step is eager."""
    nets = c.networks
    images, target = batch.images, batch.target
    if c.cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    progress = epoch + (position + 1) / steps
    # The teacher runs once for all terms; its taps (if any term reads features) fire in that forward.
    teacher_logits = c.teacher(images, epoch, batch.index) if c.teacher is not None else None
    target = step_target(c.cfg, target, teacher_logits)  # loss.target=teacher_argmax, data.transfer
    forward = forward_terms if mode is None else mode.forward(forward_terms)
    with c.autocast():
        logits, outs = forward(c, images, target, teacher_logits, batch.index, progress)
    detached = [z.detach() for z in logits]
    values, hits = _reduce(c, nets, outs, detached, target)
    check_finite(values, c.term_names(), step=c.state.global_step + 1, epoch=epoch + 1, where=where)
    for net in nets:
        net.optimizer.zero_grad(set_to_none=True)
    c.state.last_lr = float(c.optimizer.param_groups[0]["lr"])
    if c.diagnostics is not None:
        c.diagnostics.maybe_measure(c.state.global_step + 1, logits[0], outs[0], c.objective, progress)
    # the networks share no gradient path, so the sum's backward is each network's own
    loss = outs[0]["loss"] if len(nets) == 1 else torch.stack([out["loss"] for out in outs]).sum()
    if c.scaler is not None:
        c.scaler.scale(loss).backward()
    else:
        loss.backward()
    average_gradients([p for net in nets for p in net.extra_params], c.info)
    _optimiser_steps(c, nets)
    for net, h in zip(nets[1:], hits[1:]):
        net.epoch_correct += h
    return values, hits[0]


def forward_terms(c: Any, images: Tensor, target: Tensor, teacher_logits: Tensor | None, indices: Any,
                  progress: float) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Every network's logits and named loss terms on one batch: the part of the step that compile=step
    compiles (its backward is then compiled with it)."""
    nets = c.networks
    logits = [net.ddp_model(images) for net in nets]  # every network once, same images
    # offline the teacher's logits; online the other networks' (a term reading them averages over them)
    if len(nets) > 1:
        detached = [z.detach() for z in logits]
        teachers: list[Any] = [[d for j, d in enumerate(detached) if j != k] for k in range(len(nets))]
    else:
        teachers = [teacher_logits]
    outs = [
        net.objective(
            logits[k],
            target,
            teacher_logits=teachers[k],
            student_taps=net.taps.outputs(),
            teacher_taps=c.teacher_taps.outputs(),
            indices=indices,
            epoch_progress=progress,
            images=images,
        )
        for k, net in enumerate(nets)
    ]
    return logits, outs


def _reduce(c: Any, nets: list[Any], outs: list[dict[str, Tensor]], detached: list[Tensor],
            target: Tensor) -> tuple[Tensor, list[int]]:
    """Term values averaged over ranks (for logging, and so every rank sees a non-finite term) and each
    network's top-1 hits summed over ranks: one collective for every network, and the step's one host copy
    (the finiteness check and the logs read it)."""
    hard = target if target.ndim == 1 else target.argmax(dim=1)
    correct = [(d.argmax(dim=1) == hard).sum().float() for d in detached]
    flat = [out[n].detach().float() for net, out in zip(nets, outs) for n in net.objective.term_names()]
    reduced = all_reduce_sum(torch.stack(flat + correct), c.info).cpu()
    return reduced[: len(flat)] / c.info.world_size, [int(h) for h in reduced[len(flat) :].tolist()]


def _optimiser_steps(c: Any, nets: list[Any]) -> None:
    """Clip (after unscaling), step every optimiser (through the grad scaler under fp16), then every
    schedule and EMA."""
    clip = c.cfg.optim.clip_grad_norm
    for net in nets:
        if clip is not None:
            if c.scaler is not None:
                c.scaler.unscale_(net.optimizer)
            nn.utils.clip_grad_norm_(net.trainable_params, clip)
        if c.scaler is not None:
            c.scaler.step(net.optimizer)
        else:
            net.optimizer.step()
    if c.scaler is not None:
        c.scaler.update()
    for net in nets:
        net.scheduler.step()
        if net.ema is not None:
            net.ema.update(net.model)

