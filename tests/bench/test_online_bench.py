"""Online runs in the bench: the online track's spec keeps the CIFAR-100 CPU protocol of the main spec, online
methods need no teacher entry, and the report lists every network of the online runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from bench_fake_runs import write_run

from unikd.bench.report import build_report
from unikd.bench.spec import expand, load_spec, overrides_require_teacher, parse_spec

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_online_track_spec_keeps_the_main_protocol():
    main, online = load_spec(BENCH / "cifar100_cpu.yaml"), load_spec(BENCH / "cifar100_cpu_online.yaml")
    assert online.seeds == main.seeds and online.overrides == main.overrides
    assert (online.jobs, online.threads, online.base) == (main.jobs, main.threads, main.base)
    assert online.out_dir != main.out_dir and online.name != main.name
    distill = next(t for t in main.tracks if t.name == "distill")
    (track,) = online.tracks
    # the main grid's track name and student, the main grid's teacher as the peer: `unikd report` of both
    # folders pairs the online runs with that track's kd and ce runs of the same seeds
    assert (track.name, track.student, track.teacher) == ("distill", distill.student, None)
    assert track.overrides == {}
    assert set(track.methods) == {"dml", "bdkd"}
    for label, over in track.methods.items():
        assert over["method"] == label and over["online.peers"] == [distill.teacher.model]
    assert "kd" in distill.methods and "ce" in distill.methods
    plans = expand(online, hash_fn=lambda *a: "x")
    assert len(plans) == 10 and all(p.role == "student" and p.teacher is None for p in plans)
    assert all("teacher.model" not in p.overrides for p in plans)


def test_online_methods_need_no_teacher_entry():
    assert overrides_require_teacher({"method": "dml"})  # offline DML distils from a teacher
    assert not overrides_require_teacher({"method": "dml", "online.peers": ["resnet20"]})
    spec = parse_spec({"out_dir": "o", "seeds": 1, "tracks": [
        {"name": "t", "student": "resnet8", "methods": {"bdkd": {"online.peers": ["resnet20"]}}}]})
    assert spec.tracks[0].methods["bdkd"]["method"] == "bdkd"


def _online_run(root: Path, label: str, seed: int, student: float, peer: float) -> None:
    rec = {"role": "student", "track": "t", "label": label, "method": label, "seed": seed}
    test = {"selected_top1": student, "last_top1": student}
    run = write_run(root / "runs" / "t" / label / f"seed{seed}", method=label, seed=seed,
                    curve=[student - 1, student], record=rec, test=test)
    summary = json.loads((run / "summary.json").read_text())
    summary["online"] = {"student": "student", "networks": [
        {"name": "student", "model": "resnet8", "best_top1": student, "test_selected_top1": student,
         "test_selected_ece": 0.05},
        {"name": "peer1", "model": "resnet20", "best_top1": peer, "test_selected_top1": peer,
         "test_selected_ece": 0.02},
    ]}
    (run / "summary.json").write_text(json.dumps(summary))


def test_report_lists_every_network_of_the_online_runs(tmp_path):
    for seed, (s, p) in enumerate([(50.0, 60.0), (52.0, 64.0)]):
        _online_run(tmp_path, "dml", seed, s, p)
    files = build_report([tmp_path], tmp_path / "report", plots=False)
    text = files.markdown.read_text()
    assert "**Online networks**" in text
    assert "| `dml` | student | resnet8 | 2 | 51.00 ± 1.41 |" in text
    assert "| `dml` | peer1 | resnet20 | 2 | 62.00 ± 2.83 |" in text
    assert "2.00 ± 0.00" in text  # the peer's ECE in percent
    # results.csv keeps one row per student run
    assert len(files.csv.read_text().splitlines()) == 3
    assert yaml.safe_load((tmp_path / "runs/t/dml/seed0/config.yaml").read_text())["method"] == "dml"
