"""Config values every key must respect (finite numbers, epochs and seed ranges), and recipe files that
are refused by name: duplicate keys, non-UTF-8 text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unikd.engine.config import load_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["epochs=1000001"], "epochs must be >= 1 and <= 1000000, got 1000001"),
     (["seed=-1"], "seed must be an integer in [0, 2**63 - 1]"),
     ([f"seed={2**63}"], "seed must be an integer in [0, 2**63 - 1]"),
     (["data.split_seed=-5"], "data.split_seed must be an integer in [0, 2**63 - 1]"),
     (["data.num_workers=-1"], "data.num_workers must be >= 0"),
     (["optim.lr=.inf"], "optim.lr=inf is not a finite number"),
     (["optim.lr=nan"], "optim.lr=nan is not a finite number"),
     (["teacher.min_top1=.nan"], "teacher.min_top1=nan is not a finite number"),
     (["method=kd", "loss.temperature=-.inf"], "loss.temperature=-inf is not a finite number"),
     (["model_args={drop_rate: .inf}"], "model_args.drop_rate=inf is not a finite number"),
     (["optim.betas=[0.9, .nan]"], "optim.betas[1]=nan is not a finite number")],
)
def test_out_of_bounds_and_non_finite_values_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, overrides)


def test_bounds_accept_the_extremes():
    cfg = load_config(None, ["epochs=1000000", f"seed={2**63 - 1}", "data.split_seed=0"])
    assert cfg.epochs == 10**6 and cfg.seed == 2**63 - 1


def test_duplicate_yaml_keys_name_the_key_the_lines_and_the_file(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n")
    with pytest.raises(ValueError, match=r"r\.yaml' is not valid YAML: duplicate key 'lr' on lines 2 and 4"):
        load_config(recipe)
    top = tmp_path / "top.yaml"
    top.write_text("epochs: 3\nmethod: kd\nepochs: 5\n")
    with pytest.raises(ValueError, match="duplicate key 'epochs' on lines 1 and 3"):
        load_config(top)
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        load_config(None, ["model_args={a: 1, a: 2}"])


def test_yaml_merge_keys_may_still_override_merged_values(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_args: &base {width: 8}\nteacher:\n  model_args:\n    <<: *base\n    width: 16\n")
    assert load_config(recipe).teacher.model_args == {"width": 16}


def test_a_non_utf8_recipe_names_the_file(tmp_path: Path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("model: r\xe9snet8\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"config file .*latin1\.yaml' is not UTF-8 text.*0xe9.*UTF-8"):
        load_config(recipe)
