"""A small U-Net for ``configs/dense_unet.toml`` (model.name = "configs/dense_unet.py:small_unet").

``levels`` encoder blocks (two 3x3 convs with ReLU each), a 2x2 max-pool between them, a
bottleneck block, and as many decoder levels: a 2x2 stride-2 transposed conv, concatenation
with the encoder's skip map, a block. A 1x1 head gives ``classes`` output maps at the input's
size (the input size must be divisible by ``2 ** levels``). The transposed convs make the TRF
depend on the output position (period 2 per level): ``erf rf`` reports ``rf`` (the largest) and
``rf_min``, and every measured unit gets its own exact box.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class SmallUNet(nn.Module):
    """Encoder ``down.i``, bottleneck ``mid``, decoder ``up.i`` (transposed conv) and ``dec.i``, head ``head``."""

    def __init__(self, in_channels: int = 1, classes: int = 2, width: int = 8, levels: int = 2):
        super().__init__()
        chans = [width * 2 ** i for i in range(levels + 1)]
        self.down = nn.ModuleList(_block(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(levels))
        self.pool = nn.MaxPool2d(2)
        self.mid = _block(chans[levels - 1], chans[levels])
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(levels)))
        self.dec = nn.ModuleList(_block(2 * chans[i], chans[i]) for i in reversed(range(levels)))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.mid(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)


def small_unet(in_channels: int = 1, classes: int = 2, width: int = 8, levels: int = 2) -> SmallUNet:
    """The small U-Net (see the module docstring).

    Args:
        in_channels: input channels; ``classes``: output maps (channel 0 is what a dense task trains).
        width: channels of the first level (doubled per level); ``levels``: pooling levels.

    Returns:
        The network.
    """
    return SmallUNet(in_channels, classes, width, levels)
