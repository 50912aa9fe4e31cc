"""The CUDA paths: every loss, mixed-precision training steps, channels_last, DDP over nccl with SyncBatchNorm
and the teacher cache. Skipped without a GPU; run them on a CUDA machine with ``pytest -m cuda tests/cuda``.

``UNIKD_CUDA_TEST_DEVICE=cpu`` runs the device-independent parts on the CPU (a check of the tests
themselves; the fp16 and nccl tests still need CUDA).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness_support import base_overrides, subprocess_env
from loss_inputs import build, call, convert, leaves

import unikd.token as T
from unikd.engine import evaluate_checkpoint, load_config, train
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.losses import LOSS_FUNCTIONS

DEVICE = os.environ.get("UNIKD_CUDA_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
needs_cuda = pytest.mark.skipif(not (ON_CUDA and torch.cuda.is_available()), reason="needs a CUDA GPU")
WORKER = str(Path(__file__).resolve().parents[1] / "engine" / "ddp_worker.py")


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("soft", [False, True])
def test_every_loss_on_the_device_matches_cpu(name, dtype, soft):
    g = torch.Generator().manual_seed(0)
    n, c = 64, 100
    inputs = build(name, n, c, lambda shape: torch.randn(*shape, generator=g) * 3)
    inputs = convert(inputs, lambda t: t.to(dtype))
    y = torch.randint(0, c, (n,), generator=g)
    if soft:
        y2 = torch.randint(0, c, (n,), generator=g)
        eye = torch.eye(c)
        y = 0.7 * eye[y] + 0.3 * eye[y2]
    cpu = convert(inputs, lambda t: t.clone().requires_grad_(True))
    dev = convert(inputs, lambda t: t.to(DEVICE).requires_grad_(True))
    a, b = call(name, cpu, y), call(name, dev, y.to(DEVICE))
    a.backward()
    b.backward()
    assert b.device.type == torch.device(DEVICE).type and b.dtype == torch.float32
    # same (rounded) inputs, float32 math on both: equal up to summation order
    torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
    rtol = 1e-4 if dtype == torch.float32 else 2e-2  # half gradients are rounded to the input dtype
    for x, z in zip(leaves(cpu), leaves(dev)):
        if x.grad is not None:
            torch.testing.assert_close(z.grad.cpu().float(), x.grad.float(), rtol=rtol, atol=1e-4)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_non_finite_inputs_give_nan_on_the_device(name):
    # the device path ranks with torch.sort instead of numpy: NaN must not turn into an index error there
    inputs = build(name, 8, 100, lambda shape: torch.randn(*shape, device=DEVICE))
    flat = leaves(inputs)
    flat[0].view(8, -1)[0, 3] = math.nan
    flat[-1].view(8, -1)[1, 2] = math.inf
    loss = call(name, inputs, torch.randint(0, 100, (8,), device=DEVICE))
    assert torch.isnan(loss)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
@pytest.mark.parametrize("side", [0, -1], ids=["student", "other"])
def test_minus_inf_on_either_side_gives_nan_on_the_device(name, side):
    # the guard is one aminmax reduction per input: a -inf, which a softmax turns into probability 0, must
    # reach it on the device too
    inputs = build(name, 8, 100, lambda shape: torch.randn(*shape, device=DEVICE))
    leaves(inputs)[side].view(8, -1)[2, 3] = -math.inf
    assert torch.isnan(call(name, inputs, torch.randint(0, 100, (8,), device=DEVICE)))


@pytest.mark.parametrize("name", sorted(T.list_token_losses()))
def test_token_losses_keep_the_non_finite_contract_on_the_device(name):
    g = torch.Generator().manual_seed(0)
    zs, zo = torch.randn(2, 6, 40, generator=g), torch.randn(2, 6, 40, generator=g)
    labels = torch.randint(0, 32, (2, 6), generator=g)
    labels[0, :2] = -100
    zs, zo, labels = zs.to(DEVICE), zo.to(DEVICE), labels.to(DEVICE)
    clean = T.token_loss(name, zs, zo, labels, vocab_size=32)
    masked_s, masked_o = zs.clone(), zo.clone()
    for x in (masked_s, masked_o):  # a padded vocabulary masked with -inf, garbage at ignored positions
        x[..., 32:] = -math.inf
        x[labels == -100] = math.nan
    masked = T.token_loss(name, masked_s, masked_o, labels, vocab_size=32)
    assert torch.isfinite(masked) and masked.item() == pytest.approx(clean.item(), rel=1e-6)
    for x in (zs, zo):
        bad = x.clone()
        bad[1, 2, 7] = -math.inf
        args = (bad, zo) if x is zs else (zs, bad)
        assert torch.isnan(T.token_loss(name, *args, labels, vocab_size=32))


def _run(npz, out, **opts):
    return train(load_config(None, base_overrides(npz, out, device=DEVICE, **opts)))


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=needs_cuda)])
def test_mixed_precision_training_step(npz_data, tmp_path, precision):
    summary = _run(npz_data, tmp_path, precision=precision, method="uskd", epochs=1)
    assert summary["finished"] and math.isfinite(summary["last_nll"])
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ("scaler" in ckpt) == (precision == "fp16")  # fp16 runs with a grad scaler
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    resumed = _run(npz_data, tmp_path, precision=precision, method="uskd", epochs=2, resume="auto")
    assert resumed["epochs"] == 2


def test_channels_last(npz_data, tmp_path):
    from unikd.models import create_model

    # one forward/backward: the same math in another memory layout, equal up to kernel summation order.
    # cuDNN picks other algorithms for NHWC than for NCHW; TF32 (on by default for cuDNN convolutions) would
    # round both to 10-bit mantissas, so the comparison runs in full float32.
    torch.manual_seed(0)
    a = create_model("resnet8", num_classes=10).to(DEVICE)
    b = create_model("resnet8", num_classes=10).to(DEVICE).to(memory_format=torch.channels_last)
    b.load_state_dict(a.state_dict())
    x = torch.randn(16, 3, 32, 32, device=DEVICE)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
        ya, yb = a(x), b(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-4)
        ya.square().mean().backward()
        yb.square().mean().backward()
    for (k, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad.contiguous(), pa.grad, rtol=1e-3, atol=1e-5, msg=k)
    # and a whole run in channels_last, evaluated from its checkpoint
    summary = _run(npz_data, tmp_path, model="resnet8", epochs=1, channels_last="true")
    result = evaluate_checkpoint(tmp_path / "best.pt", device=DEVICE)
    assert summary["finished"] and math.isfinite(result["nll"])


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over nccl needs two GPUs")
def test_ddp_nccl_with_sync_bn_matches_one_process(npz_data, tmp_path):
    # BatchNorm model, global batch 16: with SyncBatchNorm two ranks of 8 normalise over the same 16 rows as
    # one process does. Tolerance: float32 sums in another order over 2 epochs of 4 steps.
    opts = {"model": "resnet8", "epochs": 2, "data.batch_size": 16, "data.eval_batch_size": 16,
            "device": "cuda", "sync_bn": "true"}

    def run(out, ranks):
        launch = [sys.executable, WORKER] if ranks == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER]
        done = subprocess.run(launch + base_overrides(npz_data, out, **opts), env=subprocess_env(),
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-4000:]
        return done

    run(tmp_path / "one", 1)
    two = run(tmp_path / "two", 2)
    assert "SyncBatchNorm (global batch statistics)" in two.stdout
    one_w = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    two_w = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    for k, v in one_w.items():
        if v.is_floating_point():
            torch.testing.assert_close(two_w[k], v, rtol=1e-3, atol=1e-4, msg=k)


def test_teacher_cache_on_the_device(npz_data, tmp_path):
    from unikd.cache import open_teacher_cache
    from unikd.cache.build import build_teacher_cache
    from unikd.engine.loop import setup
    from unikd.engine.run.distributed import DistInfo, autocast_factory

    _run(npz_data, tmp_path / "teacher", epochs=2)
    teacher = str(tmp_path / "teacher" / "best.pt")
    kd = {"method": "kd", "teacher.model": "tiny_cnn", "teacher.checkpoint": teacher, "epochs": 2}
    cfg = load_config(None, base_overrides(npz_data, tmp_path / "unused", device=DEVICE, **kd))
    cache_dir = build_teacher_cache(cfg, tmp_path / "cache", dtype="fp32", show_progress=False)
    # the cached logits are the live teacher's on the same augmented batches (fp32 storage)
    info = DistInfo(0, 1, 0, torch.device(DEVICE))
    train_ds, val_ds = setup.build_datasets(cfg)
    loader, _ = setup.build_loaders(cfg, info, train_ds, val_ds)
    live, _, _ = setup.build_teacher(cfg, 4, info, loader, autocast_factory("fp32", info.device))
    run_cfg = load_config(None, base_overrides(npz_data, tmp_path / "unused", device=DEVICE, **kd,
                                               **{"teacher.cache": str(cache_dir)}))
    cached = open_teacher_cache(run_cfg, loader, DEVICE)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            torch.testing.assert_close(cached(batch.images, epoch, batch.index),
                                       live(batch.images, epoch, batch.index), rtol=1e-6, atol=1e-6)
    # and a run reads it end to end
    summary = _run(npz_data, tmp_path / "cached", **kd, **{"teacher.cache": str(cache_dir)})
    assert summary["finished"] and math.isfinite(summary["last_nll"])
