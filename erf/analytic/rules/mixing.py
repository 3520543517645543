"""Ops that mix positions along whole dims: reductions, normalisations, and ``global`` / ``identity``."""

from __future__ import annotations

import torch

from erf.analytic.layout import Info
from erf.analytic.rules.core import Call, globalise, norm_dims, pointwise, tensors_in, union_maps


def reduce_dims(call: Call) -> Info | list[Info]:
    """Reductions and normalisations along dims (mean, sum, softmax, norm...)."""
    x, info = call.args[0], call.info(call.args[0])
    name = call.name
    if name in ("max", "min") and isinstance(call.arg(1, "other"), torch.Tensor):
        return pointwise(call)  # the elementwise form
    if info is None:
        return pointwise(call)
    dim = call.arg(1, "dim")
    if name in ("softmax", "log_softmax", "softmin", "cumsum", "cumprod", "logcumsumexp", "normalize"):
        dim = call.arg(1, "dim", -1 if name == "normalize" else None)
        if name == "normalize":
            dim = call.arg(2, "dim", 1)
    mixed = norm_dims(dim, x.dim())
    keeps_dim = name in ("softmax", "log_softmax", "softmin", "cumsum", "cumprod", "logcumsumexp", "normalize")
    res = globalise(info, mixed, f"'{name}' mixes image positions", drop=not keeps_dim)
    outs = call.out if isinstance(call.out, (tuple, list)) else (call.out,)
    results = []
    for o in outs:
        if not isinstance(o, torch.Tensor):
            continue
        if o.dim() == x.dim():
            results.append(res)
        else:
            keep = [d for d in range(x.dim()) if d not in mixed] if o.dim() == x.dim() - len(mixed) else None
            if keep is None:
                keep = list(range(o.dim())) if o.dim() < x.dim() and dim is None else None
            dims = tuple(res.dims[d] for d in keep) if keep and len(keep) == o.dim() else (None,) * o.dim()
            results.append(res.with_(dims=dims))
    return results if isinstance(call.out, (tuple, list)) else results[0]


def layer_norm(call: Call) -> Info | list[Info]:
    """layer_norm / rms_norm: the normalised trailing dims see each other."""
    x, info = call.args[0], call.info(call.args[0])
    shape = call.arg(1, "normalized_shape")
    k = len(shape) if isinstance(shape, (list, tuple, torch.Size)) else 1
    return globalise(info, list(range(x.dim() - k, x.dim())), "'layer_norm' normalises over image positions")


def group_norm(call: Call) -> Info | list[Info]:
    """group_norm / instance_norm: every position of a sample sees all others."""
    x, info = call.args[0], call.info(call.args[0])
    return globalise(info, list(range(1, x.dim())), f"'{call.name}' normalises over image positions")


def batch_norm(call: Call) -> Info | list[Info]:
    """batch_norm: a per-channel affine map in eval mode; global over positions in train mode."""
    x, info = call.args[0], call.info(call.args[0])
    training = call.arg(5, "training", False)
    if training:
        res = globalise(info, list(range(2, x.dim())), "BatchNorm in train mode mixes the batch and image positions")
        return res
    return info


def identity(call: Call) -> Info | list[Info]:
    """``treat_as="identity"``: the result knows what its first traced input knows."""
    x, info = call.first()
    return info


def global_op(call: Call) -> Info | list[Info]:
    """Anything declared global: every output sees the union of all inputs."""
    outs = call.out if isinstance(call.out, (list, tuple)) else [call.out]
    tensors = [t for t in tensors_in((call.args, call.kwargs)) if call.info(t) is not None]
    infos = [globalise(call.info(t), list(range(t.dim())), f"'{call.name}' is treated as global", gate=False)
             for t in tensors]
    n_axes = len(infos[0].axes)
    axes = tuple(union_maps([(None, i.axes[a]) for i in infos], 1) for a in range(n_axes))
    res = [Info(axes, (None,) * o.dim(), infos[0].crop_note) for o in outs if isinstance(o, torch.Tensor)]
    return res if isinstance(call.out, (list, tuple)) else res[0]
