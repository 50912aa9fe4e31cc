"""progress(): plain periodic lines off a TTY / under CI, tqdm on a TTY, silence when disabled."""

import io

import pytest

from unikd.engine.progress import progress, use_tqdm


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_tty(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    bar = progress(range(10), desc="epoch 1/2", every=4, file=out)
    seen = []
    for i in bar:
        seen.append(i)
        bar.set_postfix({"loss": 1.23456, "img/s": 100})
    assert seen == list(range(10)) and len(bar) == 10
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["4/10", "8/10", "10/10"]
    assert all(line.startswith("epoch 1/2 ") for line in lines)
    assert lines[-1].endswith("loss=1.235 img/s=100")
    assert "\r" not in out.getvalue()


def test_ci_env_forces_plain_lines(monkeypatch):
    tty = FakeTTY()
    monkeypatch.setenv("CI", "true")
    assert not use_tqdm(tty)
    monkeypatch.setenv("CI", "0")
    assert use_tqdm(tty)


def test_tqdm_on_a_tty(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    tty = FakeTTY()
    bar = progress(iter(range(5)), total=5, desc="train", file=tty)
    for _ in bar:
        bar.set_postfix(loss=0.5)
    text = tty.getvalue()
    assert "\r" in text and "train" in text  # a redrawn bar, not plain lines


def test_disabled_prints_nothing(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    for f in (io.StringIO(), FakeTTY()):
        bar = progress(range(120), desc="x", enabled=False, every=1, file=f)
        assert sum(bar) == sum(range(120))
        bar.write("hello")
        assert f.getvalue() == ""


def test_write_and_early_break(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    bar = progress(range(100), desc="e", every=1000, file=out)
    for i in bar:
        if i == 2:
            break
    bar.close()  # idempotent: the final line is printed once
    bar.write("done")
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0], "done"]
    assert " 2/100 " in out.getvalue().splitlines()[0]


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        progress(range(3), every=0)
