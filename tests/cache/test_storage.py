"""Storage encodings: full logits (fp16/fp32) and top-k + residual log-mass, and their sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unikd.cache import storage


def _logits(b: int = 16, c: int = 100, scale: float = 4.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, generator=torch.Generator().manual_seed(seed)) * scale


def test_full_fp32_round_trip_is_bit_exact():
    z = _logits()
    rows = storage.encode_rows(z, storage.FULL, "fp32", None)
    assert rows.dtype == np.float32 and rows.shape == (16, 100)
    assert torch.equal(storage.decode_rows(rows, storage.FULL, 100), z)


def test_full_fp16_round_trip_is_fp16_rounding():
    z = _logits()
    out = storage.decode_rows(storage.encode_rows(z, storage.FULL, "fp16", None), storage.FULL, 100)
    assert out.dtype == torch.float32
    assert torch.equal(out, z.half().float())
    assert (out - z).abs().max() <= z.abs().max() * 2**-11


def test_full_fp16_overflow_is_an_error_not_inf():
    z = _logits()
    z[0, 0] = 1e5
    with pytest.raises(ValueError, match="fp32"):
        storage.encode_rows(z, storage.FULL, "fp16", None)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_topk_rebuild_keeps_topk_probabilities_and_residual_mass(dtype):
    z, k, c = _logits(), 20, 100
    rows = storage.encode_rows(z, storage.TOPK, dtype, k)
    rebuilt = storage.decode_rows(rows, storage.TOPK, c)
    p, q = torch.softmax(z, 1), torch.softmax(rebuilt, 1)
    top = p.topk(k, dim=1).indices
    tol = 1e-6 if dtype == "fp32" else 2e-3
    # the k largest teacher probabilities are reproduced
    torch.testing.assert_close(q.gather(1, top), p.gather(1, top), atol=tol, rtol=tol)
    # the tail gets the residual mass, spread uniformly
    tail = torch.ones_like(p, dtype=torch.bool).scatter(1, top, False)
    tail_q, tail_p = q[tail].view(16, c - k), p[tail].view(16, c - k)
    torch.testing.assert_close(tail_q.sum(1), tail_p.sum(1), atol=tol, rtol=tol)
    torch.testing.assert_close(tail_q, tail_q[:, :1].expand_as(tail_q))
    # the rebuilt "logits" are log-probabilities: they normalise at temperature 1
    torch.testing.assert_close(rebuilt.exp().sum(1), torch.ones(16), atol=10 * tol, rtol=0)


def test_topk_ratios_exact_at_any_temperature():
    z, k = _logits(), 5
    rebuilt = storage.decode_rows(storage.encode_rows(z, storage.TOPK, "fp32", k), storage.TOPK, 100)
    top = z.topk(k, dim=1).indices
    diff_true = z.gather(1, top) - z.gather(1, top[:, :1])
    diff_rebuilt = rebuilt.gather(1, top) - rebuilt.gather(1, top[:, :1])
    torch.testing.assert_close(diff_rebuilt, diff_true, atol=1e-5, rtol=0)


def test_topk_very_confident_teacher_stays_finite():
    z = torch.zeros(2, 50)
    z[:, 3] = 1e4  # all mass on one class: residual underflows, floored to keep logits finite
    rebuilt = storage.decode_rows(storage.encode_rows(z, storage.TOPK, "fp16", 2), storage.TOPK, 50)
    assert torch.isfinite(rebuilt).all()
    p = torch.softmax(rebuilt / 4.0, 1)
    kl = (p * (torch.log_softmax(rebuilt / 4.0, 1) - torch.log_softmax(torch.zeros(2, 50), 1))).sum()
    assert torch.isfinite(kl)


def test_topk_packing_and_index_types():
    assert storage.index_dtype(100) == np.uint8
    assert storage.index_dtype(256) == np.uint8
    assert storage.index_dtype(1000) == np.uint16
    assert storage.index_dtype(70000) == np.int32
    z = _logits(c=300)
    rows = storage.encode_rows(z, storage.TOPK, "fp16", 7)
    assert rows["indices"].dtype == np.uint16
    ids = torch.from_numpy(rows["indices"].astype(np.int64))
    assert torch.equal(ids, torch.log_softmax(z, 1).topk(7).indices)


def test_cifar100_240_epoch_topk20_cache_is_under_1gb():
    per_entry = storage.bytes_per_sample(storage.TOPK, "fp16", 100, 20)
    assert per_entry == 20 * 2 + 20 * 1 + 2  # fp16 values, uint8 class ids, fp16 residual
    total = 240 * 50_000 * per_entry
    assert total == 744_000_000 and total < 1e9
    assert storage.bytes_per_sample(storage.FULL, "fp16", 100, None) == 200


@pytest.mark.parametrize("k", [0, 100, None])
def test_topk_bad_k(k):
    with pytest.raises(ValueError, match="k="):
        storage.shard_dtype(storage.TOPK, "fp16", 100, k)


def test_bad_mode_and_dtype():
    with pytest.raises(ValueError, match="mode='x'"):
        storage.shard_dtype("x", "fp16", 10, None)
    with pytest.raises(ValueError, match="dtype='bf16'"):
        storage.shard_dtype(storage.FULL, "bf16", 10, None)


def test_shard_write_commit_read(tmp_path):
    row, shape = storage.shard_dtype(storage.TOPK, "fp16", 10, 3)
    tmp, final = tmp_path / ".e0000.npy.tmp", tmp_path / storage.shard_name(0)
    array = storage.open_shard_for_write(tmp, row, shape, 5)
    array[[4, 1]] = storage.encode_rows(_logits(2, 10), storage.TOPK, "fp16", 3)
    storage.commit_shard(array, tmp, final)
    assert not tmp.exists()
    shard = storage.open_shard(final)
    assert isinstance(shard, np.memmap)
    assert storage.missing_rows(shard[:], storage.TOPK).tolist() == [True, False, True, True, False]
    assert math.isclose(final.stat().st_size, 128 + 5 * row.itemsize, abs_tol=64)
