"""Entry point of the DDP test: registers a BatchNorm-free model, then runs ``unikd train``.

BatchNorm normalises with per-rank batch statistics under DDP, so only a model without it can match a
single-process run with the same global batch on CPU: ``sync_bn=true`` (torch's SyncBatchNorm) would fix
that, but torch implements SyncBatchNorm's forward for CUDA devices only (it raises "SyncBatchNorm expected
input tensor to be on GPU" for CPU tensors under gloo). The BatchNorm + sync_bn comparison runs on GPUs
(tests/cuda). Launched as
``python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py OVERRIDES...`` or plainly with python.
"""

from __future__ import annotations

import sys

from torch import nn

from unikd.models.factory import register_model


class TinyMLP(nn.Module):
    default_feature = "act"  # the USKD weak head reads the hidden layer

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.hidden = nn.Linear(in_chans * 64, 32)  # 8x8 images
        self.act = nn.ReLU()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.act(self.hidden(self.flat(x))))


register_model("test_mlp", lambda num_classes=10, in_chans=3: TinyMLP(num_classes, in_chans))

if __name__ == "__main__":
    from unikd.cli import main

    sys.exit(main(["train", "-", *sys.argv[1:]]))
