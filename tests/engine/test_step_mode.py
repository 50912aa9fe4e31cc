"""The ``checks`` key (when the losses' value checks run in a training run) and the step policy behind it:
validation, the checked first steps of ``auto`` (a bad input on step 1 raises the losses' error) and the
sync-free forward of unchecked steps (run on the ``meta`` device, where reading a value raises)."""

from __future__ import annotations

import pytest
import torch
from harness_support import base_overrides

from unikd.engine import load_config
from unikd.engine.config import Config
from unikd.engine.loop.resume_check import config_changes
from unikd.engine.loop.setup import build
from unikd.engine.loop.step import forward_terms
from unikd.engine.loop.step_mode import CHECKED_STEPS, StepMode
from unikd.engine.loop.trainer import Trainer
from unikd.engine.run.distributed import DistInfo
from unikd.losses.checks import checks, get_checks

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("checks=ful", r"checks='ful' is not valid\. Did you mean 'full'\?"),
        ("compile=stpe", r"compile='stpe' is not valid\. Did you mean 'step'\?"),
        ("checks=3", "checks must be a string"),
    ],
)
def test_bad_values_are_named_with_a_suggestion(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_compiled_step_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="compile=step with checks=full.*checks=auto"):
        load_config(None, ["compile=step", "checks=full"])
    with pytest.raises(ValueError, match="compile=step with diagnostics.every=5.*compile=model"):
        load_config(None, ["compile=step", "diagnostics.every=5"])
    assert load_config(None, ["compile=model", "checks=full"]).compile == "model"


def test_yaml_spellings_and_the_written_config():
    assert load_config(None, ["checks=off"]).checks == "off"  # YAML 1.1 reads off as false
    assert load_config(None, ["checks=on"]).checks == "full"
    assert load_config(None, ["compile=true"]).compile is True
    assert "checks" not in Config().to_dict()  # the default is not written: config hashes stay as before
    cfg = load_config(None, ["checks=off"])
    assert cfg.to_dict()["checks"] == "off" and Config.from_dict(cfg.to_dict()) == cfg


def test_checks_may_change_on_resume():
    stored = Config().to_dict()
    assert config_changes(stored, load_config(None, ["checks=off"])) == []
    assert config_changes(stored, load_config(None, ["compile=step"])) == [("compile", False, "step")]


def test_policy_of_each_setting():
    modes = {s: StepMode(load_config(None, [f"checks={s}"])) for s in ("auto", "full", "off")}
    seen: dict[str, list[str]] = {s: [] for s in modes}
    for _ in range(CHECKED_STEPS + 3):
        for s, m in modes.items():
            seen[s].append(m.checks())
            m.steps += 1
    assert seen["auto"] == ["full"] * CHECKED_STEPS + ["off"] * 3
    assert set(seen["full"]) == {"full"} and set(seen["off"]) == {"off"}
    # a resumed run is a new process (a new Trainer): its first steps are checked again
    assert StepMode(load_config(None, [])).checks() == "full"


def _soft_batch(c):
    """The first training batch with soft labels summing to 2: the cross-entropy takes them silently, the
    USKD term's check of its soft target does not."""
    c.train_loader.set_epoch(0)
    batch = next(iter(c.train_loader))
    soft = torch.full((batch.target.shape[0], c.num_classes), 2.0 / c.num_classes)
    return batch._replace(target=soft)


@pytest.mark.parametrize("setting", ["auto", "full", "off"])
def test_a_bad_input_on_the_first_step_raises_unless_checks_are_off(npz_data, tmp_path, setting):
    cfg = load_config(None, base_overrides(npz_data, tmp_path, method="uskd", checks=setting))
    c = build(cfg, CPU)
    trainer = Trainer(c)
    batch = _soft_batch(c)
    if setting == "off":
        values, _ = trainer.step(batch, 0, 0, len(c.train_loader))
        assert torch.isfinite(values).all()  # unchecked: the run goes on
    else:
        with pytest.raises(ValueError, match="sum to 1"):
            trainer.step(batch, 0, 0, len(c.train_loader))
    if setting == "auto":
        trainer.mode.steps = CHECKED_STEPS  # past the checked steps: the same batch passes
        trainer.step(batch, 0, 0, len(c.train_loader))
    assert get_checks() == "full"  # the process-wide mode is restored after each step


def test_unchecked_forward_reads_no_value(npz_data, tmp_path):
    # The forward of every network and the loss terms, on the meta device (no values: any host read
    # raises), with their backward: what a compiled or captured step runs after the checked steps.
    cfg = load_config(None, base_overrides(npz_data, tmp_path, method="uskd", checks="off"))
    c = build(cfg, CPU)
    c.model.to("meta")
    c.objective.to("meta")
    batch = _soft_batch(c)
    images = torch.empty(batch.images.shape, device="meta")
    target = torch.empty(batch.target.shape, device="meta")
    with checks("off"):
        logits, outs = forward_terms(c, images, target, None, None, 0.5)
        outs[0]["loss"].backward()
    assert outs[0]["loss"].device.type == "meta" and logits[0].device.type == "meta"
    with checks("full"), pytest.raises((NotImplementedError, RuntimeError)):  # the detector detects
        forward_terms(c, images, target, None, None, 0.5)
