"""Counter-based random numbers: every random quantity is a pure function of (seed, epoch, stream, index).

Augmentation, shuffling and subset selection draw their randomness from a 32-bit integer hash of a
counter instead of a stateful generator. The value for sample ``i`` is then the same whatever the batch
size, the order, the rank or the device, and it is bit-identical across torch versions (``torch.randperm``
and friends give no such promise). The mixing function is Chris Wellons' "lowbias32"
(https://nullprogram.com/blog/2018/07/31/), a bijection on 32-bit integers with good avalanche.

The integer math runs in numpy uint32, whose multiplication wraps modulo 2**32 by definition (signed
int64 overflow in torch is undefined behaviour in C++). The parameters are a few numbers per sample, so
they are computed on the CPU and only the pixel work runs on the training device.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

_M32 = 0xFFFFFFFF
_C1 = 0x7FEB352D
_C2 = 0x846CA68B

# Stream ids: one per random quantity, so that e.g. the crop offset and the flip of a sample are unrelated.
ORDER, SUBSET, CROP_Y, CROP_X, FLIP, MIX_APPLY, MIX_KIND, PARTNER, BOX_Y, BOX_X = range(1, 11)
GAMMA_BASE = 1000  # streams GAMMA_BASE + k for the k-th rejection round of the Gamma sampler
RRC_AREA = 100  # RandomResizedCrop: streams 100-109 area fractions, 110-119 aspect ratios (one per attempt)
RRC_TOP, RRC_LEFT = 120, 121
RAND_AUGMENT = 200  # RandAugment: 200 + 8 * layer + {0 op, 1 apply, 2 magnitude noise (2 streams), 4 sign}
ERASE = 300  # random erasing: 300 apply, 301-310 area, 311-320 aspect, 321 top, 322 left, 323-324 noise


def _mix_int(x: int) -> int:
    """lowbias32 on a Python int (used to derive per-(seed, epoch, stream) keys)."""
    x &= _M32
    x ^= x >> 16
    x = (x * _C1) & _M32
    x ^= x >> 15
    x = (x * _C2) & _M32
    x ^= x >> 16
    return x


def _mix(x: np.ndarray) -> np.ndarray:
    """lowbias32 on a uint32 array (numpy uint32 arithmetic wraps modulo 2**32 by definition)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(_C1)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(_C2)
    return x ^ (x >> np.uint32(16))


@functools.lru_cache(maxsize=8192)  # the same few hundred keys serve every batch of an epoch
def stream_key(seed: int, epoch: int, stream: int) -> int:
    """A 32-bit key for one (seed, epoch, stream); seeds and epochs of any size are folded in."""
    k = _mix_int((seed & _M32) ^ _mix_int(seed >> 32))
    k = _mix_int(k + _mix_int(epoch & _M32) + (epoch >> 32))
    return _mix_int(k ^ _mix_int(stream + 0x9E3779B9))


def _u32(seed: int, epoch: int, stream: int | list[int], index: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint32 hashes of ``index``; a list of streams gives one row per stream (shape (S, *index.shape))."""
    streams = [stream] if isinstance(stream, int) else stream
    key = np.array([stream_key(seed, epoch, s) for s in streams], dtype=np.uint32)
    idx = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    key = key.reshape((-1,) + (1,) * idx.ndim)
    x = (idx.astype(np.int64) & _M32).astype(np.uint32) + key  # wraps modulo 2**32
    out = _mix(_mix(x) ^ key)
    return out[0] if isinstance(stream, int) else out


def hash_u32(seed: int, epoch: int, stream: int, index: torch.Tensor) -> torch.Tensor:
    """int64 tensor of 32-bit hashes of ``index`` (int64, values < 2**32) under (seed, epoch, stream)."""
    return torch.from_numpy(_u32(seed, epoch, stream, index.cpu()).astype(np.int64))


def _uniform(
    seed: int, epoch: int, stream: int | list[int], index: torch.Tensor, open_zero: bool = False
) -> np.ndarray:
    """float64 uniforms in [0, 1), or in (0, 1] with ``open_zero`` (keeps logarithms finite)."""
    return (_u32(seed, epoch, stream, index).astype(np.float64) + (1.0 if open_zero else 0.0)) * 2.0**-32


def uniform(seed: int, epoch: int, stream: int, index: torch.Tensor) -> torch.Tensor:
    """float64 uniforms in [0, 1), one per index."""
    return torch.from_numpy(_uniform(seed, epoch, stream, index))


def randint(seed: int, epoch: int, stream: int, index: torch.Tensor, high: int) -> torch.Tensor:
    """int64 integers in [0, high); the modulo bias is below high / 2**32 (negligible here)."""
    return hash_u32(seed, epoch, stream, index) % high


def permutation(seed: int, epoch: int, n: int, stream: int = ORDER) -> torch.Tensor:
    """A permutation of range(n) that is a pure function of (seed, epoch, stream)."""
    if n >= 2**31:
        raise ValueError(f"permutation: n={n} is too large (limit 2**31 samples)")
    idx = torch.arange(n, dtype=torch.int64)
    # Sorting hash * n + i gives unique keys (ties broken by the index), < 2**63 for n < 2**31.
    return torch.argsort(hash_u32(seed, epoch, stream, idx) * n + idx)


def _normal(seed: int, epoch: int, stream: list[int], index: torch.Tensor) -> np.ndarray:
    """Standard normals by Box-Muller from two hashed uniforms (one row per stream)."""
    u1 = _uniform(seed, epoch, stream, index, open_zero=True)
    u2 = _uniform(seed, epoch, [s + (1 << 30) for s in stream], index)  # streams no other caller uses
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


# The float math here is numpy on purpose: torch parallelises transcendental ops even on tiny tensors,
# and on a busy 2-core machine each such call can stall for milliseconds waiting for its second thread.
def _gamma(seed: int, epoch: int, stream: int, index: torch.Tensor, shape: float, rounds: int) -> np.ndarray:
    if shape <= 0:
        raise ValueError(f"gamma: shape must be > 0, got {shape}")
    a = shape if shape >= 1.0 else shape + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    # All rejection rounds at once: row r holds the candidates of round r; the first accepted one wins.
    z = _normal(seed, epoch, [stream * 64 + 2 * r for r in range(rounds)], index)
    u = _uniform(seed, epoch, [stream * 64 + 2 * r + 1 for r in range(rounds)], index, open_zero=True)
    v = (1.0 + c * z) ** 3
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (v > 0) & (np.log(u) < 0.5 * z * z + d - d * v + d * np.log(np.maximum(v, 1e-300)))
    first = np.argmax(ok, axis=0)
    accepted = np.take_along_axis(d * v, first[None], axis=0)[0]
    out = np.where(ok.any(axis=0), accepted, d)
    if shape < 1.0:
        out = out * _uniform(seed, epoch, stream * 64 + 63, index, open_zero=True) ** (1.0 / shape)
    return out


def gamma(
    seed: int, epoch: int, stream: int, index: torch.Tensor, shape: float, rounds: int = 12
) -> torch.Tensor:
    """Gamma(shape, 1) samples, float64, by Marsaglia-Tsang (2000) with a fixed number of rejection rounds.

    Each round accepts with probability > 0.95, so 12 rounds all fail with probability < 1e-15; in that
    case the mode-like value ``d`` is used so the result stays a deterministic function of the counter.
    Shapes below 1 use the boost Gamma(a) = Gamma(a + 1) * U**(1/a).
    """
    return torch.from_numpy(_gamma(seed, epoch, stream, index, shape, rounds))


def beta_symmetric(seed: int, epoch: int, stream: int, index: torch.Tensor, alpha: float) -> torch.Tensor:
    """Beta(alpha, alpha) samples in [0, 1], float64, as G1 / (G1 + G2) of two independent Gammas."""
    g1 = _gamma(seed, epoch, stream, index, alpha, 12)
    g2 = _gamma(seed, epoch, stream + 1, index, alpha, 12)
    total = g1 + g2
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = np.where(total > 0, g1 / np.maximum(total, 1e-300), 0.5)
    return torch.from_numpy(lam)


_M16 = 0xFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 ``x`` in [0, 2**32) without int64 overflow (split into 16-bit halves)."""
    lo, hi = x & _M16, x >> 16
    return (lo * c + (((hi * (c & _M16)) & _M16) << 16)) & _M32


def _mix_torch(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding uint32 values (any device); equals :func:`_mix`."""
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    return x ^ (x >> 16)


def hash_u32_device(seed: int, epoch: int, stream: int, counter: torch.Tensor) -> torch.Tensor:
    """int64 32-bit hashes of ``counter`` (int64, values < 2**32) computed on the counter's device, equal
    to :func:`hash_u32`; for per-pixel random numbers (erasing noise) that would be slow on the host."""
    key = stream_key(seed, epoch, stream)
    x = ((counter & _M32) + key) & _M32
    return _mix_torch(_mix_torch(x) ^ key)


def normal_device(seed: int, epoch: int, stream: int, counter: torch.Tensor) -> torch.Tensor:
    """float32 standard normals (Box-Muller) of ``counter`` on its device, from streams ``stream`` and
    ``stream + 1``."""
    u1 = (hash_u32_device(seed, epoch, stream, counter).to(torch.float64) + 1.0) * 2.0**-32
    u2 = hash_u32_device(seed, epoch, stream + 1, counter).to(torch.float64) * 2.0**-32
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(torch.float32)
