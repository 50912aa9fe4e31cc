"""Error of sparse teachers (top-k + tail bucket, and sampled) against the dense loss, as k grows.

Synthetic language-model-like distributions: each token's teacher logits are ``-s * log(1 + r)`` over a random
permutation ``r`` of the vocabulary (a Zipf-like head with a long tail) plus Gaussian noise, with ``s`` set so
the mean teacher entropy is about ``--entropy`` nats; the student is a noisy, flatter copy of the teacher.
Labels are drawn from the teacher. For every loss that takes a sparse teacher and each k (ids stored per
token), prints the relative error of the value ``|L_sparse - L_dense| / L_dense`` and of the gradient of the
mean loss with respect to the student logits ``||g_sparse - g_dense|| / ||g_dense||`` (what training sees),
the bytes per token of the cache record (fp16 values) and, for top-k, the teacher's mean tail mass. Two
kinds of sparse teacher at the same k, i.e. the same bytes per token: ``topk`` (the k largest log-probs +
the tail bucket) and ``sample`` (k - 1 draws from the teacher + the label slot, Sparse Logit Sampling; the
mean over ``--draws`` independent draws of the error, each draw's error a random number).

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
from unikd.cache import storage
from unikd.token.sampled import sparse_sample

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
    p.add_argument("--draws", type=int, default=5, help="independent samples averaged per sampled row")
    p.add_argument(
        "--bias-draws",
        type=int,
        default=20,
        help="draws whose KD gradients are averaged to separate bias from variance",
    )
    args = p.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    ).stdout.strip()
    print(
        f"# token_sparse_error  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  "
        f"commit {commit or '?'}  torch {torch.__version__}  {platform.machine()}"
    )
    zs, zt, labels = synthetic(args.tokens, args.vocab, args.entropy, args.seed)
    logp = zt.log_softmax(1)
    h = -(logp.exp() * logp).sum(1).mean().item()
    print(f"# {args.tokens} tokens, V={args.vocab}, teacher entropy {h:.2f} nats, temperature 1")
    zs.requires_grad_(True)

    def value_and_grad(name: str, teacher) -> tuple[float, torch.Tensor]:
        loss = T.token_loss(name, zs, teacher, labels)
        return loss.item(), torch.autograd.grad(loss, zs)[0]

    dense = {name: value_and_grad(name, zt) for name in LOSSES}

    def errors(teacher) -> list[tuple[float, float]]:
        cells = []
        for name in LOSSES:
            value, grad = value_and_grad(name, teacher)
            d_value, d_grad = dense[name]
            cells.append(
                (abs(value - d_value) / abs(d_value), ((grad - d_grad).norm() / d_grad.norm()).item())
            )
        return cells

    rows = []
    for k in args.ks:
        nbytes = storage.shard_dtype(storage.TOPK, "fp16", args.vocab, k)[0].itemsize
        sp = T.sparse_topk(zt, k, labels=labels)
        rows.append(("topk", k, nbytes, f"{sp.tail.exp().mean().item():.4f}", errors(sp)))
        runs = [
            errors(sparse_sample(zt, k - 1, labels=labels, generator=torch.Generator().manual_seed(d)))
            for d in range(args.draws)
        ]
        mean = [tuple(sum(r[i][j] for r in runs) / len(runs) for j in range(2)) for i in range(len(LOSSES))]
        rows.append(("sample", k, nbytes, "0 (empty)", mean))
    print(
        f"\nKD gradient error: one batch vs the mean gradient of {args.bias_draws} independent draws (what "
        "many steps average; the sampled teacher's error falls as 1/sqrt(draws), top-k's bias stays)\n"
    )
    print("| k | bytes/token | topk | sample, one batch | sample, mean of draws |")
    print("|---:|---:|---:|---:|---:|")
    d_grad = dense["kd"][1]
    for k in args.ks:
        nbytes = storage.shard_dtype(storage.TOPK, "fp16", args.vocab, k)[0].itemsize
        topk = value_and_grad("kd", T.sparse_topk(zt, k, labels=labels))[1]
        grads = [
            value_and_grad(
                "kd",
                sparse_sample(zt, k - 1, labels=labels, generator=torch.Generator().manual_seed(1000 + d)),
            )[1]
            for d in range(args.bias_draws)
        ]
        err = [
            ((g - d_grad).norm() / d_grad.norm()).item() for g in (topk, grads[0], sum(grads) / len(grads))
        ]
        print(f"| {k} | {nbytes} | " + " | ".join(f"{e:.2%}" for e in err) + " |")
    for title, which in (("value", 0), ("gradient w.r.t. the student logits", 1)):
        print(f"\nrelative error of the {title}\n")
        print("| teacher | k | bytes/token | tail mass | " + " | ".join(LOSSES) + " |")
        print("|---|---:|---:|---:|" + "---:|" * len(LOSSES))
        for mode, k, nbytes, tail, cells in rows:
            print(
                f"| {mode} | {k} | {nbytes} | {tail} | " + " | ".join(f"{c[which]:.2%}" for c in cells) + " |"
            )
    print("\ndense values: " + ", ".join(f"{n}={v:.4f}" for n, (v, _) in dense.items()))


if __name__ == "__main__":
    main()
