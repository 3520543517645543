"""Progress on stderr: a tqdm bar on a terminal, a periodic one-line report in logs, or nothing.

``progress_bar(total, desc)`` is what every loop asks for (the engine's samples, training
steps). While a run-level bar is open (``run_progress``), every such bar forwards its counts to
it instead of drawing its own, so ``erf run`` shows ONE bar over all samples and training steps
of the run; ``Progress.part(size)`` bounds what one sweep point may add, so an estimate that
is off (an adaptive stop, a resumed point) never pushes the bar past the point's share.

When stderr is not a terminal (a log file on a GPU box) the bar prints one line such as
``erf: small: 120/480 samples+steps (25%), 31 s, about 93 s left`` every ``EVERY_S`` seconds
and at each tenth of the total (none in its first ``FIRST_S`` seconds), and a last line when it
closes (none when the run stops with an error: the error is the one line then).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["Progress", "progress_bar", "run_progress", "EVERY_S", "FIRST_S"]

EVERY_S = 30.0  # seconds between two lines when stderr is not a terminal
FIRST_S = 5.0  # no line before a run has taken this long (a short run prints its last line only)

_OPEN: list[Progress] = []  # the run-level bars open now, innermost last


class Progress:
    """A progress bar over ``total`` units: ``mode`` "bar" (tqdm), "lines" (periodic lines) or "off"."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", mode: str = "lines",
                 stream: TextIO | None = None, every: float = EVERY_S, leave: bool = True, first: float = FIRST_S):
        """
        Args:
            total: the units expected (an estimate; the count never shows past it).
            desc: the label.
            unit: what one unit is ("sample", "step").
            mode: "bar", "lines" or "off".
            stream: where it writes (default: stderr at the time of writing).
            every: seconds between lines in "lines" mode.
            leave: keep a tqdm bar on screen once closed.
            first: no line (but the last) before this many seconds.
        """
        self.total, self.desc, self.unit, self.mode = max(0, int(total)), desc, unit, mode
        self.stream, self.every, self.first, self.n = stream, float(every), float(first), 0
        self.postfix = ""
        self._t0 = self._last = time.monotonic()
        self._tenth = 0
        self._part: tuple[int, int] | None = None  # (start, size) of the open part
        self._tqdm: Any = None
        if mode == "bar":
            from tqdm import tqdm  # lazy: tqdm is only needed when a bar is drawn on a terminal

            self._tqdm = tqdm(total=self.total, desc=desc or None, unit=unit, file=self._out(), leave=leave,
                              dynamic_ncols=True)

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def update(self, n: int = 1) -> None:
        """Add ``n`` units (clipped to the open part, then to the total)."""
        target = self.n + int(n)
        if self._part is not None:
            target = min(target, sum(self._part))
        self._move(min(target, self.total) if self.total else target)

    def set_postfix(self, **values: Any) -> None:
        """Extra text after the count (e.g. ``loss=0.12``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(self.postfix, refresh=False)

    @contextlib.contextmanager
    def part(self, size: int) -> Iterator[None]:
        """A share of ``size`` units (one sweep point): updates inside never pass it; on exit the count is at its end.

        Args:
            size: the units the part is expected to take.
        """
        start = self.n
        self._part = (start, int(size))
        try:
            yield
        finally:
            self._part = None
        self._move(max(self.n, min(start + int(size), self.total)))

    def _move(self, n: int) -> None:
        if n <= self.n:
            return
        step, self.n = n - self.n, n
        if self._tqdm is not None:
            self._tqdm.update(step)
        elif self.mode == "lines":
            now = time.monotonic()
            tenth = 10 * self.n // self.total if self.total else 0
            due = (now - self._last >= self.every or tenth > self._tenth) and now - self._t0 >= self.first
            if due and not (self.total and self.n >= self.total):  # the closing line says 100%
                self._tenth, self._last = tenth, now
                self._line()

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self._t0
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        pct = f" ({100 * self.n // self.total}%)" if self.total else ""
        if final:
            rest = f", done in {_secs(elapsed)}"
        elif self.total and self.n:
            rest = f", {_secs(elapsed)}, about {_secs(elapsed * (self.total - self.n) / self.n)} left"
        else:
            rest = f", {_secs(elapsed)}"
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"erf: {self.desc + ': ' if self.desc else ''}{count}{pct}{rest}{extra}", file=self._out(), flush=True)

    def close(self) -> None:
        """Finish: close the tqdm bar, or print the last line."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self.mode == "lines" and self.n:
            self._line(final=self.n >= self.total)
            self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and self._tqdm is None:  # an error is the one line that follows: no "done"
            self.mode = "off"
        self.close()


class _Forward(Progress):
    """A loop's bar while a run-level bar is open: its counts go to that bar; it draws nothing."""

    def __init__(self, outer: Progress, total: int):
        super().__init__(total, mode="off")
        self.outer = outer

    def update(self, n: int = 1) -> None:
        self.outer.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Nothing: the run's bar shows counts only."""


def _secs(s: float) -> str:
    s = int(round(s))
    if s < 120:
        return f"{s} s"
    return f"{s // 60} min {s % 60:02d} s" if s < 7200 else f"{s // 3600} h {s // 60 % 60:02d} min"


def _mode(enabled: bool | None, stream: TextIO | None = None) -> str:
    """'bar' on a terminal, 'lines' elsewhere, 'off' when not ``enabled`` (None: on)."""
    if enabled is False:
        return "off"
    out = stream if stream is not None else sys.stderr
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bar" if tty else "lines"


def progress_bar(total: int, desc: str = "", unit: str = "it", enabled: bool = False,
                 leave: bool = False) -> Progress:
    """The bar of one loop: forwards to the open run-level bar if any, else its own when ``enabled``.

    Args:
        total: the units this loop expects.
        desc: its label (its own bar only).
        unit: what one unit is.
        enabled: draw a bar of its own when no run-level bar is open (tqdm on a terminal, lines elsewhere).
        leave: keep its own tqdm bar on screen when done.

    Returns:
        A ``Progress`` (use ``update``, ``set_postfix``, ``close``).
    """
    if _OPEN:
        return _Forward(_OPEN[-1], total)
    return Progress(total, desc, unit, _mode(enabled), leave=leave)


@contextlib.contextmanager
def run_progress(total: int, desc: str = "", unit: str = "it", enabled: bool | None = None) -> Iterator[Progress]:
    """One bar over a whole run: every ``progress_bar`` opened inside forwards to it.

    Args:
        total: the units of the whole run (samples + training steps).
        desc: the label (the experiment's name).
        unit: what one unit is.
        enabled: None: a tqdm bar on a terminal, periodic lines otherwise; False: nothing shown (loops'
            own bars stay silent too); True: as None.

    Yields:
        The bar (``part`` bounds each point's share).
    """
    bar = Progress(total, desc, unit, _mode(enabled))
    _OPEN.append(bar)
    try:
        yield bar
    except BaseException:
        if bar.mode == "lines":
            bar.mode = "off"  # the error is what the log shows last, not a closing line
        raise
    finally:
        _OPEN.remove(bar)
        bar.close()
