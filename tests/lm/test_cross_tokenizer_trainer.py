"""Cross-tokenizer distillation in the trainer: the two-tokenizer collator, the loss of a batch against a
computation by hand, the refusals, bits per byte against a hand computation, and ``unikd lm-distill`` with a
teacher that has its own tokenizer (tiny models and tokenizers trained here, no download)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lm_support import args
from pretrained_support import TEXTS, tokenizer

transformers = pytest.importorskip("transformers")

import unikd.token as T  # noqa: E402
from unikd.cli import main  # noqa: E402
from unikd.lm.bpb import bits_per_byte, evaluate_bpb  # noqa: E402
from unikd.lm.cross_collator import CrossTokenizerCollator, encode_with_offsets  # noqa: E402
from unikd.lm.trainer import DistillationTrainer, DistillSettings  # noqa: E402

CONTEXT = 40
ROWS = [{"text": TEXTS[i] + "é " + TEXTS[i + 1]} for i in range(24)]


@pytest.fixture(scope="module")
def toks():
    student, teacher = tokenizer(272), tokenizer(420)
    assert student.get_vocab() != teacher.get_vocab()
    return student, teacher


def _llama(tok, hidden, seed):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(cfg)


def _trainer(tmp_path, toks, loss="uld", **kw):
    student, teacher = _llama(toks[0], 16, 0), _llama(toks[1], 24, 1)
    settings = DistillSettings(loss, **kw)
    return DistillationTrainer(
        student, teacher, args(tmp_path, max_steps=3), distill=settings, train_dataset=ROWS,
        student_tokenizer=toks[0], teacher_tokenizer=toks[1],
    )


def test_collator_keeps_both_tokenizations_and_offsets(toks):
    collate = CrossTokenizerCollator(*toks, max_length=CONTEXT)
    batch = collate(ROWS[:3])
    for side, tok in (("", toks[0]), ("teacher_", toks[1])):
        offsets = batch["student_offsets" if not side else "teacher_offsets"]
        for r, row in enumerate(ROWS[:3]):
            ids, offs = encode_with_offsets(tok, [row["text"]])[0]
            n = min(len(ids), CONTEXT)
            assert batch[f"{side}attention_mask"][r].sum() == n
            assert batch[f"{side}input_ids"][r, :n].tolist() == ids[:n]
            assert batch[f"{side}labels"][r, n:].eq(-100).all()
            assert [tuple(o) for o in offsets[r, :n].tolist()] == offs[:n]
            assert offsets[r, n:].eq(0).all()
    assert batch["input_ids"].shape != batch["teacher_input_ids"].shape  # two tokenizations of one text
    student_only = CrossTokenizerCollator(toks[0], max_length=CONTEXT)(ROWS[:2])
    assert sorted(student_only) == ["attention_mask", "input_ids", "labels"]
    with pytest.raises(ValueError, match="under 'text'"):
        collate([{"prompt": "x"}])
    with pytest.raises(ValueError, match="fast Hugging Face"):
        CrossTokenizerCollator(object(), max_length=8)
    with pytest.raises(ValueError, match="max_length must be an int >= 2"):
        CrossTokenizerCollator(toks[0], max_length=1)


def test_cross_loss_of_a_batch_equals_the_hand_computation(tmp_path, toks):
    for loss, alignment in (("uld", "span"), ("span_kl", "span"), ("uld", "truncation")):
        tr = _trainer(tmp_path, toks, loss, alignment=alignment, ce_weight=0.7, weight=1.3)
        batch = tr.data_collator(ROWS[:4])
        got = tr.compute_loss(tr.model, dict(batch))
        zs = tr.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with torch.no_grad():
            zt = tr.teacher(
                input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]
            ).logits
        ys, yt = T.next_token_labels(batch["labels"]), T.next_token_labels(batch["teacher_labels"])
        if alignment == "span":
            a = T.span_alignment(
                batch["student_offsets"], batch["teacher_offsets"], student_mask=ys != -100,
                teacher_mask=yt != -100,
            )
            assert a.count > 4 * 10  # most token ends of the smaller vocabulary are also the larger one's
        else:
            a = T.truncation_alignment(ys, yt)
        fn = T.create_cross_tokenizer_loss(loss, student_tokenizer=toks[0], teacher_tokenizer=toks[1])
        ce = torch.nn.functional.cross_entropy(zs.flatten(0, 1), ys.reshape(-1), ignore_index=-100)
        want = 0.7 * ce + 1.3 * fn(zs, zt, a)
        assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_trains_logs_and_leaves_the_teacher_alone(tmp_path, toks):
    tr = _trainer(tmp_path, toks, "span_kl")
    teacher_before = [p.clone() for p in tr.teacher.parameters()]
    student_before = [p.clone() for p in tr.model.parameters()]
    tr.train()
    rows = [r for r in tr.state.log_history if "loss" in r and "span_kl" in r]
    assert rows and all(math.isfinite(r["loss"]) and r["span_kl"] >= 0 for r in rows)
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, tr.teacher.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(student_before, tr.model.parameters(), strict=True))
    metrics = tr.evaluate(ROWS[:8])
    assert {"eval_ce", "eval_span_kl"} <= metrics.keys()


def test_two_tokenizers_are_refused_for_a_same_tokenizer_loss(tmp_path, toks):
    names = ", ".join(T.list_cross_tokenizer_losses())
    with pytest.raises(ValueError, match=rf"vocabulary size mismatch.*cross-tokenizer loss \({names}\)"):
        _trainer(tmp_path, toks, "kd")
    student = _llama(toks[0], 16, 0)
    with pytest.raises(ValueError, match=r"tokenizers differ.*cross-tokenizer loss"):
        DistillationTrainer(
            student, _llama(toks[0], 24, 1), args(tmp_path), distill=DistillSettings("kd"),
            train_dataset=ROWS, data_collator=CrossTokenizerCollator(toks[0], max_length=CONTEXT),
            student_tokenizer=toks[0], teacher_tokenizer=toks[1],
        )


def test_cross_path_errors_name_the_fix(tmp_path, toks):
    student, teacher = _llama(toks[0], 16, 0), _llama(toks[1], 24, 1)
    with pytest.raises(ValueError, match="pass student_tokenizer= and teacher_tokenizer="):
        DistillationTrainer(
            student, teacher, args(tmp_path), distill=DistillSettings("uld"), train_dataset=ROWS
        )
    with pytest.raises(ValueError, match="needs the teacher model"):
        DistillationTrainer(
            student, None, args(tmp_path), distill=DistillSettings("uld"), train_dataset=ROWS,
            sparse_teacher=str(tmp_path), student_tokenizer=toks[0], teacher_tokenizer=toks[1],
        )
    with pytest.raises(ValueError, match="on_policy=0 and seq_kd=0"):
        _trainer(tmp_path, toks, "uld", on_policy=0.5)
    with pytest.raises(ValueError, match="leave vocab_size unset"):
        _trainer(tmp_path, toks, "uld", vocab_size=100)
    with pytest.raises(ValueError, match=r"bad hyperparameters \['temperature'\] for the cross"):
        _trainer(tmp_path, toks, "uld", hyperparameters={"temperature": 2.0})
    with pytest.raises(ValueError, match="max_length=40"):
        DistillationTrainer(
            student, teacher, args(tmp_path), distill=DistillSettings("uld"), train_dataset=ROWS,
            data_collator=CrossTokenizerCollator(*toks, max_length=64),
            student_tokenizer=toks[0], teacher_tokenizer=toks[1],
        )
    with pytest.raises(ValueError, match="alignment=.truncation. pairs the positions of two tokenizers"):
        DistillSettings("kd", alignment="truncation")
    with pytest.raises(ValueError, match="alignment must be one of span, truncation"):
        DistillSettings("uld", alignment="greedy")
    tr = _trainer(tmp_path, toks, "uld")
    plain = CrossTokenizerCollator(toks[0], max_length=CONTEXT)(ROWS[:2])
    with pytest.raises(ValueError, match="has no 'teacher_input_ids'.*CrossTokenizerCollator"):
        tr.compute_loss(tr.model, plain)


def _hand_bpb(model, tok, texts, prefix):
    nll, nbytes = 0.0, 0
    for text in texts:
        ids, offs = encode_with_offsets(tok, [text])[0]
        if prefix is not None:
            ids = [prefix, *ids][:CONTEXT]
            start = 0
        else:
            ids, start = ids[:CONTEXT], offs[1][0]
        n_text = len(ids) - (prefix is not None)  # text tokens kept
        end = offs[n_text - 1][1]
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        logp = logits.log_softmax(-1)
        nll -= sum(logp[t, ids[t + 1]].item() for t in range(len(ids) - 1))
        nbytes += len(text[start:end].encode("utf-8"))
    return nll / math.log(2) / nbytes, nbytes


@pytest.mark.parametrize("prefix", [True, False])
def test_bits_per_byte_against_a_hand_computation(toks, prefix):
    tok = toks[0]
    model = _llama(tok, 16, 3).eval()
    texts = [r["text"] for r in ROWS[:5]] + ["x = 'ü日本'\n", TEXTS[0] * 4]  # multi-byte, and one cut
    pid = tok.eos_token_id if prefix else None
    with torch.no_grad():
        want, nbytes = _hand_bpb(model, tok, texts, pid)
    got = evaluate_bpb(model, tok, texts, max_length=CONTEXT, prefix_id=pid, batch_size=3)
    assert got["val_bytes"] == nbytes
    assert got["val_bpb"] == pytest.approx(want, rel=1e-5)
    if prefix:  # every byte of an uncut text is scored; the long text was cut at CONTEXT tokens
        whole = evaluate_bpb(model, tok, texts[:-1], max_length=CONTEXT, prefix_id=pid)
        assert whole["val_bytes"] == sum(len(t.encode()) for t in texts[:-1])
        assert nbytes < sum(len(t.encode()) for t in texts)
    assert bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="num_bytes must be an int >= 1"):
        bits_per_byte(1.0, 0)
    with pytest.raises(ValueError, match="texts must be a non-empty list"):
        evaluate_bpb(model, tok, [], max_length=CONTEXT)


def test_lm_distill_with_two_tokenizers_end_to_end(tmp_path):
    out = tmp_path / "cross"
    run = ["--quick", "--out", str(out), "teacher_vocab_size=512", "methods=[ce,uld,span_kl]", "threads=1"]
    assert main(["lm-distill", *run, "steps=4", "teacher_steps=6"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert sorted(summary["runs"]) == ["ce", "span_kl", "uld"]
    assert summary["corpus"]["teacher_vocab_size"] == 512 and summary["corpus"]["vocab_size"] == 384
    teacher = summary["teacher"]
    assert 0 < teacher["val_bpb"] < 16 and teacher["val_bytes"] > 0
    for method, seeds in summary["runs"].items():
        r = seeds["0"]
        assert 0 < r["val_bpb"] < 16 and r["val_bytes"] > 0 and "val_kl" not in r
        if method != "ce":
            assert method in r["curve"][0]
    bytes_seen = {r["0"]["val_bytes"] for r in summary["runs"].values()}
    assert len(bytes_seen) == 1  # every student scores the same validation bytes
    text = (out / "results.md").read_text()
    assert "Paired differences against CE only" in text and "| uld |" in text


def test_lm_distill_cross_config_errors(capsys):
    assert main(["lm-distill", "--quick", "methods=[ce,uld]"]) == 1
    assert "set teacher_vocab_size" in capsys.readouterr().err
    assert main(["lm-distill", "--quick", "teacher_vocab_size=512", "methods=[ce,kd]"]) == 1
    assert "methods from ['ce', 'span_kl', 'uld']" in capsys.readouterr().err
    assert main(["lm-distill", "--quick", "teacher_vocab_size=512", "methods=[uld]", "on_policy=0.5"]) == 1
    assert "sample in one tokenizer" in capsys.readouterr().err


def test_lm_distill_two_saved_models_with_their_own_tokenizers(tmp_path, toks, capsys):
    from pretrained_support import save_llama, write_jsonl

    teacher = save_llama(tmp_path / "teacher", toks[1], hidden=24, layers=1, seed=1, context=CONTEXT)
    student = save_llama(tmp_path / "student", toks[0], hidden=16, layers=1, seed=2, context=CONTEXT)
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in TEXTS[:120]])
    out = tmp_path / "out"
    run = [f"teacher={teacher}", f"student={student}", f"data={data}", "methods=[ce,uld,span_kl]",
           "seeds=[0]", "steps=3", "batch_size=4", "log_steps=1", "threads=1", f"block_size={CONTEXT}",
           "val_percent=20"]
    assert main(["lm-distill", *run, "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    corpus = summary["corpus"]
    assert corpus["teacher_vocab_size"] == len(toks[1]) and corpus["vocab_size"] == len(toks[0])
    assert 0 < summary["teacher"]["val_bpb"] < 16
    assert sorted(summary["runs"]) == ["ce", "span_kl", "uld"]
    assert len({r["0"]["val_bytes"] for r in summary["runs"].values()}) == 1
    capsys.readouterr()
    assert main(["lm-distill", *run, "methods=[ce,kd]", "--out", str(tmp_path / "o2")]) == 1
    assert "For two tokenizers run methods from ['ce', 'span_kl', 'uld']" in capsys.readouterr().err
    assert main(["lm-distill", *run, "methods=[uld,kd]", "--out", str(tmp_path / "o2")]) == 1
    assert "takes methods from ['ce', 'span_kl', 'uld']: ['kd']" in capsys.readouterr().err
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"a{i}", "completion": "b"} for i in range(40)])
    args2 = [a if not a.startswith("data=") else f"data={prompts}" for a in run]
    assert main(["lm-distill", *args2, "--out", str(tmp_path / "o3")]) == 1
    assert "holds prompt/completion records; a cross-tokenizer run cuts plain text" in capsys.readouterr().err
