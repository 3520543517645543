"""Argument checks and the context the engine runs in: device, preset, frozen model, autocast."""

from __future__ import annotations

import contextlib
import copy
import math
import sys

import numpy as np
import torch
import torch.nn as nn

from erf import stats
from erf.errors import ErfError
from erf.engine.inputs import sample_key


def check_options(samples, batch_size, weight_draws, init, tol, max_samples, crop, autocast, dtype, single_sample,
             group_size) -> dict:
    for name, v in (("samples", samples), ("batch_size", batch_size)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ErfError(f"{name} must be a positive integer; got {v!r}")
    if not isinstance(weight_draws, (int, np.integer)) or weight_draws < 0:
        raise ErfError(f"weight_draws must be 0 (use the model's weights) or a positive count; got {weight_draws!r}")
    if weight_draws and init == "model":
        raise ErfError("weight_draws needs an init that draws weights (e.g. init='kaiming_normal', or "
                       "erf.models.rebuild_init(spec) for the model's own scheme), not 'model'")
    if isinstance(init, str) and init not in init_names():
        raise ErfError(f"unknown init {init!r}; choose one of {', '.join(init_names())} (or pass a callable)")
    if tol is not None and not tol > 0:
        raise ErfError(f"tol must be a positive number; got {tol!r}")
    if max_samples is not None and (not isinstance(max_samples, (int, np.integer)) or max_samples < samples):
        raise ErfError(f"max_samples must be an integer >= samples ({samples}); got {max_samples!r}")
    if crop not in ("auto", True, False):
        raise ErfError(f"crop must be 'auto', True or False; got {crop!r}")
    if autocast not in (None, "bf16", "tf32"):
        raise ErfError(f"autocast must be None, 'bf16' or 'tf32'; got {autocast!r}")
    if dtype not in ("float32", "float64"):
        raise ErfError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    if autocast == "bf16" and dtype == "float64":
        raise ErfError("autocast='bf16' with dtype='float64' makes no sense; drop one of them")
    if group_size is not None and (not isinstance(group_size, (int, np.integer)) or group_size < 1):
        raise ErfError(f"group_size must be a positive integer; got {group_size!r}")
    return {
        "batch_size": 1 if single_sample else int(batch_size),
        "redraw": bool(weight_draws) or init != "model",
        "max_samples": int(max_samples if max_samples is not None else 64 * samples),
        "group_size": (lambda n, draws: int(group_size)) if group_size else default_group_size,
    }


def default_group_size(samples: int, draws: int) -> int:
    """One weight draw per group when there are several (the draws are what varies most), else samples/32."""
    return samples if draws > 1 else max(1, math.ceil(samples / 32))


def checksum(model: nn.Module) -> list[float]:
    """Sum and sum of squares of every floating parameter and buffer: a fingerprint of the weights."""
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    if not tensors:
        return [0.0, 0.0]
    with torch.no_grad():
        total = sum(t.double().sum() for t in tensors)
        squares = sum(t.double().square().sum() for t in tensors)
    return [float(total), float(squares)]


def init_names():
    from erf.models import INITS

    return INITS


def resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ErfError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ErfError("device 'cuda' was asked for but no CUDA device is available; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ErfError(f"device {device!r} is not supported; use auto, cpu or cuda")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ErfError(f"device {device!r} is not there: this machine has {torch.cuda.device_count()} CUDA "
                       f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def make_preset(preset, signal, channel_reduce) -> stats.Preset:
    if preset is not None:
        return preset if isinstance(preset, stats.Preset) else stats.get_preset(preset)
    return stats.Preset("custom", "sum", False, signal, channel_reduce, None)


def has_train_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


@contextlib.contextmanager
def frozen(model: nn.Module, eval_mode: bool):
    """No parameter gradients (and eval mode) for the block; every flag restored after, even on error."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        if eval_mode:
            model.eval()
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        for m, t in modes:
            m.training = t


def working_model(model, dev, fdtype, copy_needed: bool) -> nn.Module:
    """The model itself when it already lives on ``dev`` in ``fdtype``, else a converted copy."""
    tensors = list(model.parameters()) + list(model.buffers())
    moves = any(t.device != dev or (t.is_floating_point() and t.dtype != fdtype) for t in tensors)
    if not (copy_needed or moves):
        return model
    work = copy.deepcopy(model)
    for p in work.parameters():
        p.grad = None
    return work.to(device=dev, dtype=fdtype)


def float32_view(model: nn.Module) -> nn.Module:
    """The model itself if its floating tensors are float32 (what the tracer feeds), else a float32 copy."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.dtype == torch.float32 for t in tensors if t.is_floating_point()):
        return model
    return copy.deepcopy(model).float()


def redraw(work, init, seed, draw) -> None:
    from erf.models import apply_init

    g = torch.Generator().manual_seed(sample_key(seed, draw, 0x7FFFFFFF))
    apply_init(work, init, g)


def spatial_size(model, input_size) -> tuple[int, ...]:
    from erf.analytic import spatial_size as parse

    return parse(model, input_size)


def default_in_channels(model) -> int:
    from erf.analytic import infer_in_channels

    return infer_in_channels(model)


def amp_context(dev, autocast, notes) -> dict:
    ctx = contextlib.nullcontext
    if autocast == "bf16":
        def ctx():
            return torch.autocast(dev.type, dtype=torch.bfloat16)
    tf32 = contextlib.nullcontext()
    if autocast == "tf32":
        if dev.type == "cuda":
            tf32 = tf32_context()
        else:
            notes.append("autocast tf32 has no effect on CPU")
    return {"ctx": ctx, "tf32": tf32}


@contextlib.contextmanager
def tf32_context():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def progress_bar(progress, total):
    if progress:
        from tqdm import tqdm

        return tqdm(total=total, unit="img", file=sys.stderr, leave=False)
    return NoBar()


class NoBar:
    def update(self, n):
        pass

    def close(self):
        pass
