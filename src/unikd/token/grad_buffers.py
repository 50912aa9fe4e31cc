"""Gradient accumulators of the fused path: one side's hidden states, head weight and head bias."""

from __future__ import annotations

import torch
from torch import Tensor


class GradBuffers:
    """Gradient accumulators of one side (hidden, head weight, head bias) for the rows of each chunk.

    The head's gradient sums over every chunk, so it accumulates in float32 (float64 for float64 inputs)
    whatever the input dtype; hidden-state rows are written once, in their own dtype.
    """

    def __init__(
        self, h: Tensor | None, w: Tensor | None, b: Tensor | None, want: tuple[bool, ...], vocab: int
    ) -> None:
        self.want_h, self.want_w, self.want_b = want
        self.h, self.w, self.b = h, w, b
        acc = torch.float64 if (w is not None and w.dtype == torch.float64) else torch.float32
        self.gh = torch.zeros_like(h) if self.want_h else None
        self.gw = torch.zeros(w.shape, dtype=acc, device=w.device) if self.want_w else None
        self.gb = torch.zeros(b.shape, dtype=acc, device=b.device) if self.want_b else None
        self.vocab = vocab

    def add(self, rows: Tensor, g: Tensor, h: Tensor, w_v: Tensor) -> None:
        """``g`` ``(c, V)``: dL/dlogits of the chunk's rows; ``h`` ``(c, d)`` their hidden states."""
        with torch.autocast(device_type=g.device.type, enabled=False):
            if self.gh is not None:
                self.gh.index_copy_(0, rows, (g.to(w_v.dtype) @ w_v).to(self.gh.dtype))  # (c, d)
            if self.gw is not None:
                gw = self.gw[: self.vocab]
                if w_v.dtype == gw.dtype:
                    gw.addmm_(g.to(gw.dtype).t(), h.to(gw.dtype))  # (V, d), in place
                else:  # half-precision head: one matmul in its dtype, accumulated in float32
                    gw.add_(g.to(w_v.dtype).t() @ h.to(w_v.dtype))
            if self.gb is not None:
                self.gb[: self.vocab].add_(g.sum(dim=0).to(self.gb.dtype))

    def finish(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        gw = None if self.gw is None else self.gw.to(self.w.dtype)
        gb = None if self.gb is None else self.gb.to(self.b.dtype)
        return self.gh, gw, gb


__all__ = ["GradBuffers"]
