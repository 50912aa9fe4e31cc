"""Spec parsing, validation messages, grid expansion and override formatting."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from unikd.bench.spec import expand, parse_spec
from unikd.bench.values import format_value


def _spec(**kw):
    data = {
        "out_dir": "out",
        "seeds": 2,
        "overrides": {"epochs": 3, "data": {"name": "digits"}},
        "tracks": [
            {
                "name": "kd",
                "student": "tiny_cnn",
                "teacher": {"model": "resnet8", "overrides": {"epochs": 5}},
                "methods": {"ce": {}, "kd": {"loss.temperature": 2.0}},
            },
            {"name": "self", "student": "tiny_cnn", "methods": ["ce", "ls"]},
        ],
    }
    data.update(kw)
    return data


def _fake_hash(base, overrides):
    return "h" + str(sorted(overrides.items())).__hash__().__format__("x")[-6:]


def test_expand_orders_teacher_first_then_seed_major():
    plans = expand(parse_spec(_spec()), hash_fn=lambda b, o: "abc")
    assert [p.name for p in plans] == [
        "resnet8-abc",
        "kd/ce/seed0",
        "kd/kd/seed0",
        "kd/ce/seed1",
        "kd/kd/seed1",
        "self/ce/seed0",
        "self/ls/seed0",
        "self/ce/seed1",
        "self/ls/seed1",
    ]
    teacher = plans[0]
    assert teacher.role == "teacher" and str(teacher.out_dir) == "out/teachers/resnet8-abc"
    assert teacher.overrides["epochs"] == 5 and teacher.overrides["method"] == "ce"
    assert teacher.overrides["model"] == "resnet8"
    kd = plans[2]
    assert kd.overrides["method"] == "kd" and kd.overrides["loss.temperature"] == 2.0
    assert kd.overrides["teacher.checkpoint"] == "out/teachers/resnet8-abc/last.pt"
    assert kd.overrides["epochs"] == 3 and kd.overrides["data.name"] == "digits"
    assert kd.overrides["resume"] == "auto" and kd.overrides["out_dir"] == "out/runs/kd/kd/seed0"
    assert kd.teacher == str(teacher.out_dir)
    ce = plans[1]
    assert "teacher.checkpoint" not in ce.overrides and ce.teacher is None  # CE does not load the teacher
    # the self track's CE has exactly the settings of the kd track's CE: trained once, copied
    assert [p.copy_of for p in plans if p.copy_of] == ["out/runs/kd/ce/seed0", "out/runs/kd/ce/seed1"]
    assert plans[5].name == "self/ce/seed0" and plans[5].copy_of == str(ce.out_dir)


def test_track_seeds_override_the_spec_seeds():
    data = _spec(seeds=3)
    data["tracks"][1]["seeds"] = [0, 1]
    spec = parse_spec(data)
    assert spec.track_seeds(spec.tracks[0]) == [0, 1, 2] and spec.track_seeds(spec.tracks[1]) == [0, 1]
    names = [p.name for p in expand(spec, hash_fn=lambda b, o: "abc")]
    assert names.count("kd/ce/seed2") == 1 and "self/ls/seed2" not in names and "self/ls/seed1" in names
    data["tracks"][1]["seeds"] = [1, 1]
    with pytest.raises(ValueError, match=r"tracks\[1\].*distinct"):
        parse_spec(data)


def test_comparisons_are_checked_against_the_tracks():
    data = _spec(comparisons=[
        {"track": "self", "reference": "ce", "threshold": 1},
        {"track": "kd", "reference": "kd", "methods": ["ce"], "metric": "test_selected_top1_dropped"},
    ])
    a, b = parse_spec(data).comparisons
    assert (a.track, a.reference, a.methods, a.threshold, a.metric) == ("self", "ce", ["ls"], 1.0, None)
    assert (b.reference, b.methods, b.threshold) == ("kd", ["ce"], None)
    assert b.metric == "test_selected_top1_dropped"
    bad = [
        ({"track": "nope", "reference": "ce"}, "not a track of this spec"),
        ({"track": "self", "reference": "kd"}, "reference 'kd' is not a method label"),
        ({"track": "self", "reference": "ce", "methods": ["ce"]}, "other than the reference"),
        ({"track": "self", "reference": "ce", "methods": ["lss"]}, "method 'lss' must be"),
        ({"track": "self", "reference": "ce", "threshold": "1"}, "threshold must be a finite number"),
        ({"track": "self", "reference": "ce", "treshold": 1}, "Did you mean 'threshold'"),
        ({"track": "self", "reference": "ce", "metric": "top1_dropped"}, "'top1_dropped' is not a metric"),
    ]
    for entry, message in bad:
        with pytest.raises(ValueError, match=message):
            parse_spec(_spec(comparisons=[entry]))


def test_shared_teacher_trained_once():
    data = _spec()
    data["tracks"][1]["teacher"] = {"model": "resnet8", "overrides": {"epochs": 5}}
    plans = expand(parse_spec(data), hash_fn=_fake_hash)
    assert sum(p.role == "teacher" for p in plans) == 1
    data["tracks"][1]["teacher"] = {"model": "resnet8", "overrides": {"epochs": 6}}
    plans = expand(parse_spec(data), hash_fn=_fake_hash)
    assert sum(p.role == "teacher" for p in plans) == 2


def test_existing_teacher_checkpoint_is_not_trained(tmp_path):
    ckpt = tmp_path / "t.pt"
    ckpt.write_bytes(b"x")
    data = _spec()
    data["tracks"][0]["teacher"] = {"model": "resnet8", "checkpoint": str(ckpt)}
    plans = expand(parse_spec(data), hash_fn=_fake_hash)
    assert not any(p.role == "teacher" for p in plans)
    assert plans[1].overrides["teacher.checkpoint"] == str(ckpt) and plans[1].teacher is None


def test_command_line_overrides_and_env(monkeypatch):
    monkeypatch.setenv("BENCH_TEST_ROOT", "/data")
    data = _spec(overrides={"data.root": "${BENCH_TEST_ROOT}/c.tgz", "data.cache_dir": "${NOPE_X:-/tmp/c}"})
    spec = parse_spec(data, extra_overrides={"epochs": 7})
    assert spec.overrides == {"data.root": "/data/c.tgz", "data.cache_dir": "/tmp/c", "epochs": 7}
    with pytest.raises(ValueError, match="NOPE_Y which is not set"):
        parse_spec(_spec(out_dir="${NOPE_Y}"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"trakcs": []}, "unknown key 'trakcs'. Did you mean 'tracks'"),
        ({"seeds": [0, 0]}, "distinct"),
        ({"seeds": 0}, "must be >= 1"),
        ({"overrides": {"seed": 1}}, "sets seed, which the bench sets itself"),
        ({"overrides": {"method": "kd"}}, "set it per method"),
        ({"tracks": [{"name": "a", "student": "m", "methods": ["nkd"]}]}, "needs a teacher"),
        ({"tracks": [{"name": "a/b", "student": "m", "methods": ["ce"]}]}, "only letters"),
        ({"tracks": [{"name": "a", "student": "m", "methods": ["ce"]}] * 2}, "must be distinct"),
        ({"tracks": [{"name": "a", "student": "m", "methods": {"ce": {"model": "x"}}}]}, "sets model"),
        (
            {
                "tracks": [
                    {
                        "name": "a",
                        "student": "m",
                        "methods": ["ce"],
                        "teacher": {"model": "t", "checkpoint": "/no.pt"},
                    }
                ]
            },
            "does not exist",
        ),
        ({"base": "/no/such.yaml"}, "base config"),
        ({"overrides": [1, 2]}, "must be a mapping"),
    ],
)
def test_bad_specs_fail_clearly(change, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(_spec(**change))


def test_missing_required_key():
    data = _spec()
    del data["out_dir"]
    with pytest.raises(ValueError, match="missing required key 'out_dir'"):
        parse_spec(data)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
)


@given(st.one_of(scalars, st.lists(st.one_of(st.integers(-100, 100), st.floats(-1e3, 1e3)), max_size=4)))
def test_format_value_round_trips_through_yaml(value):
    text = format_value(value)
    assert "\n" not in text
    got = yaml.safe_load(text)
    if isinstance(value, float):
        assert isinstance(got, float) and (got == value or (math.isnan(got) and math.isnan(value)))
    else:
        assert got == value and type(got) is type(value)


def test_format_value_rejects_what_yaml_cannot_carry():
    with pytest.raises(ValueError, match="cannot be passed"):
        format_value({"a": 1})


def test_teachers_are_trained_without_the_students_dropped_classes(tmp_path):
    from unikd.bench.spec import resolved_hash

    drops = {"epochs": 3, "data": {"name": "digits", "drop_classes": [3, 5]}}
    plans = expand(parse_spec(_spec(overrides=drops)), hash_fn=resolved_hash)
    teacher = next(p for p in plans if p.role == "teacher")
    assert teacher.overrides["data.drop_classes"] is None and teacher.overrides["data.drop_seed"] is None
    assert all(p.overrides["data.drop_classes"] == [3, 5] for p in plans if p.role == "student")
    # the same teacher (same folder, same hash) as a spec that drops nothing
    plain = next(p for p in expand(parse_spec(_spec()), hash_fn=resolved_hash) if p.role == "teacher")
    assert teacher.out_dir == plain.out_dir
    # a track's drops never reach its teacher; a base config's are switched off for it
    data = _spec()
    data["tracks"][0]["overrides"] = {"data.drop_classes": 2}
    teacher = next(p for p in expand(parse_spec(data), hash_fn=_fake_hash) if p.role == "teacher")
    assert "data.drop_classes" not in teacher.overrides
    base = tmp_path / "base.yaml"
    base.write_text("data: {drop_classes: [1]}\n")
    teacher = next(p for p in expand(parse_spec(_spec(base=str(base))), hash_fn=_fake_hash)
                   if p.role == "teacher")
    assert teacher.overrides["data.drop_classes"] is None
    data = _spec()
    data["tracks"][0]["teacher"]["overrides"] = {"data.drop_classes": [1]}
    with pytest.raises(ValueError, match="classes are dropped from the students' training split only"):
        parse_spec(data)


def test_the_dark_knowledge_protocol_drops_two_classes_in_one_track_only():
    from pathlib import Path

    from unikd.bench.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "benchmarks" / "cifar10_dark_knowledge.yaml")
    assert spec.seeds == [0, 1, 2, 3, 4] and (spec.jobs, spec.threads, spec.teacher_cache) == (2, 1, False)
    assert spec.overrides["precision"] == "fp32" and spec.overrides["data.image_size"] == 16
    dropped, complete = spec.tracks
    assert dropped.overrides == {"data.drop_classes": [3, 9]} and complete.overrides == {}
    assert dropped.teacher == complete.teacher  # one teacher, trained on all ten classes, serves both
    assert set(dropped.methods) == {"ce", "kd", "dkd", "nkd", "extended_kd", "nkd_extended_kd"}
    assert set(complete.methods) == {"kd", "extended_kd"}
    for label in complete.methods:  # the complete-data baseline: the same students, every class kept
        assert complete.methods[label] == dropped.methods[label]
    plans = expand(spec, hash_fn=lambda *a: "x")
    assert sum(p.role == "teacher" for p in plans) == 1 and len(plans) == 41
    assert all("data.drop_classes" not in p.overrides for p in plans if p.role == "teacher")
    # the primary decision: extended_kd against kd on the dropped classes, alone in its family
    first = spec.comparisons[0]
    assert (first.track, first.reference, first.methods) == ("dropped", "kd", ["extended_kd"])
    assert (first.metric, first.threshold) == ("test_selected_top1_dropped", 3.0)
    assert all(c.threshold is None for c in spec.comparisons[1:])
