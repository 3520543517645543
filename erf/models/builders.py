"""Configurable conv stacks for receptive-field experiments, and a small classifier.

``plain_net`` and ``residual_net`` are one builder (``conv_net``) with a ``residual`` flag. Both
output a spatial map (no pooling or classifier), so the last layer is the model output.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from erf import limits
from erf.errors import ModelError
from erf.models.reference import scaled
from erf.models.registry import register_model

ACTIVATIONS = {
    "linear": nn.Identity,
    "none": nn.Identity,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (``linear``/``none``, ``relu``, ``tanh``, ``sigmoid``, ``gelu``)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ModelError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def _make_norm(norm: str | None, channels: int) -> nn.Module:
    key = "none" if norm is None else str(norm).lower()
    if key == "none":
        return nn.Identity()
    if key in ("batch", "bn", "batchnorm"):
        return nn.BatchNorm2d(channels)
    raise ModelError(f"unknown norm {norm!r}; choose none or batch")


def _per_layer(value: int | Sequence[int], depth: int, what: str) -> list[int]:
    """An int for every layer, or a list with one int per layer."""
    if isinstance(value, int):
        values = [value] * depth
    else:
        values = [int(v) for v in value]
        if len(values) != depth:
            raise ModelError(f"{what} needs one value per layer ({depth}); got {len(values)}: {list(value)}")
    if any(v < 1 for v in values):
        raise ModelError(f"{what} values must be >= 1; got {values}")
    return values


class ConvLayer(nn.Sequential):
    """``conv`` -> ``norm`` -> ``act``, with "same" padding ``dilation * (k - 1) // 2``."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, dilation: int,
                 norm: str | None, activation: str | None, bias: bool):
        pad = dilation * (kernel_size - 1) // 2
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=pad, dilation=dilation, bias=bias)
        self.norm = _make_norm(norm, cout)
        self.act = make_activation(activation) if activation is not None else nn.Identity()


class ResidualBlock(nn.Module):
    """Two ``ConvLayer``s plus a skip: ``act(conv2(conv1(x)) + shortcut(x))``.

    The shortcut is the identity, or a 1x1 projection (``shortcut.conv``, with norm) when the
    stride or the channel count changes. ``conv2`` has no activation of its own: the block's
    activation is applied after the sum.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, strides: tuple[int, int],
                 dilations: tuple[int, int], norm: str | None, activation: str, bias: bool,
                 last_activation: bool = True):
        super().__init__()
        self.conv1 = ConvLayer(cin, cout, kernel_size, strides[0], dilations[0], norm, activation, bias)
        self.conv2 = ConvLayer(cout, cout, kernel_size, strides[1], dilations[1], norm, None, bias)
        stride = strides[0] * strides[1]
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = ConvLayer(cin, cout, 1, stride, 1, norm, None, bias)
        else:
            self.shortcut = nn.Identity()
        self.act = make_activation(activation) if last_activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ConvNet(nn.Module):
    """A stack of conv layers (``plain``) or two-conv residual blocks; ``model.layers`` is an ``nn.Sequential``."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _count(v) -> bool:
    """A positive int, not a bool (``true`` is no depth)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def conv_net(depth: int = 8, width: int = 32, kernel_size: int = 3, activation: str = "linear",
             strides: Sequence[int] | None = None, dilation: int | Sequence[int] = 1, norm: str = "none",
             in_channels: int = 1, bias: bool = False, residual: bool = False,
             last_activation: bool = True) -> ConvNet:
    """Build a plain or residual conv stack whose output is a spatial map.

    ``depth`` always counts the convolutions on the main path. ``strides`` lists the 0-based
    indices of those convs that use stride 2; ``dilation`` is an int or one int per conv.
    Padding is ``dilation * (kernel_size - 1) // 2`` so stride-1 layers keep the size (exactly
    for odd kernels).

    Plain (``residual=False``): ``layers.i`` (i < depth) is conv i followed by its norm and
    activation (``layers.i.conv``, ``layers.i.norm``, ``layers.i.act``).

    Residual (``residual=True``): ``depth`` must be even; ``layers.j`` (j < depth // 2) is a block
    holding convs 2j and 2j+1 (``layers.j.conv1.conv``, ``layers.j.conv2.conv``) with an identity
    skip, or a 1x1 projection ``layers.j.shortcut`` when the stride or width changes (the first
    block always projects from ``in_channels``). Projections do not count towards ``depth``.

    ``last_activation=False`` leaves the activation off the last layer (a linear read-out).
    """
    if not _count(depth):
        raise ModelError(f"depth must be a positive integer; got {depth!r}")
    if depth > limits.MAX_DEPTH:
        raise ModelError(f"depth must be <= {limits.MAX_DEPTH} (a stack that deep takes hours to build and "
                         f"measure); got {depth}")
    if not _count(width):
        raise ModelError(f"width must be a positive integer (channels); got {width!r}")
    if not _count(kernel_size):
        raise ModelError(f"kernel_size must be a positive integer; got {kernel_size!r}")
    if not _count(in_channels):
        raise ModelError(f"in_channels must be a positive integer; got {in_channels!r}")
    stride_at = set(strides or [])
    bad = sorted(i for i in stride_at if not (isinstance(i, int) and 0 <= i < depth))
    if bad:
        raise ModelError(f"strides must be conv indices in 0..{depth - 1}; got {bad}")
    stride_list = [2 if i in stride_at else 1 for i in range(depth)]
    dilations = _per_layer(dilation, depth, "dilation")
    make_activation(activation)  # validate the name early

    layers: list[nn.Module] = []
    if not residual:
        for i in range(depth):
            act = activation if (last_activation or i < depth - 1) else None
            cin = in_channels if i == 0 else width
            layers.append(ConvLayer(cin, width, kernel_size, stride_list[i], dilations[i], norm, act, bias))
        return ConvNet(layers)

    if depth % 2:
        raise ModelError(f"residual_net needs an even depth (two convs per block); got {depth}")
    for j in range(depth // 2):
        i = 2 * j
        cin = in_channels if j == 0 else width
        last = j == depth // 2 - 1
        layers.append(ResidualBlock(cin, width, kernel_size, (stride_list[i], stride_list[i + 1]),
                                    (dilations[i], dilations[i + 1]), norm, activation, bias,
                                    last_activation=last_activation or not last))
    return ConvNet(layers)


@register_model(description="A plain stack of ``depth`` convolutions, each with its norm and activation "
                            "(``layers.i``), same padding.")
def plain_net(depth: int = 8, width: int = 32, kernel_size: int = 3, activation: str = "linear",
              strides: Sequence[int] | None = None, dilation: int | Sequence[int] = 1, norm: str = "none",
              in_channels: int = 1, bias: bool = False, last_activation: bool = True) -> nn.Module:
    """``depth`` conv layers ``layers.0`` ... ``layers.{depth-1}`` (see ``conv_net``)."""
    return conv_net(depth, width, kernel_size, activation, strides, dilation, norm, in_channels, bias,
                    residual=False, last_activation=last_activation)


@register_model(description="``depth // 2`` residual blocks of two convs (identity or 1x1-projection skips), "
                            "``layers.j``; ``depth`` counts main-path convs.")
def residual_net(depth: int = 8, width: int = 32, kernel_size: int = 3, activation: str = "linear",
                 strides: Sequence[int] | None = None, dilation: int | Sequence[int] = 1, norm: str = "none",
                 in_channels: int = 1, bias: bool = False, last_activation: bool = True) -> nn.Module:
    """``depth // 2`` residual blocks of two convs, ``layers.0`` ... (``depth`` counts main-path convs)."""
    return conv_net(depth, width, kernel_size, activation, strides, dilation, norm, in_channels, bias,
                    residual=True, last_activation=last_activation)


class SmallCNN(nn.Module):
    """conv3x3+ReLU blocks (three with stride 2) in ``features``, global ``avgpool``, linear ``fc``."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        c = [scaled(n, width) for n in (32, 64, 128, 128)]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[0], c[1], 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[1], c[2], 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model()
def small_cnn(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    """A small classifier for training experiments (4 convs, 3 of them stride 2, GAP, linear head)."""
    return SmallCNN(num_classes, width, in_channels)
