"""The training step timed by benchmarks/gpu_step.py, built from unikd's models and losses: the teacher
forward under ``no_grad``, the student forward, CE plus the method's term, backward and a fused (else
foreach) SGD update, in each mode (eager with checks off or full, compiled, captured in a CUDA graph)."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

MODES = ("eager", "eager+checks", "compile", "cudagraphs", "compile+cudagraphs", "engine", "engine+compile")
METHODS = ("ce", "kd", "nkd", "uskd")


def build(pair: str, method: str, args: argparse.Namespace):
    """Models, loss module and optimizer of one configuration, on the device."""
    from unikd.losses import create_loss
    from unikd.models import create_model, default_feature, feature_dim

    teacher_name, student_name = pair.split(":")
    torch.manual_seed(0)
    dev = torch.device(args.device)
    student = create_model(student_name, num_classes=args.classes).to(dev).train()
    teacher = None
    if method in ("kd", "nkd"):  # USKD is teacher-free
        teacher = create_model(teacher_name, num_classes=args.classes).to(dev).eval()
    loss_mod, tap = None, None
    if method == "uskd":
        feature = default_feature(student)
        tap = list(student.stage_names).index(feature)  # its output is one of the returned stage outputs
        size = (3, args.image_size, args.image_size)
        width = feature_dim(student, feature, size)
        loss_mod = create_loss("uskd", in_features=width, num_classes=args.classes)
    elif method != "ce":
        loss_mod = create_loss(method)
    params = list(student.parameters()) + (list(loss_mod.parameters()) if loss_mod is not None else [])
    loss_mod = loss_mod.to(dev) if loss_mod is not None else None
    opt = None
    for kind in ("fused", "foreach"):
        try:
            opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, **{kind: True})
            break
        except (RuntimeError, TypeError, ValueError):
            continue
    return student, teacher, loss_mod, tap, opt


def make_body(student, teacher, loss_mod, tap, opt, method: str):
    """Forward, loss, backward and update of one batch (gradients are assigned: zero them before)."""

    def body(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher(x) if teacher is not None else None
        logits, feats = student(x, return_features=True)
        loss = F.cross_entropy(logits, y)
        if method in ("kd", "nkd"):
            loss = loss + loss_mod(logits, t_logits, y)
        elif method == "uskd":
            loss = loss + loss_mod(logits, feats[tap].mean(dim=(2, 3)), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return body


def make_step(mode: str, pair: str, method: str, args: argparse.Namespace, x, y):
    """A callable running one step of ``mode`` on fixed-shape batches (``None`` if the mode is not here)."""
    from unikd.losses.checks import checks

    if mode.startswith("engine"):  # the engine's own step (benchmarks/_gpu_step_engine.py)
        from _gpu_step_engine import make_engine_step

        return make_engine_step(mode, pair, method, args)
    if "cudagraphs" in mode and args.device != "cuda":
        return None
    student, teacher, loss_mod, tap, opt = build(pair, method, args)
    body = make_body(student, teacher, loss_mod, tap, opt, method)
    check_mode = "full" if mode == "eager+checks" else "off"

    def plain(xb, yb):
        opt.zero_grad(set_to_none=True)
        return body(xb, yb)

    def eager(xb, yb):
        with checks(check_mode):
            return plain(xb, yb)

    if mode in ("eager", "eager+checks"):
        return eager
    if mode == "compile":  # value checks are never traced: no checks context inside the graph
        return torch.compile(plain, backend=args.backend)
    if mode == "compile+cudagraphs":
        return torch.compile(plain, mode="reduce-overhead")
    static_x, static_y = x.clone(), y.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph: creates the momentum buffers
        for _ in range(3):
            eager(static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with checks("off"), torch.cuda.graph(graph):
        static_loss = body(static_x, static_y)

    def replay(xb, yb):
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
        return static_loss

    return replay


def batches(args: argparse.Namespace, count: int = 4):
    g = torch.Generator().manual_seed(1)
    shape = (args.batch, 3, args.image_size, args.image_size)
    return [
        (
            torch.randn(shape, generator=g).to(args.device),
            torch.randint(0, args.classes, (args.batch,), generator=g).to(args.device),
        )
        for _ in range(count)
    ]
