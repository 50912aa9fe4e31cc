"""The two config forms of the objective (single method, ``loss.terms``), overrides into the terms, the
``taps`` section, clear errors, and the round trip through config.yaml and ``--print-config``."""

from __future__ import annotations

from pathlib import Path

import pytest

from unikd.bench.spec import overrides_require_teacher
from unikd.engine.config import TermConfig, config_to_yaml, load_config, save_config


def test_single_method_form_is_one_term_named_after_the_method():
    cfg = load_config(None, ["method=zipf", "loss.weight=0.5", "loss.warmup_epochs=2", "loss.power=2"])
    assert cfg.loss.terms == [] and cfg.method == "zipf"
    assert cfg.terms == [TermConfig("zipf", "zipf", 0.5, 2.0, {"power": 2.0})]
    assert load_config(None, ["method=ls"]).terms == []
    assert "terms" not in cfg.to_dict()["loss"]


def test_list_and_mapping_forms_are_the_same_config(tmp_path: Path):
    listed = tmp_path / "list.yaml"
    listed.write_text(
        "loss:\n  terms:\n    - {method: kd, weight: 1.0, temperature: 4}\n"
        "    - {method: kd, name: kd_t2, temperature: 2, warmup_epochs: 5}\n"
        "    - {method: fitnet, weight: 100}\n"
    )
    mapped = tmp_path / "map.yaml"
    mapped.write_text(
        "loss:\n  terms:\n    kd: {temperature: 4.0}\n"
        "    kd_t2: {method: kd, temperature: 2, warmup_epochs: 5}\n"
        "    fitnet: {weight: 100}\n"
    )
    a, b = load_config(listed), load_config(mapped)
    assert a == b and a.method == "kd+kd_t2+fitnet"
    assert a.terms == [
        TermConfig("kd", "kd", 1.0, 0.0, {"temperature": 4.0}),
        TermConfig("kd_t2", "kd", 1.0, 5.0, {"temperature": 2.0}),
        TermConfig("fitnet", "fitnet", 100.0, 0.0, {}),
    ]
    # canonical form: a mapping by name, `method` only where it differs from the name
    assert a.to_dict()["loss"]["terms"]["kd_t2"]["method"] == "kd"
    assert "method" not in a.to_dict()["loss"]["terms"]["fitnet"]
    assert "weight" not in a.to_dict()["loss"] and "warmup_epochs" not in a.to_dict()["loss"]


def test_overrides_edit_add_and_remove_terms():
    base = ["loss.terms={nkd: {gamma: 2}, fitnet: {weight: 100}}"]
    cfg = load_config(None, [*base, "loss.terms.nkd.gamma=3", "loss.terms.at={weight: 1000}",
                             "loss.terms.fitnet=null"])
    assert [(t.name, t.weight, t.params) for t in cfg.terms] == [("nkd", 1.0, {"gamma": 3.0}),
                                                                  ("at", 1000.0, {})]
    assert cfg.method == "nkd+at"
    assert load_config(None, [*base, "loss.terms.kd2.method=kd"]).terms[-1] == TermConfig("kd2", "kd")
    assert load_config(None, [*base, "loss.terms=null"]).method == "ce"


def test_round_trip_through_config_yaml_and_print_config(tmp_path: Path, capsys):
    from unikd.cli import main

    overrides = ["model=resnet8x4", "loss.ce_weight=0.5", "taps.student.hint=layer3",
                 "loss.terms=[{method: nkd, temperature: 1.0}, "
                 "{method: fitnet, weight: 100, warmup_epochs: 2}]"]
    cfg = load_config(None, overrides)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert main(["train", "-", *overrides, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert printed == config_to_yaml(cfg)
    (tmp_path / "printed.yaml").write_text(printed)
    assert load_config(tmp_path / "printed.yaml") == cfg
    assert "method: nkd+fitnet" in printed and "hint: [layer3]" in printed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.terms.kd.tempreature=3"], "Did you mean 'loss.terms.kd.temperature'"),
        (["loss.terms.kd.wieght=3"], "Did you mean 'loss.terms.kd.weight'"),
        (["loss.terms=[{method: kd}, {method: kd}]"], "two terms named 'kd'; give one a name"),
        (["loss.terms.nkdd={}"], "loss.terms.nkdd: 'nkdd' is not a loss method. Did you mean 'nkd'"),
        (["loss.terms.t={method: fitnt}"], "loss.terms.t.method: 'fitnt' is not a loss method. Did you mean"),
        (["loss.terms.ce={method: kd}"], "term name 'ce' is not valid"),
        (["loss.terms.kd={}", "method=nkd"], "method='nkd' conflicts with loss.terms"),
        (["loss.terms.kd={}", "loss.temperature=2"], "loss.temperature belongs to the single-method form.*"
                                                     "loss.terms.kd.temperature"),
        (["loss.terms.kd={}", "loss.weight=2"], "loss.weight belongs to the single-method form"),
        (["loss.terms.fitnet.student_shapes=[[1, 2, 3]]"], "supplied by the training harness"),
        (["loss.terms.kd.weight=-1"], "must be >= 0"),
        (["loss.terms=[kd]"], r"loss.terms\[0\].*must be a mapping with a method"),
        (["loss.terms.kd.temperature.x=1"], "write loss.terms.<name>.<key>"),
        (["loss.term.kd={}"], "Did you mean 'loss.terms'"),
        (["taps.student.hnit=layer2"], "Did you mean 'taps.student.hint'"),
        (["taps.student.uskd=layer2"], "top-level key `feature`"),
        (["taps.student=layer2"], "maps tap kinds to module paths"),
        (["taps.teacher.stages=3"], r"taps.teacher.stages\[0\] must be a string"),
    ],
)
def test_mistakes_fail_with_the_key_and_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_hyperparameters_come_from_the_module_signature():
    cfg = load_config(None, ["method=at", "loss.p=3"])
    assert cfg.terms[0].params == {"p": 3.0} and isinstance(cfg.terms[0].params["p"], float)
    with pytest.raises(ValueError, match="'loss.temperature' for method 'fitnet'.*Valid keys: ce_weight"):
        load_config(None, ["method=fitnet", "loss.temperature=4"])


def test_bench_specs_see_the_teacher_needs_of_terms():
    assert overrides_require_teacher({"method": "kd"})
    assert not overrides_require_teacher({"method": "uskd"})
    assert overrides_require_teacher({"loss.terms.uskd.mu": 0.1, "loss.terms.fit.method": "fitnet"})
    assert not overrides_require_teacher({"loss.terms.uskd.mu": 0.1})
    assert overrides_require_teacher({"loss.terms": [{"method": "at"}]})
