"""Exact receptive-field arithmetic along one spatial axis.

An ``AxisMap`` says which input pixels each output index of a tensor depends on,
for every integer index (positions past the border are the virtual positions that
padding creates, so boxes are *unclipped*, as in the classic calculators).

Every op we know maps indices by a floor of a rational affine function, so the
dependency is periodic: with period ``q`` output indices and shift ``J`` input
pixels, index ``i = m*q + t`` (``0 <= t < q``) sees input pixels
``[lo[t] + m*J, hi[t] + m*J]``. A shift-invariant map has ``q == 1`` and jump
``J``; after a transposed conv or an upsampling, ``q > 1`` and the RF may depend on
the position (``lo``/``hi`` differ in size across phases). ``J == 0`` means every
index sees the same pixels (a global op). An empty entry (``None``) is an index
that sees no input at all (a transposed conv whose kernel is smaller than its
stride). Conventions follow Araujo et al. (Distill 2019): pixel centres at
integers, boxes inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from typing import Iterable, Sequence

Box = tuple[int, int] | None


def _lcm(a: int, b: int) -> int:
    return a * b // gcd(a, b)


@dataclass(frozen=True)
class AxisMap:
    """Periodic map from output index to an inclusive input box (see module doc)."""

    period: int
    shift: int
    lo: tuple[int | None, ...]
    hi: tuple[int | None, ...]

    # ---- construction -------------------------------------------------
    @staticmethod
    def identity() -> "AxisMap":
        """The input tensor itself: index i sees pixel i."""
        return AxisMap(1, 1, (0,), (0,))

    @staticmethod
    def constant(lo: int, hi: int) -> "AxisMap":
        """Every index sees the same box ``[lo, hi]`` (global ops, broadcast axes)."""
        return AxisMap(1, 0, (lo,), (hi,))

    @staticmethod
    def build(period: int, shift: int, lo: Sequence, hi: Sequence) -> "AxisMap":
        """Make a map and reduce it to its smallest period."""
        return AxisMap(period, shift, tuple(lo), tuple(hi)).reduced()

    def reduced(self) -> "AxisMap":
        """The same map with the smallest period that describes it."""
        q = self.period
        for p in range(1, q):
            if q % p:
                continue
            reps = q // p
            if self.shift % reps:
                continue
            step = self.shift // reps
            ok = True
            for t in range(p, q):
                a, b = self.lo[t], self.lo[t - p]
                c, d = self.hi[t], self.hi[t - p]
                if (a is None) != (b is None) or (a is not None and (a != b + step or c != d + step)):
                    ok = False
                    break
            if ok:
                return AxisMap(p, step, self.lo[:p], self.hi[:p])
        return self

    # ---- queries ------------------------------------------------------
    def box(self, i: int) -> Box:
        """Unclipped inclusive input box of index ``i`` (any integer), or None."""
        m, t = divmod(i, self.period)
        lo = self.lo[t]
        if lo is None:
            return None
        return lo + m * self.shift, self.hi[t] + m * self.shift

    def lo_at(self, i: int) -> int | None:
        b = self.box(i)
        return None if b is None else b[0]

    def hi_at(self, i: int) -> int | None:
        b = self.box(i)
        return None if b is None else b[1]

    @property
    def jump(self) -> Fraction:
        """Effective stride: input pixels per output index."""
        return Fraction(self.shift, self.period)

    @property
    def shift_invariant(self) -> bool:
        return self.period == 1

    def sizes(self, n: int) -> list[int]:
        """RF sizes of the phases present in an axis of length ``n`` (0 for empty)."""
        out = []
        for t in range(min(self.period, max(n, 1))):
            b = self.box(t)
            out.append(0 if b is None else b[1] - b[0] + 1)
        return out

    def expanded(self, period: int) -> "AxisMap":
        """The same map written with a longer period (a multiple of the current one)."""
        assert period % self.period == 0
        reps = period // self.period
        lo = [self.lo_at(t) for t in range(period)]
        hi = [self.hi_at(t) for t in range(period)]
        return AxisMap(period, self.shift * reps, tuple(lo), tuple(hi))

    # ---- composition --------------------------------------------------
    def gather(self, period: int, taps: Iterable[Iterable[int]], shift_in: int) -> "AxisMap":
        """Output map whose phase ``t`` sees the union of input indices ``taps[t]``.

        ``period`` output indices later, every tap has moved by ``shift_in`` input
        indices; ``shift_in`` must be a multiple of this map's period.
        """
        assert shift_in % self.period == 0, (shift_in, self.period)
        shift = self.shift * (shift_in // self.period)
        lo, hi = [], []
        for tap in taps:
            boxes = [b for b in (self.box(i) for i in tap) if b is not None]
            if boxes:
                lo.append(min(b[0] for b in boxes))
                hi.append(max(b[1] for b in boxes))
            else:
                lo.append(None)
                hi.append(None)
        return AxisMap.build(period, shift, lo, hi)

    def globalised(self, n: int) -> "AxisMap":
        """Every index sees the union of what indices ``0 .. n-1`` saw."""
        boxes = [b for b in (self.box(i) for i in range(min(n, self.period) if self.shift == 0 else n)) if b]
        if not boxes:
            return AxisMap(1, 0, (None,), (None,))
        return AxisMap.constant(min(b[0] for b in boxes), max(b[1] for b in boxes))


def window(map_in: AxisMap, kernel: int, stride: int, dilation: int, pad_left: int) -> AxisMap:
    """Sliding window (conv, pooling): output o sees inputs ``o*s - p + t*d``."""
    q_out = map_in.period // gcd(map_in.period, stride)
    taps = [[o * stride - pad_left + t * dilation for t in range(kernel)] for o in range(q_out)]
    return map_in.gather(q_out, taps, q_out * stride)


def transposed_window(map_in: AxisMap, kernel: int, stride: int, dilation: int, pad_left: int) -> AxisMap:
    """Transposed conv: input i feeds outputs ``i*s - p + t*d``."""
    q_out = map_in.period * stride
    taps = []
    for o in range(q_out):
        taps.append([(o + pad_left - t * dilation) // stride for t in range(kernel)
                     if (o + pad_left - t * dilation) % stride == 0])
    return map_in.gather(q_out, taps, map_in.period)


def rational_index(map_in: AxisMap, num: int, den: int, taps_of) -> AxisMap:
    """Resampling where output ``o`` reads input indices ``taps_of(o)``.

    ``taps_of`` must satisfy ``taps_of(o + den) == [i + num for i in taps_of(o)]``
    (an input/output size ratio ``num/den`` in lowest terms).
    """
    g = gcd(num, map_in.period)
    reps = map_in.period // g  # how many ``den`` blocks until the input moves by a multiple of the period
    q_out = den * reps
    taps = [list(taps_of(o)) for o in range(q_out)]
    return map_in.gather(q_out, taps, num * reps)


def finite(lo: Sequence[int], hi: Sequence[int]) -> AxisMap:
    """A map known on ``n`` real positions only (not periodic over all integers).

    Positions past either end continue the boxes at the average slope, as padding
    would (exact on the real positions, a close convention beyond them).
    """
    n = len(lo)
    shift = round((lo[-1] - lo[0]) * n / (n - 1)) if n > 1 else 0
    return AxisMap.build(n, shift, lo, hi)


def union(maps: Sequence[AxisMap]) -> AxisMap:
    """Element-wise union of maps (same tensor positions, several inputs)."""
    period = 1
    for m in maps:
        period = _lcm(period, m.period)
    shifts = {m.shift * (period // m.period) for m in maps if m.shift != 0}
    shift = shifts.pop() if len(shifts) == 1 else 0
    lo, hi = [], []
    for t in range(period):
        boxes = [b for b in (m.box(t) for m in maps) if b is not None]
        lo.append(min(b[0] for b in boxes) if boxes else None)
        hi.append(max(b[1] for b in boxes) if boxes else None)
    if len(shifts) > 0:  # more than one distinct non-zero shift: not periodic; caller checks alignment first
        raise ValueError("union of maps with different jumps")
    return AxisMap.build(period, shift, lo, hi)


def misalignment(a: AxisMap, b: AxisMap) -> str | None:
    """Why two paths into one node disagree (jump or centre), or None if aligned."""
    if a.shift == 0 or b.shift == 0:
        return None  # a broadcast/global input adds to every position alike
    if a.jump != b.jump:
        return f"jump {_fmt(a.jump)} vs {_fmt(b.jump)}"
    period = _lcm(a.period, b.period)
    for t in range(period):
        x, y = a.box(t), b.box(t)
        if x is None or y is None:
            continue
        if x[0] + x[1] != y[0] + y[1]:
            return f"centre of unit {t}: {_fmt(Fraction(x[0] + x[1], 2))} vs {_fmt(Fraction(y[0] + y[1], 2))} px"
    return None


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"
