"""Online training (online.peers): one step equals each network's own optimiser step on its own objective
with the other networks' detached logits, terms averaged over several peers, every network evaluated,
summarised and checkpointed, clear errors for configs that cannot work, and single-network configs unchanged.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.config import config_to_yaml
from unikd.engine.eval.saved import evaluate_checkpoint
from unikd.engine.loop.setup import build
from unikd.engine.loop.trainer import Trainer
from unikd.engine.objective.objective import Objective, Term
from unikd.engine.optim.optimizers import build_optimizer
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import DistInfo
from unikd.losses import BDKDLoss, DMLLoss, bdkd_loss, bdkd_peer_loss, dml_loss

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _online(npz, out, method="dml", peers="[tiny_cnn]", **extra):
    return base_overrides(npz, out, method=method, **{"online.peers": peers}, **extra)


@pytest.mark.parametrize("method", ["dml", "bdkd"])
def test_one_step_is_each_networks_own_step(npz_data, tmp_path, method):
    # Every network takes the SGD step of its own objective: CE + the term against the other network's
    # logits of the same forward, detached (BD-KD: the student term for the student, the peer term for it).
    cfg = load_config(None, _online(npz_data, tmp_path, method, **{"optim.momentum": 0.0,
                                                                    "optim.weight_decay": 0.0}))
    c = build(cfg, CPU)
    t = Trainer(c)
    c.train_loader.set_epoch(0)
    batch = next(iter(c.train_loader))
    student, peer = copy.deepcopy(c.model), copy.deepcopy(c.online.peers[0].model)
    student.train(), peer.train()
    zs, zp = student(batch.images), peer(batch.images)
    ce = torch.nn.functional.cross_entropy
    if method == "dml":
        ls = ce(zs, batch.target) + dml_loss(zs, zp)
        lp = ce(zp, batch.target) + dml_loss(zp, zs)
    else:
        ls = ce(zs, batch.target) + bdkd_loss(zs, zp)
        lp = ce(zp, batch.target) + bdkd_peer_loss(zp, zs)
    opts = [build_optimizer([m], name="sgd", lr=cfg.optim.lr, momentum=0.0, weight_decay=0.0)
            for m in (student, peer)]
    (ls + lp).backward()
    for o in opts:
        o.step()
    values, _ = t.step(batch, 0, 0, len(c.train_loader))
    names = c.term_names()
    assert names == ["loss", "ce", method, "peer1/loss", "peer1/ce", f"peer1/{method}"]
    assert values[0].item() == pytest.approx(ls.item(), rel=1e-6)
    assert values[3].item() == pytest.approx(lp.item(), rel=1e-6)
    for mine, ref in ((c.model, student), (c.online.peers[0].model, peer)):
        for (name, a), b in zip(mine.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert isinstance(c.objective.terms[method], (DMLLoss, BDKDLoss))
    if method == "bdkd":
        assert c.objective.terms["bdkd"].role == "student"
        assert c.online.peers[0].objective.terms["bdkd"].role == "peer"


def test_a_term_is_averaged_over_the_other_networks():
    obj = Objective([Term("dml", DMLLoss())])
    g = torch.Generator().manual_seed(0)
    z, a, b = (torch.randn(4, 5, generator=g) for _ in range(3))
    y = torch.tensor([0, 1, 2, 3])
    out = obj(z, y, teacher_logits=[a, b])
    expected = (dml_loss(z, a) + dml_loss(z, b)) / 2
    torch.testing.assert_close(out["dml"], expected)
    torch.testing.assert_close(obj(z, y, teacher_logits=[a])["dml"], dml_loss(z, a))


def test_three_networks_train_and_every_network_is_reported(npz_data, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, _online(npz_data, out, peers="[tiny_cnn, tiny_cnn]", ema_decay=0.5,
                                    **{"data.val_split": 4}))
    summary = train(cfg)
    assert summary["finished"] and summary["method"] == "dml" and summary["teacher_model"] is None
    nets = summary["online"]["networks"]
    assert summary["online"]["student"] == "student"
    assert [n["name"] for n in nets] == ["student", "peer1", "peer2"]
    for n in nets:
        assert n["model"] == "tiny_cnn" and n["best_top1"] is not None and n["test_last_top1"] is not None
        assert n["test_selected_ece"] is not None
    assert nets[0]["test_selected_top1"] == summary["test_selected_top1"]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        for peer in ("peer1", "peer2"):
            for key in ("loss", "ce", "dml", "top1"):
                assert r[f"train/{peer}/{key}"] is not None
            for key in ("top1", "top5", "nll", "ece"):
                assert r[f"val/{peer}/{key}"] is not None
    ckpt = load_checkpoint(out / "last.pt")
    peers = ckpt["online"]["peers"]
    assert [p["name"] for p in peers] == ["peer1", "peer2"] and all("ema" in p for p in peers)
    # the networks start from different initialisations and stay different
    w = [ckpt["model"]["fc.weight"]] + [p["model"]["fc.weight"] for p in peers]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert load_config(out / "config.yaml") == cfg
    # `unikd eval --network peerN` scores a peer of the checkpoint: the run's own validation numbers
    best = records[summary["best_epoch"] - 1]
    for peer in ("peer1", "peer2"):
        got = evaluate_checkpoint(out / "best.pt", network=peer, device="cpu")
        assert got["top1"] == pytest.approx(best[f"val/{peer}/top1"]) and got["network"] == peer
    with pytest.raises(ValueError, match="has no network 'peer3'; it holds: student, peer1, peer2"):
        evaluate_checkpoint(out / "best.pt", network="peer3", device="cpu")


def test_student_initialisation_is_the_offline_runs(npz_data, tmp_path):
    # The paired comparison with offline runs of the same seed relies on it: the peers are built after it.
    on = build(load_config(None, _online(npz_data, tmp_path / "a")), CPU)
    off = build(load_config(None, base_overrides(npz_data, tmp_path / "b")), CPU)
    for a, b in zip(on.model.state_dict().values(), off.model.state_dict().values()):
        assert torch.equal(a, b)


def test_single_network_configs_are_unchanged(npz_data, tmp_path):
    text = config_to_yaml(load_config(None, base_overrides(npz_data, tmp_path)))
    assert "online" not in text and "diagnostics" not in text
    assert "online:\n  peers: [tiny_cnn]" in config_to_yaml(load_config(None, _online(npz_data, tmp_path)))


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"online.peer": "[tiny_cnn]"}, "Did you mean 'online.peers'"),
        ({"teacher.model": "tiny_cnn"}, "trains its own teachers, but teacher.model is set"),
        ({"method": "ce"}, "no loss term reads the other network's logits"),
        ({"method": "fitnet"}, "read the teacher's features"),
        ({"online.peers": "[resnet_999]"}, "resnet"),
    ],
)
def test_clear_errors(npz_data, tmp_path, extra, match):
    opts = {"method": "dml", "online.peers": "[tiny_cnn]", **extra}
    with pytest.raises(ValueError, match=match):
        build(load_config(None, base_overrides(npz_data, tmp_path, **opts)), CPU)


def test_resume_with_other_peers_or_none_fails_clearly(npz_data, tmp_path):
    train(load_config(None, _online(npz_data, tmp_path, epochs=1)))
    # the config check names the difference before anything is built (online.py's own check backs it up)
    with pytest.raises(ValueError, match=r"online.peers \['tiny_cnn'\] -> \['tiny_cnn', 'tiny_cnn'\]"):
        two = _online(npz_data, tmp_path, peers="[tiny_cnn, tiny_cnn]", resume="auto")
        build(load_config(None, two), CPU)
    with pytest.raises(ValueError, match=r"online.peers \['tiny_cnn'\] -> \[\]"):
        build(load_config(None, base_overrides(npz_data, tmp_path, method="dml", resume="auto",
                                               **{"teacher.model": "tiny_cnn",
                                                  "teacher.checkpoint": str(tmp_path / "last.pt")})), CPU)
