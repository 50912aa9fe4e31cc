"""Config: schema contract, overrides, unknown keys, types, loss hyperparameters, round trip."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from unikd.engine.config import (
    OPTIONAL_DATA_KEYS,
    OPTIONAL_LOSS_KEYS,
    OPTIONAL_SECTIONS,
    SECTIONS,
    Config,
    config_to_yaml,
    load_config,
    parse_override,
    save_config,
)

REPO = Path(__file__).resolve().parents[2]


def _schema_block() -> dict:
    text = (REPO / "docs" / "training.md").read_text()
    section = text.split("## Config schema", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return yaml.safe_load(block)


def test_defaults_match_the_documented_schema():
    # the config schema of docs/training.md is the contract: every key and default must agree.
    schema = _schema_block()
    defaults = Config().to_dict()
    # the optional sections are documented with their defaults but left out of to_dict() while unset
    for name in OPTIONAL_SECTIONS:
        assert name not in defaults
        defaults[name] = dataclasses.asdict(SECTIONS[name]())
    # so are the optional data and loss keys (all null by default)
    for section, keys in (("data", OPTIONAL_DATA_KEYS), ("loss", OPTIONAL_LOSS_KEYS)):
        assert not set(keys) & set(defaults[section])
        defaults[section].update(dict.fromkeys(keys))
    assert "checks" not in defaults  # left out while auto, like them (config hashes stay as they were)
    defaults["checks"] = "auto"
    schema["resume"] = "no"  # the doc quotes it; YAML would read a bare no as False
    assert defaults == schema


def test_yaml_then_overrides(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: kd\nmodel: resnet8x4\noptim:\n  lr: 0.1\nloss:\n  temperature: 2\n")
    cfg = load_config(recipe, ["optim.lr=0.2", "sched.milestones=[5, 7]", "optim.weight_decay=5e-4"])
    assert cfg.method == "kd" and cfg.model == "resnet8x4"
    assert cfg.optim.lr == 0.2
    assert cfg.sched.milestones == [5, 7]
    assert cfg.optim.weight_decay == 5e-4  # PyYAML reads 5e-4 as a string; it is coerced
    assert cfg.loss.params == {"temperature": 2.0} and isinstance(cfg.loss.params["temperature"], float)


@pytest.mark.parametrize(
    ("override", "hint"),
    [("optim.lrr=0.1", "optim.lr"), ("epoch=3", "epochs"), ("data.batchsize=8", "data.batch_size"),
     ("teacher.checkpont=x", "teacher.checkpoint")],
)
def test_unknown_override_names_the_closest_key(override: str, hint: str):
    with pytest.raises(ValueError, match=re.escape(f"Did you mean {hint!r}")):
        load_config(None, [override])


def test_unknown_yaml_key_names_file_and_closest_key(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  momentun: 0.9\n")
    with pytest.raises(ValueError, match=r"optim.momentun.*r.yaml.*Did you mean 'optim.momentum'"):
        load_config(recipe)


def test_loss_keys_are_validated_against_the_method_signature():
    cfg = load_config(None, ["method=nkd", "loss.gamma=3.5", "loss.temperature=1"])
    assert cfg.loss.params == {"gamma": 3.5, "temperature": 1.0}
    with pytest.raises(ValueError, match=r"loss.gama.*Did you mean 'loss.gamma'"):
        load_config(None, ["method=nkd", "loss.gama=3.5"])
    with pytest.raises(ValueError, match="not used by method 'ce'"):
        load_config(None, ["loss.temperature=4"])
    with pytest.raises(ValueError, match="loss.mu must be a number"):
        load_config(None, ["method=uskd", "loss.mu=abc"])


@pytest.mark.parametrize(
    ("override", "message"),
    [("epochs=abc", "epochs must be an integer"), ("data.hflip=3", "data.hflip must be true or false"),
     ("precision=fp61", "Did you mean 'fp16'"), ("method=nkdd", "Did you mean 'nkd'"),
     ("epochs=0", "epochs must be >= 1"), ("device=gpu", "device='gpu' is not valid"),
     ("ema_decay=1.5", "ema_decay must be in"), ("optim.lr=-1", "optim.lr must be > 0"),
     ("nonsense", "must look like key=value")],
)
def test_bad_values_fail_clearly(override: str, message: str):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [override])


def test_yaml_quirks_and_none():
    assert load_config(None, ["resume=no"]).resume == "no"  # YAML 1.1 reads a bare no as False
    assert load_config(None, ["resume=auto"]).resume == "auto"
    assert load_config(None, ["num_classes=null"]).num_classes is None
    assert load_config(None, ["epochs=3.0"]).epochs == 3
    assert parse_override("teacher.model=resnet56") == ("teacher.model", "resnet56")


def test_missing_file_and_bad_section(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: 0.1\n")
    with pytest.raises(ValueError, match="section 'optim'.*must be a mapping"):
        load_config(bad)


def test_save_and_reload_round_trip(tmp_path: Path):
    cfg = load_config(None, ["method=dkd", "loss.beta=2", "sched.milestones=[1]", "ema_decay=0.99"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert "milestones: [1]" in config_to_yaml(cfg)
