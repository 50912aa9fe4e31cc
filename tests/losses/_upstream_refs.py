"""Small re-implementations of the reference code the published numbers came from, following its exact
computation (operation order, eps placement, reductions, parameter names and initialisation order), for the
parity tests. Written for these tests; no upstream code is copied.

Sources (read at these commits):
- MD = megvii-research/mdistiller @ a08d46f10d6102bd6e3f258ca5ac880b020ea259:
  ``mdistiller/distillers/RKD.py``, ``PKT.py``, ``SP.py``, ``CRD.py``, ``ReviewKD.py`` and
  ``mdistiller/dataset/cifar100.py`` (``CIFAR100InstanceSample``, mode "exact"). The CRD parts are the
  same as HobbitLong/RepDistiller @ b84f547c5db6a35318d4671d7d5c4de74c822403 ``crd/memory.py``,
  ``crd/criterion.py``.
- ND = WangYZ1608/Knowledge-Distillation-via-ND @ fc6f3f9058ed35189a1d3c0a79a7594025e4d88f:
  ``CIFAR/utils.py`` (``DirectNormLoss``) and ``CIFAR/Models/embtrans_cifar.py`` (``EmbTrans``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---- MD RKD.py: rkd_loss with squared=False, eps=1e-12 -----------------------------------------------------
def _md_pdist(e, eps=1e-12):
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def md_rkd(f_s, f_t, distance_weight=25, angle_weight=50):
    s, t = f_s.view(f_s.shape[0], -1), f_t.view(f_t.shape[0], -1)
    with torch.no_grad():
        td = _md_pdist(t)
        td = td / td[td > 0].mean()
    d = _md_pdist(s)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, td)
    with torch.no_grad():
        tv = F.normalize(t.unsqueeze(0) - t.unsqueeze(1), p=2, dim=2)
        ta = torch.bmm(tv, tv.transpose(1, 2)).view(-1)
    sv = F.normalize(s.unsqueeze(0) - s.unsqueeze(1), p=2, dim=2)
    sa = torch.bmm(sv, sv.transpose(1, 2)).view(-1)
    return distance_weight * loss_d + angle_weight * F.smooth_l1_loss(sa, ta)


# ---- MD PKT.py: pkt_loss, eps=1e-7 -------------------------------------------------------------------------
def md_pkt(f_s, f_t, eps=1e-7):
    f_s = f_s / (torch.sqrt(torch.sum(f_s**2, dim=1, keepdim=True)) + eps)
    f_t = f_t / (torch.sqrt(torch.sum(f_t**2, dim=1, keepdim=True)) + eps)
    ms = (f_s @ f_s.t() + 1.0) / 2.0
    mt = (f_t @ f_t.t() + 1.0) / 2.0
    ms = ms / ms.sum(dim=1, keepdim=True)
    mt = mt / mt.sum(dim=1, keepdim=True)
    return torch.mean(mt * torch.log((mt + eps) / (ms + eps)))


# ---- MD SP.py: sp_loss over a list (the distiller passes [feats[-1]]) --------------------------------------
def md_sp(g_s, g_t):
    total = 0
    for f_s, f_t in zip(g_s, g_t):
        b = f_s.shape[0]
        gs = F.normalize(torch.mm(f_s.view(b, -1), f_s.view(b, -1).t()))
        gt = F.normalize(torch.mm(f_t.view(b, -1), f_t.view(b, -1).t()))
        diff = gt - gs
        total = total + (diff * diff).view(-1, 1).sum(0) / (b * b)
    return total


# ---- MD CRD.py (= RepDistiller crd/): Embed, ContrastMemory, ContrastLoss ----------------------------------
class MdEmbed(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = self.linear(x.reshape(x.shape[0], -1))
        return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5))


class MdContrastMemory(nn.Module):
    """The bank; ``params`` = [K, T, Z_v1, Z_v2, momentum] as a float32 buffer (then cast with the module)."""

    def __init__(self, feat_dim, n_data, k, t=0.07, momentum=0.5):
        super().__init__()
        self.register_buffer("params", torch.tensor([k, t, -1, -1, momentum]))
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_v1", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_v2", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))

    def forward(self, v1, v2, y, idx):
        k, t = int(self.params[0].item()), self.params[1].item()
        z1, z2, momentum = self.params[2].item(), self.params[3].item(), self.params[4].item()
        b, (n, f) = v1.size(0), self.memory_v1.shape
        w1 = torch.index_select(self.memory_v1, 0, idx.view(-1)).detach().view(b, k + 1, f)
        out_v2 = torch.exp(torch.div(torch.bmm(w1, v2.view(b, f, 1)), t))
        w2 = torch.index_select(self.memory_v2, 0, idx.view(-1)).detach().view(b, k + 1, f)
        out_v1 = torch.exp(torch.div(torch.bmm(w2, v1.view(b, f, 1)), t))
        if z1 < 0:
            self.params[2] = out_v1.mean() * n
            z1 = self.params[2].clone().detach().item()
        if z2 < 0:
            self.params[3] = out_v2.mean() * n
            z2 = self.params[3].clone().detach().item()
        out_v1 = torch.div(out_v1, z1).contiguous()
        out_v2 = torch.div(out_v2, z2).contiguous()
        with torch.no_grad():
            for mem, v in ((self.memory_v1, v1), (self.memory_v2, v2)):
                pos = torch.index_select(mem, 0, y.view(-1))
                pos.mul_(momentum).add_(torch.mul(v, 1 - momentum))
                mem.index_copy_(0, y, pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5)))
        return out_v1, out_v2


def md_contrast_loss(x, n_data, eps=1e-7):
    b, m = x.shape[0], x.size(1) - 1
    pn = 1 / float(n_data)
    p_pos = x.select(1, 0)
    log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
    p_neg = x.narrow(1, 1, m)
    log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
    return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / b


class MdCRD(nn.Module):
    """Modules built in the distiller's order: embed_s, embed_t, then the bank (memory_v1, memory_v2)."""

    def __init__(self, s_dim, t_dim, feat_dim, n_data, k, t=0.07, momentum=0.5):
        super().__init__()
        self.n_data = n_data
        self.embed_s = MdEmbed(s_dim, feat_dim)
        self.embed_t = MdEmbed(t_dim, feat_dim)
        self.contrast = MdContrastMemory(feat_dim, n_data, k, t, momentum)

    def forward(self, f_s, f_t, idx, contrast_idx):
        out_s, out_t = self.contrast(self.embed_s(f_s), self.embed_t(f_t), idx, contrast_idx)
        return md_contrast_loss(out_s, self.n_data) + md_contrast_loss(out_t, self.n_data)


def md_exact_contrast_idx(labels: np.ndarray, index: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``CIFAR100InstanceSample.__getitem__`` mode "exact": the sample's own index, then k indices of the
    other classes, without replacement unless the other classes hold fewer than k samples."""
    pool = np.flatnonzero(labels != labels[index])
    neg = rng.choice(pool, k, replace=k > len(pool))
    return np.hstack(([index], neg))


# ---- MD ReviewKD.py: ABF and hcl_loss; the distiller's forward with explicit shape lists -------------------
def md_hcl(fstudent, fteacher):
    total = 0.0
    for fs, ft in zip(fstudent, fteacher):
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for level in [4, 2, 1]:
            if level >= h:
                continue
            cnt /= 2.0
            loss += (
                F.mse_loss(
                    F.adaptive_avg_pool2d(fs, (level, level)), F.adaptive_avg_pool2d(ft, (level, level))
                )
                * cnt
            )
            tot += cnt
        total = total + loss / tot
    return total


class MdABF(nn.Module):
    def __init__(self, in_channel, mid_channel, out_channel, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channel, mid_channel, 1, bias=False), nn.BatchNorm2d(mid_channel)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channel, out_channel, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channel),
        )
        self.att_conv = nn.Sequential(nn.Conv2d(mid_channel * 2, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, y=None, shape=None, out_shape=None):
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(y, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


class MdReviewKD(nn.Module):
    """``cfg.REVIEWKD`` lists: in/out channels shallow to deep ending with the pooled width; shapes deep to
    shallow starting with 1."""

    def __init__(self, in_channels, out_channels, shapes, out_shapes):
        super().__init__()
        mid = min(512, in_channels[-1])
        abfs = nn.ModuleList(
            [MdABF(c, mid, out_channels[i], i < len(in_channels) - 1) for i, c in enumerate(in_channels)]
        )
        self.abfs = abfs[::-1]
        self.shapes, self.out_shapes = shapes, out_shapes

    def forward(self, feats_s, pooled_s, preact_feats_t, pooled_t):
        """``feats_s`` includes the stem output f0 (dropped by the zip, as in the distiller);
        ``preact_feats_t`` too (the distiller drops it with ``[1:]``)."""
        x = (feats_s + [pooled_s.unsqueeze(-1).unsqueeze(-1)])[::-1]
        results = []
        out, res = self.abfs[0](x[0], out_shape=self.out_shapes[0])
        results.append(out)
        for feat, abf, shape, out_shape in zip(x[1:], self.abfs[1:], self.shapes[1:], self.out_shapes[1:]):
            out, res = abf(feat, res, shape, out_shape)
            results.insert(0, out)
        teacher = preact_feats_t[1:] + [pooled_t.unsqueeze(-1).unsqueeze(-1)]
        return md_hcl(results, teacher)


# ---- ND CIFAR/utils.py: DirectNormLoss (nd_loss_factor 1); CIFAR/Models/embtrans_cifar.py: EmbTrans fc1 ----
def nd_direct_norm(s_emb, t_emb, t_emb_means: dict, labels):
    loss = 0.0
    for s, t, i in zip(s_emb, t_emb, labels):
        center = torch.tensor(t_emb_means[str(i.item())], dtype=s.dtype)
        e_c = center / center.norm(p=2)
        max_norm = max(s.norm(p=2), t.norm(p=2))
        loss += 1 - torch.dot(s, e_c) / max_norm
    return loss / len(labels)


def nd_embtrans_fc1(s_emb: int, t_emb: int) -> nn.Sequential:
    fc1 = nn.Sequential(nn.BatchNorm1d(s_emb), nn.Dropout(0.5), nn.Linear(s_emb, t_emb))
    fc1[0].weight.data.fill_(1)
    fc1[0].bias.data.zero_()
    fc1[2].bias.data.zero_()
    return fc1
