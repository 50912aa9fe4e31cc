"""``unikd lm-distill teacher=<folder> student=<folder|size> data=...`` on tiny saved models (no download)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from pretrained_support import chat_rows, prompt_rows, save_llama, tokenizer, write_jsonl

from unikd.cli import main
from unikd.lm.example_config import ModelSize, load_example_config
from unikd.lm.text_data import read_records, split_records, tokenize

RUN = ["methods=[ce,kd]", "seeds=[0]", "steps=4", "batch_size=4", "log_steps=2", "threads=1", "block_size=32"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = tokenizer()
    teacher = save_llama(root / "teacher", tok, hidden=32, layers=2, seed=1)
    student = save_llama(root / "student", tok, hidden=16, layers=1, seed=2)
    return tok, teacher, student


def _run(tmp_path, *settings):
    out = tmp_path / "out"
    return main(["lm-distill", *settings, *RUN, "--out", str(out)]), out


def test_folder_teacher_and_student_on_prompt_completion_jsonl(pair, tmp_path):
    _, teacher, student = pair
    data = write_jsonl(tmp_path / "train.jsonl", prompt_rows())
    rc, out = _run(tmp_path, f"teacher={teacher}", f"student={student}", f"data={data}", "save_students=true")
    assert rc == 0
    summary = json.loads((out / "results.json").read_text())
    assert sorted(summary["runs"]) == ["ce", "kd"] and summary["corpus"]["format"] == "prompt/completion"
    kd = summary["runs"]["kd"]["0"]
    assert 1.0 < kd["val_ppl"] < 1e4 and kd["val_kl"] >= 0 and {"ce", "kd"} <= kd["curve"][0].keys()
    assert summary["teacher"]["model"] == str(teacher)
    saved = out / "runs" / "kd" / "seed0" / "model"
    assert (saved / "config.json").exists() and (saved / "tokenizer.json").exists()
    # the student trained from the loaded weights: its saved weights differ from the folder it came from
    import transformers

    before = transformers.AutoModelForCausalLM.from_pretrained(student).lm_head.weight
    after = transformers.AutoModelForCausalLM.from_pretrained(saved).lm_head.weight
    assert not torch.equal(before, after)


def test_scratch_student_chat_messages_eval_data_and_teacher_placement(pair, tmp_path):
    _, teacher, _ = pair
    train = write_jsonl(tmp_path / "chat.jsonl", chat_rows(32))
    held = write_jsonl(tmp_path / "held.jsonl", chat_rows(8))
    rc, out = _run(
        tmp_path,
        f"teacher={teacher}",
        "student.layers=1",
        "student.hidden=16",
        f"data={train}",
        f"eval_data={held}",
        "teacher_dtype=bfloat16",
        "teacher_device=cpu",
    )
    assert rc == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["corpus"]["format"] == "messages" and summary["corpus"]["files"] == {"train": 32, "val": 8}
    assert summary["runs"]["kd"]["0"]["val_kl"] >= 0


def test_text_folder_and_saved_datasets_folder(pair, tmp_path):
    _, teacher, student = pair
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(30):
        (folder / f"f{i}.py").write_text(f"def g{i}(y):\n    return y - {i}\n" * 4)
    rc, out = _run(
        tmp_path / "a", f"teacher={teacher}", f"student={student}", f"data={folder}", "fused=false"
    )
    assert rc == 0 and json.loads((out / "results.json").read_text())["corpus"]["format"] == "text"
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "ds"
    datasets.Dataset.from_list(prompt_rows()).save_to_disk(str(saved))
    rc, out = _run(
        tmp_path / "b", f"teacher={teacher}", f"student={student}", f"data={saved}", "methods=[kd]"
    )
    assert (
        rc == 0 and json.loads((out / "results.json").read_text())["corpus"]["format"] == "prompt/completion"
    )


def test_prompt_and_chat_tokens_are_masked(pair):
    tok = pair[0]
    (ex,) = tokenize([prompt_rows(1)[0]], tok, 64, "data")
    n_prompt = len(tok("def f0(x):\n", add_special_tokens=False)["input_ids"])
    assert (ex["labels"][:n_prompt] == -100).all() and (ex["labels"][n_prompt:] != -100).all()
    assert ex["labels"][-1] == tok.eos_token_id and torch.equal(
        ex["labels"][n_prompt:], ex["input_ids"][n_prompt:]
    )
    (chat,) = tokenize([chat_rows(1)[0]], tok, 64, "data")
    reply = tok.decode(chat["input_ids"][chat["labels"] != -100])
    assert reply == "x * 0<|endoftext|>"
    with pytest.raises(ValueError, match="mixes record formats"):
        tokenize([prompt_rows(1)[0], {"text": "x"}], tok, 64, "data")
    with pytest.raises(ValueError, match="needs 'text', 'prompt' and 'completion', or 'messages'"):
        tokenize([{"question": "x"}], tok, 64, "data")
    bare = tokenizer()
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        tokenize([chat_rows(1)[0]], bare, 64, "data")


def test_split_is_deterministic_and_checked(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", prompt_rows(50))
    records = read_records(str(path))
    a, b = split_records(records, 20)
    a2, b2 = split_records(list(reversed(records)), 20)
    assert sorted(map(json.dumps, b)) == sorted(map(json.dumps, b2)) and len(a) + len(b) == 50 and b
    with pytest.raises(ValueError, match="split empty; change val_percent or pass eval_data"):
        split_records(records[:1], 20)
    (tmp_path / "bad.jsonl").write_text('{"text": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_records(str(tmp_path / "bad.jsonl"))


def test_errors_name_the_fix(pair, tmp_path, monkeypatch, capsys):
    tok, teacher, student = pair
    data = write_jsonl(tmp_path / "d.jsonl", prompt_rows())
    assert _run(tmp_path, f"teacher={tmp_path / 'nowhere'}", f"data={data}")[0] == 1
    assert "is not a model folder; check the path" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _run(tmp_path / "b", "teacher=nobody-here/no-model", f"data={data}")[0] == 1
    err = capsys.readouterr().err
    assert "not in the Hugging Face cache (" in err and "HF_HUB_OFFLINE=1" in err and "hf download" in err
    other = tokenizer(vocab=300)
    other_student = save_llama(tmp_path / "other", other, hidden=16, layers=1, seed=3)
    assert _run(tmp_path / "c", f"teacher={teacher}", f"student={other_student}", f"data={data}")[0] == 1
    assert "Token-level distillation needs one tokenizer" in capsys.readouterr().err
    # the first failures pinned no settings: the same folder accepts a corrected teacher
    assert not (tmp_path / "out" / "settings.json").exists()
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert _run(tmp_path / "d", f"teacher={teacher}", "data=some-org/some-data")[0] == 1
    assert "pip install datasets" in capsys.readouterr().err


def test_config_takes_names_folders_and_sizes():
    cfg = load_example_config(None, ["teacher=Qwen/Qwen2.5-0.5B", "student=Qwen/Qwen2.5-0.5B"])
    assert cfg.teacher == "Qwen/Qwen2.5-0.5B" and cfg.student == "Qwen/Qwen2.5-0.5B"
    cfg = load_example_config(None, ["teacher=Qwen/Qwen2.5-0.5B", "student.layers=3"])
    assert cfg.student == ModelSize(layers=3, hidden=64, heads=2)
    with pytest.raises(ValueError, match="student= names a model but teacher= is a size"):
        load_example_config(None, ["student=some/model"])
    with pytest.raises(ValueError, match="data= / eval_data= need a pretrained teacher"):
        load_example_config(None, ["data=x.jsonl"])
    with pytest.raises(ValueError, match="teacher_dtype='int3' is not a dtype"):
        load_example_config(None, ["teacher=a/b", "teacher_dtype=int3"])


def test_text_budget_and_folder_skips(capsys):
    from unikd.lm.example_pretrained import _budget

    records = [("tests/a.py", {"text": "x" * 10}), ("b.py", {"text": "y" * 10}), ("c.py", {"text": "z" * 10})]
    assert [k for k, _ in _budget(records, 100, folder=True)] == ["b.py", "c.py"]
    assert [k for k, _ in _budget(records, 100, folder=False)] == ["tests/a.py", "b.py", "c.py"]
    assert [k for k, _ in _budget(records, 15, folder=False)] == ["tests/a.py", "b.py"]
    assert "read 2 of 3 text records (max_bytes=15)" in capsys.readouterr().out
