"""Progress reporting: a tqdm bar on an interactive terminal, plain periodic lines in logs and CI.

Bars redraw with carriage returns, which turn log files and CI consoles into unreadable walls of text, so
when the stream is not a TTY (or the ``CI`` environment variable is set) we print one plain line every
``every`` items or every ``interval`` seconds, whichever comes first, and one at the end. The time trigger
keeps piped output alive when a step is slow (a 46-step epoch would otherwise print nothing until it ends).
``UNIKD_PROGRESS_SECONDS`` sets the default interval (10 s).

This module sits below every other part of unikd (the data layer reports archive decoding with it).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, TypeVar

T = TypeVar("T")

_now = time.monotonic  # one clock for the interval trigger (tests replace it)
DEFAULT_INTERVAL = 10.0


def default_interval() -> float:
    """Seconds between plain lines: ``UNIKD_PROGRESS_SECONDS`` or 10."""
    raw = os.environ.get("UNIKD_PROGRESS_SECONDS", "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"UNIKD_PROGRESS_SECONDS={raw!r} is not a number; set it to the seconds between progress lines"
        ) from None
    if value <= 0:
        raise ValueError(f"UNIKD_PROGRESS_SECONDS must be > 0, got {raw!r}")
    return value


def progress_enabled() -> bool:
    """Whether library-level progress (decoding, evaluation) is shown: when the ``unikd`` logger is at
    INFO, as it is under the ``unikd`` command line; silent by default in other programs."""
    return logging.getLogger("unikd").isEnabledFor(logging.INFO)


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

    def __init__(self, iterable: Iterable[T] | None, *, total: int | None, desc: str, enabled: bool,
                 every: int, file: IO[str] | None, interval: float | None = None) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 step, got {every}")
        self.interval = default_interval() if interval is None else float(interval)
        if self.interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.every = int(every)
        self.file = file if file is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self.n = 0
        self._start = time.perf_counter()
        self._last_line = _now()
        self._closed = False
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

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items (for loops that do not iterate this object)."""
        before = self.n
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if not self.enabled or self.n == self.total:
            return  # the final line comes from close()
        now = _now()
        if self.n // self.every > before // self.every or now - self._last_line >= self.interval:
            self._last_line = now
            print(self._line(), file=self.file, flush=True)

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress has no iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def close(self) -> None:
        """Finish: close the bar, or print the final plain line (once)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.n > 0 and not self._closed:
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


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, every: int = 50, interval: float | None = None,
             file: IO[str] | None = None) -> Progress:
    """Wrap ``iterable`` with progress output; iterate the result like the iterable (or pass no iterable
    and call ``.update(n)``, then ``.close()``).

    Args:
        total: number of items (default ``len(iterable)`` when it has one; None shows a plain count).
        desc: label, e.g. ``"epoch 3/240"``.
        enabled: ``False`` prints nothing (use on non-zero DDP ranks).
        every: plain-line mode prints a line every ``every`` items ...
        interval: ... or when ``interval`` seconds passed since the last line (default
            ``UNIKD_PROGRESS_SECONDS`` or 10), plus one line at the end.
        file: output stream (default ``sys.stderr``).
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return Progress(iterable, total=total, desc=desc, enabled=enabled, every=every, file=file,
                    interval=interval)


__all__ = ["DEFAULT_INTERVAL", "Progress", "default_interval", "progress", "progress_enabled", "use_tqdm"]
