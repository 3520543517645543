"""Token outputs of vision transformers: which token is the measured unit.

A traced layer knows its layout (``erf.analytic.layout``): ``(N, L, C)`` tokens with the
prefix tokens (class, distillation, register tokens) joined by a traced ``torch.cat``, or a
channels-last ``(N, H, W, C)`` grid. Where the model cannot be traced, the layout is read from
the output shape: a 3-D output of a 2-D image is ``(N, L, C)`` tokens whose prefix count comes
from the model (timm convention: ``num_prefix_tokens``, else one per ``cls_token`` /
``dist_token``) or from the user; a 4-D output is ``(N, C, H, W)`` unless only ``(N, H, W, C)``
fits the image. A user's ``prefix_tokens`` is checked against whatever the model shows.
"""

from __future__ import annotations

from typing import Any, Sequence

from erf.analytic.layout import Tokens, single_axis
from erf.errors import ErfError


class PrefixTokensError(ErfError):
    """A ``prefix_tokens`` value that does not fit the measured layer."""


def check_value(prefix_tokens: Any) -> int | None:
    """``prefix_tokens`` as given by the user: None (find it) or an int >= 0.

    Raises:
        PrefixTokensError: anything else.
    """
    if prefix_tokens is None:
        return None
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise PrefixTokensError(f"prefix_tokens must be a token count >= 0 (or unset, to find it from the model); "
                                f"got {prefix_tokens!r}")
    return int(prefix_tokens)


def model_prefix_tokens(model: Any) -> int | None:
    """Prefix tokens the model declares (timm convention), or None when it says nothing."""
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        return n
    found = [getattr(model, a, None) for a in ("cls_token", "dist_token")]
    if all(t is None for t in found):
        return None
    return sum(int(t.shape[-2]) if getattr(t, "dim", lambda: 0)() >= 2 else 1 for t in found if t is not None)


def is_token_layout(dims: Sequence[Any]) -> bool:
    """True when a traced layer's positions are tokens (not one tensor dim per image axis)."""
    roles = [r for r in dims if r is not None]
    return any(single_axis(r) is None or isinstance(r[0][0], Tokens) for r in roles)


def check_traced(row: Any, given: int | None, layer: str | None) -> list[str]:
    """Check ``given`` against the prefix tokens the trace found; return notes for the result.

    Args:
        row: the traced layer (``erf.analytic``'s ``LayerRF``: ``prefix_tokens``, ``dims``, ``output``).
        given: the user's count, or None; ``layer``: the layer's name (None: the output).

    Returns:
        Notes for the result (what was skipped), empty for a map that is not tokens.

    Raises:
        PrefixTokensError: ``given`` differs from the traced count.
    """
    traced = row.prefix_tokens
    name = layer or "output"
    tokens = is_token_layout(row.dims)
    if given is not None and given != traced:
        what = (f"the traced graph shows {traced} prefix token(s) in front of its "
                f"{'x'.join(map(str, row.output))} token grid" if tokens
                else f"its output {tuple(row.shape)} has no token dim")
        raise PrefixTokensError(f"prefix_tokens={given} does not fit layer '{name}': {what}; "
                                f"leave prefix_tokens unset (or give {traced})")
    if not tokens:
        return []
    unit = tuple(int(n) // 2 for n in row.output)
    return [f"token layer: {traced} prefix token(s) skipped (found in the traced graph); the centre unit is "
            f"token {unit} of the {'x'.join(map(str, row.output))} grid"]


def untraced_layout(model: Any, shape: Sequence[int], input_size: Sequence[int], given: int | None,
                    layer: str | None) -> tuple[tuple[int, ...], tuple[int, ...], int | None, list[str]]:
    """Layout of an untraced layer from its output ``shape``.

    Returns ``(spatial_dims, grid, prefix, notes)``: ``prefix`` is None for a map with one
    tensor dim per image axis, else the output is ``(N, L, C)`` tokens with ``prefix`` tokens
    before a row-major ``grid``.

    Raises:
        PrefixTokensError: a prefix count that does not fit, or tokens that form no grid.
    """
    name = layer or "output"
    size = tuple(int(s) for s in input_size)
    shape = tuple(int(s) for s in shape)
    if len(size) == 2 and len(shape) == 3:
        return _tokens(model, shape, size, given, name)
    if given:
        raise PrefixTokensError(f"prefix_tokens={given} does not fit layer '{name}': its output {shape} has no "
                                "token dim (tokens are (N, L, C)); leave prefix_tokens unset")
    dims = tuple(range(2, len(shape)))
    if len(shape) == len(size) + 2 and not _fits(shape[2:], size) and _fits(shape[1:-1], size):
        dims = tuple(range(1, len(shape) - 1))
        return dims, shape[1:-1], None, [f"layer '{name}' read as channels-last (N, H, W, C) from its shape {shape}"]
    return dims, tuple(shape[d] for d in dims), None, []


def _tokens(model, shape, size, given, name):
    n = shape[1]
    declared = model_prefix_tokens(model)
    prefix = given if given is not None else (declared or 0)
    grid = token_grid(n - prefix, size)
    if grid is None and given is None and prefix and token_grid(n, size):
        prefix, grid = 0, token_grid(n, size)  # a layer before the prefix tokens are joined
        source = f"none: all {n} tokens form the grid (the model's {declared} prefix token(s) are not there yet)"
    else:
        source = ("given" if given is not None else "from the model's num_prefix_tokens / cls_token"
                  if declared else "the model declares none")
        source = f"{prefix} ({source})"
    if grid is None:
        fix = (f"prefix_tokens={given} does not fit: check it" if given is not None
               else "give prefix_tokens, or pick a layer whose output is a (N, C, H, W) map")
        raise PrefixTokensError(f"layer '{name}' has {n} tokens (output {shape}): {n} - {prefix} prefix token(s) "
                                f"= {n - prefix} do not form a grid with the same stride on both axes of the "
                                f"{'x'.join(map(str, size))} input; {fix}")
    return (1,), grid, prefix, [f"layer '{name}' read as (N, L, C) tokens from its shape {shape} (the model could "
                                f"not be traced): prefix tokens {source}, then a {grid[0]}x{grid[1]} grid"]


def token_grid(n: int, size: Sequence[int]) -> tuple[int, int] | None:
    """The ``(h, w)`` grid of ``n`` tokens with the same integer stride on both image axes, or None."""
    if n < 1:
        return None
    found = []
    for h in range(1, n + 1):
        if n % h == 0:
            w = n // h
            if _fits((h, w), size):
                found.append((h, w))
    return found[0] if len(found) == 1 else None


def _fits(grid, size) -> bool:
    """True when ``grid`` tiles ``size`` with one stride on every axis (patches, maybe a cut border)."""
    strides = {s // g for g, s in zip(grid, size) if g}
    if len(strides) != 1 or 0 in strides:
        return False
    j = strides.pop()
    return all(g * j <= s < (g + 1) * j for g, s in zip(grid, size))
