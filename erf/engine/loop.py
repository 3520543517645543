"""The sampling loop over this rank's plan: weight redraws, batches, the adaptive stop, saves, resume.

The loop is given its plan (``plan_shares``, this rank's share of whole batches), a source
factory (one per weight draw) and its saves (``erf.engine.resume``): sharding and resuming
are strategies it runs, not branches inside it.

Nothing in a batch's path reads a value back to the host (on CUDA the loop never waits for the
device): the finite check is read at a save and at the end, and a batch that held NaN/Inf is
then measured again to say where they start.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn

from erf import distributed
from erf.engine.accumulate import Accumulator, OutOfMemory
from erf.engine.context import Context
from erf.engine.inputs import Source
from erf.engine.probe import Probe
from erf.engine.resume import NoSaves, restore_sample_stats, sample_stats_state
from erf.errors import ErfError
from erf.progress import progress_bar as new_progress_bar

__all__ = ["Loop", "plan_shares", "progress_bar", "fit_batch", "channels_last_model", "MAX_AUTO_BATCH"]

MAX_AUTO_BATCH = 4096  # the largest batch ``fit_batch`` tries

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
        saved = self.saves.load(self.plan, tuple(self.acc.total.shape))
        if saved is not None:
            self.acc.restore(*saved)
            restore_sample_stats(self.probe, saved[1])  # the diagnostics count the samples before the save too
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
                self.saves.save(acc, dict(step=step, done=done, batch_size=bs, notes=self.notes,
                                          **sample_stats_state(self.probe)), time.perf_counter())
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
    """This measurement's bar (``erf.progress.progress_bar``).

    Its counts go to the run's bar when one is open (``erf run``); else, when ``progress``, a tqdm
    bar on a terminal or a line every 30 s in logs; else nothing.
    """
    return new_progress_bar(total, desc="measure", unit="img", enabled=progress)


def fit_batch(maps: Callable[[torch.Tensor], Any], make: Callable[[int], torch.Tensor | None], start: int,
              empty_cache: Callable[[], None] = torch.cuda.empty_cache) -> int:
    """The largest batch from ``start`` down (halving) whose pass does not run out of memory; found once.

    Args:
        maps: one pass (``Probe.maps``); its result is dropped.
        make: ``b -> a batch of b samples`` (the measurement's own inputs), None when there are none.
        start: the first size tried.
        empty_cache: frees the cached blocks after an out-of-memory (CUDA's allocator by default).

    Returns:
        The batch size (at least 1; a batch of one that does not fit raises in the loop as before).
    """
    b = max(1, int(start))
    while b > 1:
        x = make(b)
        if x is None:
            return b
        try:
            maps(x)
            return b
        except OutOfMemory:
            del x
            empty_cache()
            b //= 2
    return 1


def channels_last_model(work: nn.Module, caller: nn.Module) -> nn.Module:
    """``work`` with its 4-d weights in ``channels_last`` (a copy when ``work`` is the caller's own model).

    cuDNN then runs every conv in NHWC, the layout its tensor-core kernels use; the input follows the
    weights' layout in the first conv.

    Args:
        work: the working model; ``caller``: the model the caller passed (never modified).

    Returns:
        The converted working model.
    """
    if work is caller:
        work = copy.deepcopy(work)
    return work.to(memory_format=torch.channels_last)
