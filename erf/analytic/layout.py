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
  A window partition (``view(B, H/w, w, W/w, w, C)``) splits an image axis into
  ``Part`` components: ``(Part(axis, stride), size)`` indexes positions
  ``0, stride, ..., (size-1)*stride`` of the axis, and the parts of an axis add up
  (mixed radix). Merging them back in order gives the plain axis again.
- ``crop_note``: None while every op so far is local and size-independent (so the
  engine may run on a crop); otherwise why not.
- ``reach``: per axis, the input pixels that the tensor's real positions can depend on
  (the tracer fills it in): an unpadded strided conv or pool that drops trailing pixels
  cuts it, and clipped boxes are cut there too.
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


@dataclass(frozen=True)
class Part:
    """A factor of an image axis split across dims: index ``k`` stands for position ``k * stride``."""

    axis: int
    stride: int


Component = tuple  # (axis: int | None | Tokens | Part, size: int)
Dim = tuple[Component, ...] | None


def spatial_components(role: Dim):
    """The (axis, size) pairs of image axes a dim indexes, looking inside token dims.

    A ``Part`` of an axis gives (its axis, its size): the size of that factor only.
    """
    for key, size in role or ():
        if isinstance(key, Tokens):
            yield from ((_axis_of(a), s) for a, s in key.grid if a is not None)
        elif key is not None:
            yield _axis_of(key), size


def axis_parts(role: Dim):
    """The (axis, stride, size) of every image factor a dim indexes (a plain axis has stride 1)."""
    for key, size in role or ():
        keys = key.grid if isinstance(key, Tokens) else ((key, size),)
        for k, s in keys:
            if isinstance(k, Part):
                yield k.axis, k.stride, s
            elif k is not None:
                yield k, 1, s


def _axis_of(key) -> int:
    return key.axis if isinstance(key, Part) else key


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
    reach: tuple | None = None  # per axis (lo, hi) or None: pixels real positions can depend on

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
        return axis_extents(self.dims, len(self.axes))


def axis_extents(dims, n_axes: int) -> tuple[int, ...]:
    """Positions of each image axis indexed by ``dims`` (the product of its distinct parts; 1 if none)."""
    parts: list[set] = [set() for _ in range(n_axes)]
    for role in dims:
        for a, stride, size in axis_parts(role):
            parts[a].add((stride, size))
    return tuple(prod(s for _, s in p) if p else 1 for p in parts)


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
                if isinstance(axis, Tokens):
                    return None
                if axis is None:
                    role.append((None, need))
                    carry = (None, have // need)
                else:  # a window partition: the outer factor here, the inner one carried on
                    a, stride = (axis.axis, axis.stride) if isinstance(axis, Part) else (axis, 1)
                    role.append((Part(a, stride * (have // need)), need))
                    carry = (Part(a, stride), have // need)
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
    return _whole_axes(tuple(_merge_parts(r) for r in out))


def rebase_parts(dims: tuple[Dim, ...], axis: int, step: int) -> tuple[Dim, ...]:
    """``dims`` with every part of ``axis`` counted in steps of ``step`` positions (strides divided).

    Used when the finest factors of a split axis are gone (merged into channels and
    mixed, as in Swin's patch merging): the tensor then indexes every ``step``-th position.
    """
    def fix(role):
        if not role:
            return role
        return tuple((Part(k.axis, k.stride // step), s) if isinstance(k, Part) and k.axis == axis else (k, s)
                     for k, s in role)
    return _whole_axes(tuple(fix(r) for r in dims))


def _merge_parts(role: Dim) -> Dim:
    """Adjacent parts of one axis that fit together (outer stride = inner stride x size) as one."""
    if not role:
        return role
    out: list[Component] = []
    for key, size in role:
        if out and isinstance(key, (Part, int)) and not isinstance(key, bool) and isinstance(out[-1][0], (Part, int)):
            pk, ps = out[-1]
            a0, s0 = (pk.axis, pk.stride) if isinstance(pk, Part) else (pk, 1)
            a1, s1 = (key.axis, key.stride) if isinstance(key, Part) else (key, 1)
            if a0 == a1 and s0 == s1 * size and isinstance(pk, Part):
                out[-1] = (Part(a1, s1), ps * size)
                continue
        out.append((key, size))
    return tuple(out)


def _whole_axes(roles: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """A part with stride 1 that is the only factor of its axis is the plain axis again."""
    count: dict[int, int] = {}
    for role in roles:
        for key, _ in role or ():
            if isinstance(key, Part):
                count[key.axis] = count.get(key.axis, 0) + 1
            elif isinstance(key, int):
                count[key] = count.get(key, 0) + 1
    def plain(role):
        if not role:
            return role
        return tuple((k.axis, s) if isinstance(k, Part) and k.stride == 1 and count[k.axis] == 1 else (k, s)
                     for k, s in role)
    return tuple(plain(r) for r in roles)


def _common(a: int, b: int) -> int:
    return gcd(a, b)
