"""Random probe inputs that depend only on (seed, draw, sample, pixel), never on batching.

Every input value is a counter-based hash of its full-image coordinate and a per-sample key,
turned into a Gaussian (or uniform) number. So sample ``i`` is the same image whatever the
batch size, whether the run is cropped (a crop is exactly the full image's pixels in that
window), resumed or split across processes, and on CPU and CUDA alike. Cost: about a dozen
integer ops per value on the device (about 1 ms per 3x224x224 image on a CPU core, well
under 1% of a ResNet-50 forward/backward), and for a cropped run only the crop is hashed,
where slicing a full-size ``torch.randn`` image would cost the full image every sample.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn as nn

from erf.engine.images import SKIP_NOTE, ImageSource, find_images, first_readable, is_path, preprocessing_for
from erf.errors import ErfError

__all__ = ["NoiseSource", "Source", "hash32", "input_batches", "make_source", "sample_key"]

_M32 = 0xFFFFFFFF

Source = Callable[[int, int, int, int], Optional[torch.Tensor]]  # (seed, draw, first, count) -> batch or None


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xorshift-multiply, Wellons' hash-prospector form) on int64.

    Both multipliers are below 2**31, so ``x * c`` of a 32-bit ``x`` stays below 2**63: no
    int64 overflow on any device, and five elementwise passes fewer than a 32-bit split.
    """
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    x = x ^ (x >> 12)
    x = (x * 0x297A2D39) & _M32
    return x ^ (x >> 15)


def _hash32_int(x: int) -> int:
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def sample_key(seed: int, draw: int, sample: int) -> int:
    """32-bit key of one sample; distinct samples of one (seed, draw) never share a key."""
    s = _hash32_int(_hash32_int(seed & _M32) ^ _hash32_int((seed >> 32) + 0x9E3779B9))
    s = _hash32_int(s ^ _hash32_int(draw + 0x632BE5AB))
    return _hash32_int((sample & _M32) ^ s)  # a bijection of the sample index


class NoiseSource:
    """Deterministic probe images for one input shape (channels, *spatial).

    ``batch(keys, window)`` returns the images for the given sample keys restricted to
    ``window`` (one ``slice`` per spatial axis, in full-image coordinates).
    """

    def __init__(self, kind: str, shape: tuple[int, ...], device, dtype):
        if kind not in ("gaussian", "uniform", "constant"):
            raise ValueError(kind)
        self.kind, self.shape, self.device, self.dtype = kind, tuple(shape), device, dtype
        self._base: dict = {}

    def _positions(self, window: tuple[slice, ...]) -> torch.Tensor:
        key = tuple((s.start, s.stop) for s in window)
        if key not in self._base:
            index = torch.zeros((), dtype=torch.int64, device=self.device)
            for axis, n in enumerate(self.shape):  # row-major index in the full image
                sl = window[axis - 1] if axis else slice(0, n)
                ar = torch.arange(sl.start, sl.stop, dtype=torch.int64, device=self.device)
                index = index.unsqueeze(-1) * n + ar
            self._base = {key: hash32(index)}  # keep one window: runs use one crop
        return self._base[key]

    def batch(self, keys: list[int], window: tuple[slice, ...]) -> torch.Tensor:
        """Images (len(keys), C, *window sizes) on the device in the measurement dtype."""
        size = (len(keys), self.shape[0], *(s.stop - s.start for s in window))
        if self.kind == "constant":
            return torch.ones(size, device=self.device, dtype=self.dtype)
        base = self._positions(window)
        k = torch.tensor(keys, dtype=torch.int64, device=self.device).view(-1, *[1] * base.dim())
        # top 24 bits, u in (0, 1); ndtri's tails reach +-5.3 sigma. (2**24 - 1) + 0.5 rounds up to
        # 2**24 in float32, which made u = 1 and ndtri(u) = +inf (about 1 pixel in 2**24, so ~1% of
        # 3x224x224 images): the clamp moves that one value to the largest float32 below 1 and
        # leaves every other value as it was.
        u = ((hash32(base.unsqueeze(0) ^ k) >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24)
        u = u.clamp_(max=1.0 - 2**-24)
        if self.kind == "gaussian":
            u = torch.special.ndtri(u)
        return u.to(self.dtype)


def make_source(inputs: str | Iterable[Any], shape: tuple[int, ...], dev: torch.device, fdtype: torch.dtype,
                window: tuple[slice, ...] | None, model: nn.Module | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                notes: list[str] | None = None) -> Source:
    """``(seed, draw, first, count) -> batch`` (None when the inputs ran out), cut to ``window``.

    Args:
        inputs: ``'gaussian'``, ``'uniform'``, ``'constant'``, a PATH of images (``erf.engine.images``:
            a folder, a glob, an ``.npy``/``.npz`` array) or an iterable of tensors (read anew by
            each call of ``make_source``: one per weight draw).
        shape: ``(channels, *spatial size)`` of one full-size input.
        dev, fdtype: where and in which dtype the batches are made.
        window: the crop (one slice per spatial axis), or None for the full input.
        model: images only: the network whose own preprocessing (``pretrained_cfg``) normalises them.
        mean, std: images only: the user's normalisation (``MeasureOptions.mean``/``std``), or None.
        notes: images only: the run's notes; which normalisation was used, and (kept up to date as
            the source reads) how many unreadable files were skipped.

    Returns:
        The source.

    Raises:
        ErfError: an unknown kind of input, a PATH with no readable image, statistics that do not fit.
    """
    size = shape[1:]
    win = window or tuple(slice(0, n) for n in size)
    if is_path(inputs):
        return _image_source(str(inputs), shape, dev, fdtype, window, model, mean, std, notes)
    if isinstance(inputs, str):
        noise = NoiseSource(inputs, shape, dev, fdtype)
        return lambda seed, d, first, b: noise.batch([sample_key(seed, d, first + i) for i in range(b)], win)
    batches = input_batches(inputs, shape)
    read = [0]  # items of this draw's iteration consumed so far

    def take(seed: int, d: int, first: int, b: int) -> torch.Tensor | None:
        while read[0] < first:  # samples of other ranks, or measured before a resume: skip them
            skipped = batches(min(first - read[0], 256))
            if skipped is None:
                return None
            read[0] += skipped.shape[0]
        x = batches(b)
        if x is None:
            return None
        read[0] += x.shape[0]
        return x[(slice(None), slice(None), *win)].to(device=dev, dtype=fdtype)
    return take


def _image_source(path: str, shape: tuple[int, ...], dev: torch.device, fdtype: torch.dtype,
                  window: tuple[slice, ...] | None, model: nn.Module | None, mean: Sequence[float] | None,
                  std: Sequence[float] | None, notes: list[str] | None) -> Source:
    """An ``ImageSource`` whose notes (normalisation, skipped files) go to ``notes``."""
    images = find_images(path)
    first_readable(images, shape[0])
    pre, pre_note = preprocessing_for(model, shape[0], mean, std)
    source = ImageSource(images, shape, pre, dev, fdtype, window)
    if notes is None:
        return source
    for line in (f"inputs: {images.describe()}, sampled at random with the seed (class-balanced)", pre_note):
        if line not in notes:
            notes.append(line)

    def take(seed: int, d: int, first: int, b: int) -> torch.Tensor | None:
        x = source(seed, d, first, b)
        line = source.skip_note()
        if line is not None:
            old = [i for i, n in enumerate(notes) if n.startswith(SKIP_NOTE)]
            if old:
                notes[old[0]] = line
            else:
                notes.append(line)
        return x
    return take


def input_batches(inputs: Iterable[Any], shape: tuple[int, ...]) -> Callable[[int], torch.Tensor | None]:
    """``take(b) -> (b', C, *size) tensor`` from an iterable of (C, *size) / (N, C, *size) tensors.

    Raises:
        ErfError: (when taking) a tensor of another shape.
    """
    it = iter(inputs)
    pending: list[torch.Tensor] = []

    def take(b: int) -> torch.Tensor | None:
        while sum(t.shape[0] for t in pending) < b:
            try:
                t = torch.as_tensor(next(it))
            except StopIteration:
                break
            if tuple(t.shape) == tuple(shape):
                t = t.unsqueeze(0)
            if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
                raise ErfError(f"an input tensor has shape {list(t.shape)}; expected {list(shape)} or "
                               f"[N, {', '.join(map(str, shape))}] (channels, then the input size)")
            pending.append(t)
        if not pending:
            return None
        x = torch.cat(pending)
        pending.clear()
        if x.shape[0] > b:
            pending.append(x[b:])
        return x[:b]
    return take
