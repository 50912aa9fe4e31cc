"""unikd.lm.generation: seeded sampling of completions (distribution, batch invariance, end tokens)."""

from __future__ import annotations

import pytest
import torch
from lm_support import CONTEXT, VOCAB, llama
from on_policy_support import STOPS

gen = pytest.importorskip("unikd.lm.generation")
from unikd.lm.generation_settings import GenerationSettings  # noqa: E402
from unikd.lm.settings import DistillSettings  # noqa: E402

PROMPTS = [[12, 13, 14], [20, 21, 22, 23, 24, 25], [30], [40, 41, 42, 43], [50, 51], [60, 61, 62, 63, 64]]


def _sample(model, prompts=PROMPTS, seeds=None, eos=None, **kw):
    settings = GenerationSettings(**{"max_new_tokens": 8, **kw})
    seeds = list(range(len(prompts))) if seeds is None else seeds
    return gen.sample_completions(
        model, prompts, seeds, settings, vocab=VOCAB, eos=eos, pad=0, context=CONTEXT
    )


def _frequencies(logits, rows=6000, **kw):
    sampler = gen.SeededSampler(
        [torch.Generator().manual_seed(i) for i in range(rows)],
        GenerationSettings(**kw),
        vocab=logits.numel(),
    )
    out = sampler(torch.zeros(rows, 1, dtype=torch.long), logits.expand(rows, -1).clone())
    assert torch.isfinite(out).sum(-1).eq(1).all()  # one token chosen per row, as a greedy one-hot
    return torch.bincount(out.argmax(-1), minlength=logits.numel()).double() / rows


LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"temperature": 1.0}, torch.softmax(LOGITS.double()[0], -1)),
        ({"temperature": 2.0}, torch.softmax(LOGITS.double()[0] / 2, -1)),
        ({"top_k": 2}, torch.softmax(torch.tensor([2.0, 1.0]).double(), -1)),
        # top_p: the fewest most likely tokens whose mass reaches top_p (p = .56, .21, .13, ...)
        ({"top_p": 0.7}, torch.softmax(LOGITS.double()[0, :2], -1)),
        ({"top_p": 0.8}, torch.softmax(LOGITS.double()[0, :3], -1)),
        ({"temperature": 0.0}, torch.tensor([1.0])),
    ],
)
def test_sampler_draws_from_the_shaped_distribution(kw, expected):
    freq = _frequencies(LOGITS, **kw)
    want = torch.zeros(6, dtype=torch.float64)
    want[: expected.numel()] = expected
    assert freq[expected.numel() :].sum() == 0  # cut tokens never drawn
    torch.testing.assert_close(freq, want, atol=0.02, rtol=0)


def test_sampler_never_draws_padded_head_rows():
    sampler = gen.SeededSampler(
        [torch.Generator().manual_seed(i) for i in range(500)], GenerationSettings(), vocab=3
    )
    out = sampler(
        torch.zeros(500, 1, dtype=torch.long), torch.tensor([[0.0, 0.0, 0.0, 9.0, 9.0]]).expand(500, -1)
    )
    assert out.argmax(-1).max() <= 2


def test_completions_do_not_depend_on_the_batch_or_its_left_padding():
    """Rows sampled together (left-padded to the longest prompt) equal rows sampled one at a time."""
    model = llama(seed=2)
    together = _sample(model)
    alone = [_sample(model, [p], [s])[0] for s, p in enumerate(PROMPTS)]
    assert together == alone
    assert len({tuple(c) for c in together}) == len(PROMPTS)


def test_seeded_not_global_random_state():
    model = llama(seed=2)
    torch.manual_seed(1)
    first = _sample(model)
    torch.manual_seed(2)
    assert _sample(model) == first
    other = _sample(model, seeds=[s + 100 for s in range(len(PROMPTS))])
    assert all(a != b for a, b in zip(other, first))


def test_end_token_cuts_the_completion_and_is_kept():
    model = llama(seed=2)
    prompts, seeds = PROMPTS * 3, list(range(3 * len(PROMPTS)))
    free = _sample(model, prompts, seeds)
    ended = _sample(model, prompts, seeds, eos=STOPS)
    lengths = set()
    for f, e in zip(free, ended):
        first = next((j for j, t in enumerate(f) if t in STOPS), len(f) - 1)
        assert e == f[: first + 1]
        lengths.add(len(e))
    assert len(lengths) > 1 and 8 in lengths  # some stopped early, some ran to max_new_tokens


def test_generation_in_eval_mode_without_grad_and_mode_restored():
    model = llama(seed=2)
    model.config.attention_dropout = 0.0
    modes = []
    handle = model.register_forward_pre_hook(lambda m, a: modes.append((m.training, torch.is_grad_enabled())))
    model.train()
    _sample(model)
    handle.remove()
    assert modes and set(modes) == {(False, False)}
    assert model.training


def test_context_bounds_the_new_tokens():
    model = llama(seed=2)
    long = [list(range(11, 11 + CONTEXT - 3))]
    assert len(_sample(model, long, [0], max_new_tokens=8)[0]) == 3
    with pytest.raises(ValueError, match="no room to generate"):
        _sample(model, [list(range(11, 11 + CONTEXT))], [0])
    with pytest.raises(ValueError, match="prompt is empty"):
        _sample(model, [[]], [0])


def test_pack_masks_prompt_and_padding():
    batch = gen.pack([[5, 6], [7]], [[8, 9, 1], [10]], pad=0)
    assert batch["input_ids"].tolist() == [[5, 6, 8, 9, 1], [7, 10, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 8, 9, 1], [-100, 10, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]


def test_row_seed_and_uniform_are_fixed_functions():
    assert gen.row_seed(0, 3, 5, "student") == gen.row_seed(0, 3, 5, "student")
    assert len({gen.row_seed(0, s, i, "student") for s in range(20) for i in range(20)}) == 400
    u = [gen.uniform(0, s, 0, "mode") for s in range(2000)]
    assert all(0 <= x < 1 for x in u) and abs(sum(u) / len(u) - 0.5) < 0.03


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"on_policy": 0.7, "seq_kd": 0.5}, "on_policy \\+ seq_kd"),
        ({"on_policy": -0.1}, "on_policy is a fraction"),
        ({"seq_kd": True}, "seq_kd is a fraction"),
        ({"generation": {"max_tokens": 3}}, "unknown generation settings \\['max_tokens'\\]"),
        ({"generation": {"temperature": -1}}, "temperature must be >= 0"),
        ({"generation": {"top_p": 0}}, "top_p must be in"),
        ({"generation": {"max_new_tokens": 0}}, "max_new_tokens must be >= 1"),
        ({"generation": {"prompt_length": 0}}, "prompt_length must be"),
    ],
)
def test_bad_settings_name_the_problem(kw, match):
    with pytest.raises(ValueError, match=match):
        DistillSettings("reverse_kl", **kw)


def test_settings_accept_a_mapping():
    d = DistillSettings("reverse_kl", on_policy=1, generation={"max_new_tokens": 4, "top_p": 0.9})
    assert (
        d.generates and d.on_policy == 1.0 and d.generation == GenerationSettings(max_new_tokens=4, top_p=0.9)
    )
    assert not DistillSettings("kd").generates
