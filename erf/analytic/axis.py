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

A map may also carry a ``floor``: one box that every index sees on top of its
periodic box. It is what a gate adds (squeeze-excitation, a global normalisation,
attention over all tokens): the unit sees its spatial path *and* the whole map
through a global statistic. Unions commute with windows, so the floor passes
through every later op unchanged, and the periodic part never grows because of
it. The periodic part alone is the *local* map (``local``): the TRF of the spatial
path without the gates.
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
    floor: tuple[int, int] | None = None  # a box every index sees too (gates, global statistics)

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
    def build(period: int, shift: int, lo: Sequence, hi: Sequence,
              floor: tuple[int, int] | None = None) -> "AxisMap":
        """Make a map and reduce it to its smallest period."""
        return AxisMap(period, shift, tuple(lo), tuple(hi), floor).reduced()

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
                return AxisMap(p, step, self.lo[:p], self.hi[:p], self.floor)
        return self

    @property
    def local(self) -> "AxisMap":
        """The periodic part alone: the map of the spatial path without gates."""
        return self if self.floor is None else AxisMap(self.period, self.shift, self.lo, self.hi)

    def with_floor(self, box: Box) -> "AxisMap":
        """This map with ``box`` added to its floor (every index sees it too)."""
        if box is None:
            return self
        return AxisMap(self.period, self.shift, self.lo, self.hi, _hull(self.floor, box))

    # ---- queries ------------------------------------------------------
    def box(self, i: int) -> Box:
        """Unclipped inclusive input box of index ``i`` (any integer), or None."""
        return _hull(self.periodic_box(i), self.floor)

    def periodic_box(self, i: int) -> Box:
        """The box of index ``i`` without the floor (the local map's box)."""
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
        boxes = [self.periodic_box(t) for t in range(period)]
        lo = tuple(None if b is None else b[0] for b in boxes)
        hi = tuple(None if b is None else b[1] for b in boxes)
        return AxisMap(period, self.shift * reps, lo, hi, self.floor)

    # ---- composition --------------------------------------------------
    def gather(self, period: int, taps: Iterable[Iterable[int]], shift_in: int) -> "AxisMap":
        """Output map whose phase ``t`` sees the union of input indices ``taps[t]``.

        ``period`` output indices later, every tap has moved by ``shift_in`` input
        indices; ``shift_in`` must be a multiple of this map's period. The floor is
        kept: a union of boxes that all hold the floor holds it too. (An index with no
        tap at all keeps the floor as well: an upper bound for such holes.)
        """
        assert shift_in % self.period == 0, (shift_in, self.period)
        shift = self.shift * (shift_in // self.period)
        lo, hi = [], []
        for tap in taps:
            boxes = [b for b in (self.periodic_box(i) for i in tap) if b is not None]
            if boxes:
                lo.append(min(b[0] for b in boxes))
                hi.append(max(b[1] for b in boxes))
            else:
                lo.append(None)
                hi.append(None)
        return AxisMap.build(period, shift, lo, hi, self.floor)

    def span(self, n: int) -> Box:
        """The hull of the boxes of indices ``0 .. n-1`` (floor included)."""
        count = min(n, self.period) if self.shift == 0 else n
        out = self.floor
        if self.shift == 0 or count <= 2 * self.period:
            for i in range(count):
                out = _hull(out, self.periodic_box(i))
            return out
        # phases repeat with a fixed shift: the ends come from the first and last period only
        for i in list(range(self.period)) + list(range(count - self.period, count)):
            out = _hull(out, self.periodic_box(i))
        return out

    def globalised(self, n: int) -> "AxisMap":
        """Every index sees the union of what indices ``0 .. n-1`` saw (a pooling: no local path left)."""
        b = self.span(n)
        if b is None:
            return AxisMap(1, 0, (None,), (None,))
        return AxisMap.constant(*b)

    def gated(self, n: int) -> "AxisMap":
        """Each index keeps its own box and also sees what indices ``0 .. n-1`` saw (a global statistic)."""
        if self.shift == 0:
            return self.globalised(n)
        return self.with_floor(self.span(n))


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
    """Element-wise union of maps (same tensor positions, several inputs).

    Maps that do not move (``shift == 0``: a gate, a pooled statistic) join the floor
    of the moving ones, so the period never grows because of them; the moving maps
    must share one jump (the caller checks alignment first).
    """
    moving = [m for m in maps if m.shift != 0]
    floor = None
    for m in maps:
        floor = _hull(floor, m.floor)
    if moving:
        for m in maps:
            if m.shift == 0:  # a non-moving map: every phase of it joins the floor
                floor = _hull(floor, m.local.span(m.period))
    else:
        moving = list(maps)
    period = 1
    for m in moving:
        period = _lcm(period, m.period)
    shifts = {m.shift * (period // m.period) for m in moving}
    if len(shifts) > 1:
        raise ValueError("union of maps with different jumps")
    shift = shifts.pop()
    lo, hi = [], []
    for t in range(period):
        boxes = [b for b in (m.periodic_box(t) for m in moving) if b is not None]
        lo.append(min(b[0] for b in boxes) if boxes else None)
        hi.append(max(b[1] for b in boxes) if boxes else None)
    return AxisMap.build(period, shift, lo, hi, floor)


def misalignment(a: AxisMap, b: AxisMap) -> str | None:
    """Why two paths into one node disagree (jump or centre), or None if aligned."""
    if a.shift == 0 or b.shift == 0:
        return None  # a broadcast/global input adds to every position alike
    if a.jump != b.jump:
        return f"jump {_fmt(a.jump)} vs {_fmt(b.jump)}"
    off = centre_offset(a, b)
    if off:
        return f"centre of unit {off[0]}: {_fmt(off[1])} vs {_fmt(off[2])} px"
    return None


def centre_offset(a: AxisMap, b: AxisMap) -> tuple[int, Fraction, Fraction] | None:
    """The first unit whose local boxes in ``a`` and ``b`` differ in centre: (unit, centre a, centre b).

    Only for two moving maps with the same jump; None when every phase agrees.
    """
    period = _lcm(a.period, b.period)
    for t in range(period):
        x, y = a.periodic_box(t), b.periodic_box(t)
        if x is None or y is None:
            continue
        if x[0] + x[1] != y[0] + y[1]:
            return t, Fraction(x[0] + x[1], 2), Fraction(y[0] + y[1], 2)
    return None


def _hull(a: Box, b: Box) -> Box:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1])


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"
