"""Reference architectures written from scratch with torchvision's module names.

Every factory takes ``width`` (a channel multiplier: ``channels = max(1, round(c * width))``,
applied to every conv and hidden fully connected layer), ``in_channels`` and ``num_classes``.
At ``width=1`` the parameter counts equal torchvision's, so torchvision state_dicts load.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from erf.errors import ModelError
from erf.models.registry import register_model


def scaled(channels: int, width: float) -> int:
    """``max(1, round(channels * width))``: the channel count at a width multiplier."""
    if not width > 0:
        raise ModelError(f"width must be a positive number; got {width!r}")
    return max(1, round(channels * width))


def _torchvision_init(model: nn.Module, linear_std: float | None = None) -> None:
    """torchvision's default init: kaiming-normal (fan_out) convs, BN 1/0, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """torchvision's AlexNet: ``features.0`` ... ``features.12``, ``avgpool`` (6x6), ``classifier``."""

    def __init__(self, width: float = 1.0, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        c = [scaled(n, width) for n in (64, 192, 384, 256, 256)]
        hidden = scaled(4096, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c[0], kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c[0], c[1], kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c[1], c[2], kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c[4] * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class AlexNetCaffe(nn.Module):
    """The original Caffe AlexNet layout (as in receptive-field write-ups), fully convolutional.

    conv1 k11 s4 *no padding*, pool k3 s2, conv2 k5 p2, pool, conv3-5 k3 p1, pool5, then
    ``fc6`` as a 6x6 convolution and ``fc7``/``fc8`` as 1x1 convolutions. There is no adaptive
    pool: the output is an ``(N, num_classes, H', W')`` score map, 1x1 for a 227x227 input,
    the smallest input that fits. Modules are named as in Caffe (``conv1``,
    ``relu1``, ``pool1``, ..., ``pool5``, ``fc6``, ``relu6``, ``drop6``, ``fc7``, ..., ``fc8``),
    so ``fc6`` can be targeted. The 2-GPU channel groups are left out; ``lrn=True`` adds the
    local response norms ``norm1``/``norm2`` after ``relu1``/``relu2``.
    """

    def __init__(self, width: float = 1.0, in_channels: int = 3, num_classes: int = 1000,
                 dropout: float = 0.5, lrn: bool = False):
        super().__init__()
        c = [scaled(n, width) for n in (96, 256, 384, 384, 256)]
        hidden = scaled(4096, width)
        self.conv1 = nn.Conv2d(in_channels, c[0], kernel_size=11, stride=4)
        self.relu1 = nn.ReLU(inplace=True)
        self.norm1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if lrn else nn.Identity()
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.conv2 = nn.Conv2d(c[0], c[1], kernel_size=5, padding=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.norm2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if lrn else nn.Identity()
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.conv3 = nn.Conv2d(c[1], c[2], kernel_size=3, padding=1)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(c[2], c[3], kernel_size=3, padding=1)
        self.relu4 = nn.ReLU(inplace=True)
        self.conv5 = nn.Conv2d(c[3], c[4], kernel_size=3, padding=1)
        self.relu5 = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.fc6 = nn.Conv2d(c[4], hidden, kernel_size=6)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(p=dropout)
        self.fc7 = nn.Conv2d(hidden, hidden, kernel_size=1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(p=dropout)
        self.fc8 = nn.Conv2d(hidden, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            if not isinstance(module, nn.Identity):
                x = module(x)
        return x


@register_model()
def alexnet(width: float = 1.0, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.5) -> nn.Module:
    """AlexNet in torchvision's layout (conv1 padded by 2, adaptive 6x6 avgpool)."""
    return AlexNet(width, in_channels, num_classes, dropout)


@register_model()
def alexnet_caffe(width: float = 1.0, in_channels: int = 3, num_classes: int = 1000,
                  dropout: float = 0.5, lrn: bool = False) -> nn.Module:
    """The classic Caffe AlexNet: unpadded conv1, fc6-fc8 as convolutions (see ``AlexNetCaffe``)."""
    return AlexNetCaffe(width, in_channels, num_classes, dropout, lrn)


# --------------------------------------------------------------------------- VGG

_VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """torchvision's VGG: ``features`` (conv3x3 p1 [+BN] + ReLU, maxpool 2x2), ``avgpool`` 7x7, ``classifier``."""

    def __init__(self, cfg: list[int | str], width: float = 1.0, in_channels: int = 3,
                 num_classes: int = 1000, batch_norm: bool = False, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = scaled(int(v), width)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        hidden = scaled(4096, width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        _torchvision_init(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg_factory(name: str):
    def factory(width: float = 1.0, in_channels: int = 3, num_classes: int = 1000,
                batch_norm: bool = False, dropout: float = 0.5) -> nn.Module:
        return VGG(_VGG_CFGS[name], width, in_channels, num_classes, batch_norm, dropout)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{name.upper()} in torchvision's layout (``batch_norm=True`` for the _bn variant)."
    return register_model(name)(factory)


vgg11 = _vgg_factory("vgg11")
vgg13 = _vgg_factory("vgg13")
vgg16 = _vgg_factory("vgg16")
vgg19 = _vgg_factory("vgg19")


# --------------------------------------------------------------------------- ResNet


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first), ``out += identity``, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 stride_on_1x1: bool = False):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 (x4 expansion). Stride on the 3x3 (torchvision, "v1.5") or on the first 1x1 (v1)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 stride_on_1x1: bool = False):
        super().__init__()
        s1, s3 = (stride, 1) if stride_on_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet: ``conv1`` 7x7 s2, ``bn1``, ``relu``, ``maxpool``, ``layer1-4``, ``avgpool``, ``fc``."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], width: float = 1.0,
                 in_channels: int = 3, num_classes: int = 1000, stride_on_1x1: bool = False):
        super().__init__()
        self.inplanes = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stages.append(self._make_layer(block, scaled(planes, width), blocks, 1 if i == 0 else 2, stride_on_1x1))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        _torchvision_init(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, stride_on_1x1: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, stride_on_1x1)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, stride_on_1x1=stride_on_1x1) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


_RESNETS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


def _resnet_factory(name: str, arch: str, stride_on_1x1: bool, doc: str):
    block, layers = _RESNETS[arch]

    def factory(width: float = 1.0, in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
        return ResNet(block, layers, width, in_channels, num_classes, stride_on_1x1)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return register_model(name)(factory)


resnet18 = _resnet_factory("resnet18", "resnet18", False, "ResNet-18 (BasicBlock) in torchvision's layout.")
resnet34 = _resnet_factory("resnet34", "resnet34", False, "ResNet-34 (BasicBlock) in torchvision's layout.")
resnet50 = _resnet_factory("resnet50", "resnet50", False, "ResNet-50 in torchvision's layout (stride on the 3x3).")
resnet101 = _resnet_factory("resnet101", "resnet101", False, "ResNet-101 in torchvision's layout (stride on the 3x3).")
resnet152 = _resnet_factory("resnet152", "resnet152", False, "ResNet-152 in torchvision's layout (stride on the 3x3).")
resnet50_v1 = _resnet_factory(
    "resnet50_v1", "resnet50", True,
    "ResNet-50 v1 (original Caffe / TF-Slim): stride on the first 1x1 of each bottleneck; same names and weights shapes.",
)
