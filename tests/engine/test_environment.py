"""environment.json: each start of a run appends the machine and software it ran on."""

from __future__ import annotations

import json

from harness_support import base_overrides

from unikd.engine import load_config, train
from unikd.engine.run.environment import ENVIRONMENT_FILE, cpu_info, describe_environment, record_environment

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_bf16 sha_ni

processor\t: 1
model name\t: another line that must not win
"""


def test_cpu_info_reads_the_first_cpu_and_the_kernel_flags():
    info = cpu_info(CPUINFO)
    assert info["model_name"] == "AMD EPYC 9R14"
    assert (info["family"], info["model"]) == ("25", "17")
    assert info["flags"] == ["avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"]  # sha_ni is not listed


def test_cpu_info_without_proc_cpuinfo_still_names_something():
    info = cpu_info("")
    assert info["model_name"] and info["flags"] == [] and info["family"] is None


def test_describe_environment_names_torch_and_threads():
    env = describe_environment()
    assert env["packages"]["torch"].split("+")[0].count(".") == 2
    assert env["torch_threads"] >= 1 and env["cpu"]["cores"] >= 1
    json.dumps(env)  # JSON-ready


def test_record_environment_appends_and_replaces_a_damaged_file(tmp_path):
    record_environment(tmp_path)
    record_environment(tmp_path)
    assert len(json.loads((tmp_path / ENVIRONMENT_FILE).read_text())["starts"]) == 2
    (tmp_path / ENVIRONMENT_FILE).write_text("{not json")
    record_environment(tmp_path)
    assert len(json.loads((tmp_path / ENVIRONMENT_FILE).read_text())["starts"]) == 1


def test_a_run_and_its_resume_each_record_a_start(npz_data, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, base_overrides(npz_data, out, epochs=1)))
    starts = json.loads((out / ENVIRONMENT_FILE).read_text())["starts"]
    assert len(starts) == 1 and starts[0]["packages"]["unikd"]
    train(load_config(None, base_overrides(npz_data, out, epochs=2) + ["resume=auto"]))
    assert len(json.loads((out / ENVIRONMENT_FILE).read_text())["starts"]) == 2
    # overwrite deletes the old run's record with the run
    train(load_config(None, base_overrides(npz_data, out, epochs=1) + ["resume=no", "overwrite=true"]))
    assert len(json.loads((out / ENVIRONMENT_FILE).read_text())["starts"]) == 1
