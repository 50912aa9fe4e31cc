"""Error of sparse teachers (top-k + tail bucket) against the dense loss, as k grows.

Synthetic language-model-like distributions: each token's teacher logits are ``-s * log(1 + r)`` over a random
permutation ``r`` of the vocabulary (a Zipf-like head with a long tail) plus Gaussian noise, with ``s`` set so
the mean teacher entropy is about ``--entropy`` nats; the student is a noisy, flatter copy of the teacher.
Labels are drawn from the teacher. For every loss that takes a sparse teacher and each k, prints the relative
error of the value ``|L_sparse - L_dense| / L_dense`` and of the gradient with respect to the student logits
``||g_sparse - g_dense|| / ||g_dense||`` (what training sees), and the teacher's mean tail mass.

Usage::

    python benchmarks/token_sparse_error.py                 # 1024 tokens, V = 32768, k = 8 ... 256
    python benchmarks/token_sparse_error.py --entropy 1.0   # a more confident teacher
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess

import torch

import unikd.token as T

LOSSES = ("kd", "reverse_kl", "jsd", "dkd", "nkd", "taid")


def synthetic(tokens: int, vocab: int, entropy: float, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ranks = torch.argsort(torch.rand(tokens, vocab, generator=g), dim=1).float()
    shape = -torch.log1p(ranks) + 0.3 * torch.randn(tokens, vocab, generator=g)
    lo, hi = 0.1, 20.0  # bisect the scale for the requested mean entropy
    for _ in range(40):
        s = (lo + hi) / 2
        logp = (s * shape).log_softmax(1)
        h = -(logp.exp() * logp).sum(1).mean().item()
        lo, hi = (lo, s) if h < entropy else (s, hi)
    teacher = s * shape
    student = 0.8 * teacher + 0.8 * torch.randn(tokens, vocab, generator=g)
    labels = torch.multinomial(teacher.softmax(1), 1, generator=g).squeeze(1)
    return student, teacher, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--entropy", type=float, default=2.5, help="mean teacher entropy in nats")
    p.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    print(f"# token_sparse_error  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  "
          f"commit {commit or '?'}  torch {torch.__version__}  {platform.machine()}")
    zs, zt, labels = synthetic(args.tokens, args.vocab, args.entropy, args.seed)
    logp = zt.log_softmax(1)
    h = -(logp.exp() * logp).sum(1).mean().item()
    print(f"# {args.tokens} tokens, V={args.vocab}, teacher entropy {h:.2f} nats, temperature 1")
    zs.requires_grad_(True)

    def value_and_grad(name: str, teacher) -> tuple[float, torch.Tensor]:
        loss = T.token_loss(name, zs, teacher, labels)
        return loss.item(), torch.autograd.grad(loss, zs)[0]

    dense = {name: value_and_grad(name, zt) for name in LOSSES}
    rows = []
    for k in args.ks:
        sp = T.sparse_topk(zt, k, labels=labels)
        tail = sp.tail.exp().mean().item()
        cells = []
        for name in LOSSES:
            value, grad = value_and_grad(name, sp)
            d_value, d_grad = dense[name]
            grad_err = ((grad - d_grad).norm() / d_grad.norm()).item()
            cells.append((abs(value - d_value) / abs(d_value), grad_err))
        rows.append((k, tail, cells))
    for title, which in (("value", 0), ("gradient w.r.t. the student logits", 1)):
        print(f"\nrelative error of the {title}\n")
        print("| k | teacher tail mass | " + " | ".join(LOSSES) + " |")
        print("|---:|---:|" + "---:|" * len(LOSSES))
        for k, tail, cells in rows:
            print(f"| {k} | {tail:.4f} | " + " | ".join(f"{c[which]:.2%}" for c in cells) + " |")
    print("\ndense values: " + ", ".join(f"{n}={v:.4f}" for n, (v, _) in dense.items()))


if __name__ == "__main__":
    main()
