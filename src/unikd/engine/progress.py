"""Progress reporting: a tqdm bar on an interactive terminal, plain periodic lines in logs and CI.

Bars redraw with carriage returns, which turn log files and CI consoles into unreadable walls of text, so
when the stream is not a TTY (or the ``CI`` environment variable is set) we print one plain line every
``every`` steps and at the end instead.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, TypeVar

T = TypeVar("T")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def use_tqdm(stream: IO[str]) -> bool:
    """True when a tqdm bar is appropriate: ``stream`` is a TTY and we are not under CI."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams (pytest capture, notebooks)
        return False


class Progress:
    """Iterable wrapper returned by :func:`progress`; see there."""

    def __init__(self, iterable: Iterable[T], *, total: int | None, desc: str, enabled: bool, every: int,
                 file: IO[str] | None) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 step, got {every}")
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.every = int(every)
        self.file = file if file is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self.n = 0
        self._start = time.perf_counter()
        self._bar = None
        if enabled and use_tqdm(self.file):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, file=self.file, dynamic_ncols=True, leave=False)

    def set_postfix(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Show these values (e.g. loss terms, images/s) next to the bar / at the end of plain lines."""
        self.postfix = {**(dict(values) if values else {}), **kwargs}
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        of = f"/{self.total}" if self.total is not None else ""
        rate = self.n / elapsed if elapsed > 0 else 0.0
        extra = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
        return f"{self.desc} {self.n}{of} [{elapsed:.1f}s, {rate:.2f} it/s] {extra}".rstrip()

    def write(self, msg: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg, file=self.file)
        else:
            print(msg, file=self.file, flush=True)

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.n += 1
                if self._bar is not None:
                    self._bar.update(1)
                elif self.enabled and (self.n % self.every == 0 and self.n != self.total):
                    print(self._line(), file=self.file, flush=True)
        finally:
            self.close()

    def close(self) -> None:
        """Finish: close the bar, or print the final plain line (once)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.n > 0 and not getattr(self, "_closed", False):
            print(self._line(), file=self.file, flush=True)
        self._closed = True

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("progress has no total")
        return self.total

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool = True,
             every: int = 50, file: IO[str] | None = None) -> Progress:
    """Wrap ``iterable`` with progress output; iterate the result like the iterable.

    Args:
        total: number of items (default ``len(iterable)`` when it has one).
        desc: label, e.g. ``"epoch 3/240"``.
        enabled: ``False`` prints nothing (use on non-zero DDP ranks).
        every: plain-line mode prints one line every ``every`` items, plus one at the end.
        file: output stream (default ``sys.stderr``).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return Progress(iterable, total=total, desc=desc, enabled=enabled, every=every, file=file)
