"""The exact ERF of a linear chain (Luo et al.): repeated convolution of its kernels.

For convs and average pools with no non-linearity, the gradient of one output unit
with respect to the input is the transposed chain applied to a unit impulse. With
one channel this is exact and needs no sampling: it is the theory curve the
measurements are drawn against. The moments of the map add layer by layer:
per axis, ``sigma^2 = sum_l j_{l-1}^2 Var_l``, where ``Var_l`` is the variance of
layer l's kernel marginal (taps spaced by the dilation) and ``j_{l-1}`` the jump
before it. For a uniform kernel of size k, ``Var = (k^2 - 1) / 12``.

With random weights the signal matters (``signal``): for zero-mean i.i.d. weights the expected
signed gradient is 0, the gradient's variance at each pixel is the same chain applied to the
weights' per-tap variances (``square``: for equal variances, the uniform-kernel map), and the
mean |gradient| is proportional to the square root of that variance map (``abs``: exact when the
gradient at a pixel is Gaussian, a sum over many channels and paths; a measured random linear
net of 16+ channels matches its sigma within about 2 %). The square root widens the map: for
3x3 layers the ``abs`` map's sigma grows with an exponent of 0.5435 over depths 5, 10, 20, 40
(0.5352 over every depth 5..40), approaching 0.5 only in the deep limit, where the map is
Gaussian and its square root is a Gaussian sqrt(2) wider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from erf.analytic.layers import Layer
from erf.errors import ErfError
from erf.stats import moments


@dataclass
class LinearERF:
    """The exact ERF map over the TRF of one unit, and its predicted per-axis sigma."""

    map: np.ndarray
    sigma: tuple[float, ...]
    rf: tuple[int, ...]
    signal: str = "signed"


def _marginal_variance(kernel: np.ndarray, axis: int, dilation: int) -> float:
    w = kernel.sum(axis=tuple(i for i in range(kernel.ndim) if i != axis))
    pos = np.arange(len(w)) * dilation
    total = w.sum()
    if total == 0:
        return float("nan")
    mean = (w * pos).sum() / total
    return float((w * (pos - mean) ** 2).sum() / total)


def linear_erf(layers: Sequence[Any], weights: Sequence[Any] | None = None, ndim: int = 2,
               signal: str = "signed") -> LinearERF:
    """Exact ERF of a chain of linear layers (float64).

    ``layers`` are ``Layer``s (or dicts/tuples, see ``Layer.coerce``); ``weights``
    gives one kernel per layer (an array of the kernel's shape), uniform
    ``1/prod(kernel)`` where None. Padding does not matter: the map covers exactly
    the TRF of a unit whose TRF lies inside the image.

    Args:
        layers: the chain, input first.
        weights: one kernel per layer (None: uniform). With ``square``/``abs`` they are the per-tap
            scales (standard deviations) of random zero-mean weights.
        ndim: spatial axes.
        signal: ``signed`` (the gradient of the chain with these weights: Luo et al.'s uniform-weight
            case), ``square`` (the expected squared gradient for random zero-mean i.i.d. weights: the
            chain of the squared kernels, normalised to sum 1) or ``abs`` (the expected |gradient|: the
            square root of the ``square`` map, normalised to sum 1).

    Returns:
        The ``LinearERF`` (``sigma`` per axis: analytic for ``signed``/``square``, the map's moments for
        ``abs``).

    Raises:
        ErfError: no layers, a kernel count or shape that does not fit, an unknown signal.
    """
    if signal not in ("signed", "square", "abs"):
        raise ErfError(f"linear_erf signal must be 'signed', 'square' or 'abs'; got {signal!r}")
    layers = [Layer.coerce(layer) for layer in layers]
    if not layers:
        raise ErfError("linear_erf needs at least one layer")
    if weights is not None and len(weights) != len(layers):
        raise ErfError(f"linear_erf got {len(weights)} kernels for {len(layers)} layers")
    kernels, strides, dilations = [], [], []
    for i, layer in enumerate(layers):
        k, s, d, _, _ = layer.per_axis(ndim)
        w = np.full(k, 1.0 / np.prod(k)) if weights is None or weights[i] is None else np.asarray(weights[i], float)
        if w.shape != tuple(k):
            raise ErfError(f"kernel {i} has shape {w.shape}, expected {tuple(k)}")
        kernels.append(w if signal == "signed" else w * w)
        strides.append(s)
        dilations.append(d)
    conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[ndim]
    m = torch.ones((1, 1) + (1,) * ndim, dtype=torch.float64)
    for w, s, d in zip(reversed(kernels), reversed(strides), reversed(dilations)):
        m = conv_t(m, torch.as_tensor(w, dtype=torch.float64)[None, None], stride=s, dilation=d)
    var = [0.0] * ndim
    jump = [1] * ndim
    for w, s, d in zip(kernels, strides, dilations):
        for a in range(ndim):
            var[a] += jump[a] ** 2 * _marginal_variance(w, a, d[a])
            jump[a] *= s[a]
    arr = m[0, 0].numpy()
    sigma = tuple(float(np.sqrt(v)) for v in var)
    if signal != "signed":
        arr = arr / arr.sum()
    if signal == "abs":
        arr = np.sqrt(arr)
        arr = arr / arr.sum()
        sigma = moments(arr).sigma
    return LinearERF(arr, tuple(float(v) for v in sigma), tuple(arr.shape), signal)
