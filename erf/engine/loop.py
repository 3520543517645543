"""The sampling loop over this rank's plan: weight redraws, batches, the adaptive stop, saves, resume.

The loop is given its plan (``plan_shares``, this rank's share of whole batches), a source
factory (one per weight draw) and its saves (``erf.engine.resume``): sharding and resuming
are strategies it runs, not branches inside it.

Nothing in a batch's path reads a value back to the host (on CUDA the loop never waits for the
device): the finite check is read at a save and at the end, and a batch that held NaN/Inf is
then measured again to say where they start.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Protocol

import torch

from erf import distributed
from erf.engine.accumulate import Accumulator
from erf.engine.context import Context
from erf.engine.inputs import Source
from erf.engine.probe import Probe
from erf.engine.resume import NoSaves
from erf.errors import ErfError

__all__ = ["Loop", "plan_shares", "progress_bar"]

Plan = list[tuple[int, int, int]]


class Bar(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


class Loop:
    """Measures every planned ``(draw, first, stop)`` range into an accumulator."""

    def __init__(self, ctx: Context, acc: Accumulator, probe: Probe, plan: Plan, new_source: Callable[[], Source],
                 saves: NoSaves, locate: Callable[[torch.Tensor], None] | None = None):
        """
        Args:
            ctx: the measurement (options, weight redraws, notes).
            acc: where the maps are summed.
            probe: one batch's maps.
            plan: this rank's ``(draw, first, stop)`` ranges (``plan_shares``).
            new_source: a fresh input source, called once per draw.
            saves: ``StateFile`` or ``NoSaves``.
            locate: raises naming where a batch's NaN/Inf start (``Probe.locate``), for the deferred check.
        """
        self.ctx, self.acc, self.probe, self.plan = ctx, acc, probe, plan
        self.new_source, self.saves, self.locate = new_source, saves, locate
        self.limit, self.samples, self.tol, self.seed = ctx.opts.per_draw, ctx.opts.samples, ctx.opts.tol, ctx.opts.seed
        self.notes = ctx.notes

    def run(self, bs: int, bar: Bar) -> int:
        """Measure every planned sample (from the last save when one matches); return the final batch size."""
        start, done = 0, None
        saved = self.saves.load()
        if saved is not None:
            self.acc.restore(*saved)
            start, done, bs = saved[1]["step"], saved[1]["done"], saved[1]["batch_size"]
            self.notes[:] = saved[1]["notes"]
        bar.update(self.acc.n)
        drawn = 0  # the weights hold draw 0 on entry
        for step in range(start, len(self.plan)):
            d, lo, hi = self.plan[step]
            if self.ctx.opts.redraws and d != drawn:
                self.ctx.redraw(d)
                drawn = d
            bs, done = self._draw(step, d, lo if done is None else done, hi, bs, bar)
            if done < min(hi, self.samples):
                self.notes.append(f"inputs ran out after {done} samples in draw {d}")
            done = None
        self.check_finite()
        return bs

    def check_finite(self) -> None:
        """Raise when a measured batch held NaN/Inf, naming where they start (that batch measured again).

        Raises:
            ErfError: a non-finite map was added.
        """
        bad = self.acc.first_nonfinite()
        if bad is None:
            return
        first, b = bad
        d, done = divmod(first, self.limit)
        if self.ctx.opts.redraws:
            self.ctx.redraw(d)
        x = self.new_source()(self.seed, d, done, b)
        if x is not None and self.locate is not None:
            self.locate(x)  # raises, naming the layer
        raise ErfError(f"the input gradient contains NaN or Inf (samples {first}..{first + b - 1}); check the "
                       "model's weights and inputs, or try dtype='float64'")

    def _draw(self, step: int, d: int, done: int, hi: int, bs: int, bar: Bar) -> tuple[int, int]:
        source, acc = self.new_source(), self.acc
        while done < hi:
            x = source(self.seed, d, done, min(bs, hi - done))
            if x is None:
                break
            bs = acc.run(self.probe, x, d * self.limit + done, bs)
            done += x.shape[0]
            bar.update(x.shape[0])
            if self.tol and done >= self.samples and acc.relative_se() < self.tol:
                break
            if self.saves.due(time.perf_counter()):
                self.check_finite()  # never save a non-finite sum
                self.saves.save(acc, dict(step=step, done=done, batch_size=bs, notes=self.notes), time.perf_counter())
        return bs, done


def plan_shares(draws: int, limit: int, batch: int,
                share: Callable[[int], tuple[int, int]] | None = None) -> Plan:
    """This rank's work: ``(draw, first, stop)`` sample ranges, a contiguous share of all batches.

    Shares are whole batches of the single-process run, so every sample is measured in the same
    batch as it would be by one process (float32 kernels can round a sample differently in
    another batch); only the float64 sums over ranks add in another order.

    Args:
        draws: weight draws; ``limit``: sample indices per draw; ``batch``: samples per pass.
        share: ``n -> (lo, hi)``, this rank's share of ``n`` batches (default ``erf.distributed.share``).

    Returns:
        The ranges, in order.
    """
    per_draw = math.ceil(limit / batch)
    lo, hi = (share or distributed.share)(draws * per_draw)
    plan = []
    for d in range(lo // per_draw, math.ceil(hi / per_draw)):
        a, b = max(lo, d * per_draw) - d * per_draw, min(hi, (d + 1) * per_draw) - d * per_draw
        if a < b:
            plan.append((d, a * batch, min(limit, b * batch)))
    return plan


def progress_bar(progress: bool, total: int) -> Bar:
    """A tqdm bar on stderr when ``progress``, else one that shows nothing."""
    if progress:
        from tqdm import tqdm  # lazy: tqdm is only needed when a bar is shown

        return tqdm(total=total, unit="img", file=sys.stderr, leave=False)
    return _NoBar()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass
