"""Vocabulary checks, and the layering rule: unikd.token imports no engine, bench or cli module."""

import ast
from pathlib import Path

import pytest

import unikd
import unikd.token as T


def test_resolve_vocab():
    assert T.resolve_vocab(10, 10, None) == 10
    assert T.resolve_vocab(12, 10, 9) == 9
    with pytest.raises(ValueError, match="the student has V=12 entries but the teacher has V=10"):
        T.resolve_vocab(12, 10, None)
    with pytest.raises(ValueError, match="use at most 10"):
        T.resolve_vocab(12, 10, 11)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2"):
        T.resolve_vocab(12, 10, 1)


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def test_check_same_tokenizer():
    a = {"<s>": 0, "a": 1, "b": 2}
    T.check_same_tokenizer(_Tok(a), dict(a))
    with pytest.raises(ValueError, match=r"differ in 2 token\(s\).*'b': student id 2, teacher id 3"):
        T.check_same_tokenizer(a, {"<s>": 0, "a": 1, "c": 2, "b": 3})
    # Added tokens beyond the shared vocabulary are allowed when it is given.
    T.check_same_tokenizer(a, {**a, "<extra>": 3}, vocab_size=3)
    with pytest.raises(ValueError, match="token -> id mapping"):
        T.check_same_tokenizer([1, 2], a)


def test_token_is_a_namespace_not_flattened_into_unikd():
    assert unikd.token is T
    assert unikd.kd_loss is not T.kd_loss  # the top-level kd_loss stays the classification loss
    for name in T.__all__:
        assert hasattr(T, name), name


def test_token_imports_no_engine_bench_or_cli():
    root = Path(T.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("unikd.engine", "unikd.bench", "unikd.cli")), (path.name, name)
