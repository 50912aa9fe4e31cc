"""progress(): plain periodic lines off a TTY / under CI, tqdm on a TTY, silence when disabled."""

import io

import pytest

from unikd._progress import progress, use_tqdm


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


def test_plain_lines_every_interval_seconds(monkeypatch):
    # A slow loop prints a line whenever `interval` seconds passed, even before `every` items.
    import unikd._progress as prog

    monkeypatch.delenv("CI", raising=False)
    clock = [0.0]
    monkeypatch.setattr(prog, "_now", lambda: clock[0])
    out = io.StringIO()
    bar = progress(range(6), desc="slow", every=1000, interval=10.0, file=out)
    for i in bar:
        clock[0] += 4.0 if i < 5 else 0.0  # lines after 12 s (item 3) and 24 s (item 6 = the end)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["3/6", "6/6"]


def test_manual_update_without_iterable(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    bar = progress(desc="reading", every=2, file=out)
    for _ in range(5):
        bar.update()
    bar.close()
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["2", "4", "5"]  # no total known
    with pytest.raises(TypeError, match="update"):
        list(progress(desc="x"))


def test_interval_from_environment(monkeypatch):
    from unikd._progress import default_interval

    monkeypatch.setenv("UNIKD_PROGRESS_SECONDS", "2.5")
    assert default_interval() == 2.5
    monkeypatch.setenv("UNIKD_PROGRESS_SECONDS", "soon")
    with pytest.raises(ValueError, match="UNIKD_PROGRESS_SECONDS"):
        default_interval()
    monkeypatch.delenv("UNIKD_PROGRESS_SECONDS")
    assert default_interval() == 10.0
