"""Where NaN or Inf start: the first layer whose output (forward) or gradient (backward) is not finite."""

from __future__ import annotations

import torch
import torch.nn as nn


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if name and not any(True for _ in m.children())]


def _bad(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())


def locate_nonfinite(model: nn.Module, grad_fn, x: torch.Tensor) -> str:
    """A sentence naming where ``grad_fn(x)`` (forward then input gradient) first turns non-finite.

    Forward: the first leaf module, in call order, whose output holds NaN/Inf. Otherwise the
    backward: the first leaf module, in backward order, whose output receives a NaN/Inf
    gradient; the op that made it sits just after that module.
    """
    forward_bad: list[str] = []
    backward_bad: list[str] = []
    handles = []

    def on_forward(name):
        def hook(_mod, _inp, out):
            if not forward_bad and _bad(out):
                forward_bad.append(name)
            if isinstance(out, torch.Tensor) and out.requires_grad:
                def on_grad(g):
                    if not backward_bad and _bad(g):
                        backward_bad.append(name)
                out.register_hook(on_grad)
        return hook

    for name, m in _leaves(model):
        handles.append(m.register_forward_hook(on_forward(name)))
    try:
        g = grad_fn(x)
    except Exception as exc:  # the diagnosis must not hide the original error
        return f"(the layer could not be located: {type(exc).__name__})"
    finally:
        for h in handles:
            h.remove()
    kinds = "NaN" if bool(torch.isnan(g).any()) else "Inf"
    if forward_bad:
        return f"{kinds} starts in the forward pass at layer {forward_bad[0]!r} (its output is not finite)"
    if backward_bad:
        return (f"{kinds} starts in the backward pass just after layer {backward_bad[0]!r} "
                "(the gradient reaching its output is not finite)")
    return f"{kinds} starts in the backward pass at the target itself or in an op outside any module"
