"""What a traced tensor knows: its per-axis maps and which dims index which axes.

A tensor derived from the network input carries an ``Info``:
- ``axes``: one ``AxisMap`` per spatial axis of the *input* image;
- ``dims``: for each tensor dim, ``None`` (batch, channels, anything that does not
  index the image) or a tuple of components ``(axis, size)`` in row-major order
  (``axis`` is an input axis or ``None`` for a non-spatial factor). A conv map has
  ``dims = (None, None, ((0, H),), ((1, W),))``; a ViT's token tensor after
  ``flatten(2).transpose(1, 2)`` has ``(None, ((0, H), (1, W)), None)``.
  A dim that starts with non-image tokens (a class token joined by ``torch.cat``)
  holds one ``Tokens`` component: ``prefix`` such tokens, then the grid.
- ``crop_note``: None while every op so far is local and size-independent (so the
  engine may run on a crop); otherwise why not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import gcd, prod

from erf.analytic.axis import AxisMap

@dataclass(frozen=True)
class Tokens:
    """A token dim: ``prefix`` non-image tokens (class, distillation...), then a grid."""

    prefix: int
    grid: tuple  # components (axis, size) of the grid, row-major


Component = tuple  # (axis: int | None | Tokens, size: int)
Dim = tuple[Component, ...] | None


def spatial_components(role: Dim):
    """The (axis, size) pairs of image axes a dim indexes, looking inside token dims."""
    for key, size in role or ():
        if isinstance(key, Tokens):
            yield from ((a, s) for a, s in key.grid if a is not None)
        elif key is not None:
            yield key, size


def single_axis(role: Dim) -> int | None:
    """The image axis a dim indexes alone (a plain conv-map dim), else None."""
    if role and len(role) == 1 and isinstance(role[0][0], int):
        return role[0][0]
    return None


@dataclass(frozen=True)
class Info:
    axes: tuple[AxisMap, ...]
    dims: tuple[Dim, ...]
    crop_note: str | None = None

    def with_(self, **kw) -> "Info":
        return replace(self, **kw)

    def axis_dims(self) -> dict[int, int]:
        """Input axis -> tensor dim, for dims that index exactly one axis."""
        out = {}
        for d, role in enumerate(self.dims):
            a = single_axis(role)
            if a is not None:
                out[a] = d
        return out

    def axis_sizes(self) -> tuple[int, ...]:
        """How many positions of each axis this tensor still indexes (1 if none)."""
        sizes = [1] * len(self.axes)
        for role in self.dims:
            for axis, size in spatial_components(role):
                sizes[axis] = size
        return tuple(sizes)


def plain_dim(axis: int, size: int) -> Dim:
    return ((axis, size),)


def drop_unit_components(role: Dim) -> Dim:
    """Remove size-1 factors; a role left with no spatial factor becomes None."""
    if role is None:
        return None
    kept = tuple(c for c in role if c[1] != 1)
    if not any(c[0] is not None for c in kept):
        return None
    return kept


def role_size(role: Dim) -> int:
    return prod(c[1] for c in role) if role else 1


def reshape_roles(dims: tuple[Dim, ...], old_shape, new_shape) -> tuple[Dim, ...] | None:
    """Roles after a reshape, or None when it splits one spatial factor in two."""
    comps: list[Component] = []
    for role, size in zip(dims, old_shape):
        if role is None:
            if size != 1:
                comps.append((None, size))
        else:
            comps.extend(c for c in role if c[1] != 1)
    out: list[Dim] = []
    k = 0
    carry: Component | None = None  # remainder of a non-spatial factor being split
    for size in new_shape:
        need = size
        role: list[Component] = []
        while need > 1:
            if carry is None:
                if k >= len(comps):
                    return None
                carry = comps[k]
                k += 1
            axis, have = carry
            if have <= need and need % have == 0:
                role.append(carry)
                need //= have
                carry = None
            elif have % need == 0:
                if axis is not None:
                    return None  # would split a spatial axis into two dims
                role.append((None, need))
                carry = (None, have // need)
                need = 1
            else:
                if axis is not None:
                    return None
                # non-spatial factors regroup freely
                g = _common(have, need)
                if g == 1:
                    return None
                role.append((None, g))
                carry = (None, have // g)
                need //= g
        out.append(drop_unit_components(tuple(role)) if role else None)
    if carry is not None and carry[1] != 1:
        return None
    return tuple(out)


def _common(a: int, b: int) -> int:
    return gcd(a, b)
