"""Training tasks for ERF-through-training experiments: generated tasks, and local images as a task.

Generated tasks (``make_task``) are drawn in batches on the chosen device from a
``torch.Generator``; nothing is read from disk. A batch is a pure function of the generator's
state, so a seed fixes the data stream (CPU and CUDA generators give different, but each
reproducible, streams).

``context``
    Dotted-bar orientation, ``orientations`` classes (default 4: 0, 45, 90, 135 degrees).
    Each image holds one bar made of ``dots`` (4) Gaussian dots (std ``dot_sigma`` = 1 px,
    amplitude U(0.6, 1)) spaced ``spacing`` (8) px apart along the bar's direction, centred at
    a uniform random point, each dot then jittered by U(-0.5, 0.5) px per axis (so sub-pixel
    phases, which differ between axis-aligned and diagonal bars, carry no label), plus
    ``distractors`` (1) dots of the same kind at uniform random positions, plus Gaussian pixel
    noise (std ``noise`` = 0.1). The label is the bar's orientation. Positions wrap around the
    image (a torus), so every dot's position is uniform whatever the class and one dot looks
    the same in every class: only the *relative* position of dots ``spacing`` px apart carries
    the label. A dot is visible to about 2.5 * dot_sigma px from its centre, so a unit must
    span the ``spacing - 5 * dot_sigma`` (3) px gap between two dots to see both, and about
    ``spacing + 5 * dot_sigma`` (13) px to see both whole; nets with receptive fields of 3 or 5
    px stay at chance (1 / orientations), ``small_cnn`` (RF 17) learns it (see the tests).

``quadrant``
    Which quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) holds the bright
    blob (std ``blob_sigma`` = 1.5 px, amplitude 1.5, uniform in its quadrant at least
    ``2 * blob_sigma`` px from the quadrant's edges), with ``distractors`` (2) dim blobs
    (amplitude 0.5) anywhere and pixel noise (std ``noise`` = 0.2). The label is an absolute
    position, so the network must relate the blob to the image border (seen through the
    zero padding) or centre: a receptive field of about half the image.

``segmentation`` (dense)
    ``blobs`` (3) small dots (std 1 px, amplitude U(0.6, 1)) at uniform positions plus noise
    (std ``noise`` = 0.2). The target, shape (N, 1, H, W) in {0, 1}, is 1 at every pixel within
    ``radius`` (default ``max(2, size // 8)``) px of a dot centre: an output unit needs a
    receptive field of at least ``2 * radius + 1`` px to get it right.

``shift`` (dense)
    White Gaussian noise input; the target (N, 1, H, W) is input channel 0 shifted so that
    ``target[p] = x[p + offset]`` (zero outside the image), ``offset = (dy, dx)`` (default
    ``(0, size // 8)``). A trained net's ERF moves to the offset.

``images``
    A local folder of images (subfolders = classes) or an ``.npz`` with ``x`` and ``y``:
    a seeded split into train and held-out eval images (loaded by ``erf.training.images.load_dataset``).

Classification losses are cross-entropy on ``(N, classes)`` logits, or on the global average
of the first ``classes`` channels of a spatial output ``(N, C, h, w)``. Dense losses are the
mean squared error between channel 0 of a spatial output and the target (so ReLU, sigmoid and
linear read-outs all work); a pixel counts as correct when both sides agree about ``> 0.5``.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from erf.errors import ErfError
from erf.training.images import ImageData, check_channels, image_size, load_dataset
from erf.training.seeds import make_generator, mix_seed

__all__ = ["Task", "ContextTask", "QuadrantTask", "SegmentationTask", "ShiftTask", "ImageTask", "TASKS",
           "list_tasks", "make_task"]


# --------------------------------------------------------------------------- drawing helpers


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def _balanced_labels(n: int, classes: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` labels, each class ``n // classes`` or one more times, in random order."""
    start = int(torch.randint(classes, (1,), generator=gen, device=gen.device).item())
    labels = (torch.arange(n, device=gen.device) + start) % classes
    return labels[torch.randperm(n, generator=gen, device=gen.device)]


def _dots(centres: torch.Tensor, amps: torch.Tensor, sigma: float, hw: tuple[int, int],
          wrap: bool) -> torch.Tensor:
    """Sum of Gaussian dots: centres (N, K, 2) as (y, x), amplitudes (N, K) -> (N, H, W).

    With ``wrap`` the distance is measured on the torus (dots wrap around the edges).
    """
    h, w = hw
    dev = centres.device
    yy = torch.arange(h, device=dev, dtype=centres.dtype).view(1, 1, h, 1)
    xx = torch.arange(w, device=dev, dtype=centres.dtype).view(1, 1, 1, w)
    dy = yy - centres[..., 0, None, None]
    dx = xx - centres[..., 1, None, None]
    if wrap:
        dy = torch.remainder(dy + h / 2, h) - h / 2
        dx = torch.remainder(dx + w / 2, w) - w / 2
    g = torch.exp(-(dy * dy + dx * dx) / (2.0 * sigma * sigma))
    return (amps[..., None, None] * g).sum(1)


def _to_channels(signal: torch.Tensor, channels: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """(N, H, W) signal -> (N, C, H, W): a random positive colour per image (C=3) plus pixel noise."""
    n, h, w = signal.shape
    if channels == 1:
        colour = torch.ones(n, 1, device=gen.device)
    else:
        colour = 0.5 + 0.5 * _rand(gen, n, channels)
    x = signal[:, None] * colour[:, :, None, None]
    if noise > 0:
        x = x + noise * torch.randn((n, channels, h, w), generator=gen, device=gen.device)
    return x


# --------------------------------------------------------------------------- tasks


@dataclass
class Task:
    """Base class: a named task with ``batch(n, generator, device) -> (x, y)``.

    ``kind`` is ``"classification"`` (``y``: int64 labels, ``num_classes`` set) or ``"dense"``
    (``y``: float (N, 1, H, W) targets, ``num_classes`` None, ``dense`` True).
    """

    name: str
    size: tuple[int, int]
    channels: int
    seed: int
    kind: str = "classification"
    num_classes: int | None = None
    params: dict = field(default_factory=dict)

    summary = ""  # one sentence per task class, formatted with ``params``

    @property
    def dense(self) -> bool:
        """True for a per-pixel (dense) target."""
        return self.kind == "dense"

    @property
    def description(self) -> str:
        """``name: what the task is (kind, C x H x W, parameters)``."""
        p = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "binary")
        shape = f"{self.channels}x{self.size[0]}x{self.size[1]}"
        return f"{self.name}: {self.summary.format(**self.params)} ({self.kind}, {shape}; {p})"

    def _draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def batch(self, n: int, generator: torch.Generator | None,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` examples drawn with ``generator`` on the generator's device, returned on ``device``.

        Give a generator on the training device (``make_generator(seed, device)``) to generate
        there. ``None`` draws a seed from torch's global RNG (reproducible after ``torch.manual_seed``).

        Args:
            n: the batch size.
            generator: the data stream, or None.
            device: where the batch is returned (default: where it was drawn).

        Returns:
            ``(x, y)``: float32 images (N, C, H, W) and labels or dense targets.

        Raises:
            ErfError: ``n`` < 1.
        """
        if int(n) < 1:
            raise ErfError(f"batch size must be >= 1; got {n!r}")
        if generator is None:
            seed = int(torch.randint(2 ** 62, (1,)).item())
            generator = make_generator(seed, device if device is not None else "cpu")
        x, y = self._draw(int(n), generator)
        x = x.float()
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def eval_set(self, n: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed held-out set of ``n`` examples: the ``eval`` stream of the task's seed, in chunks of 256.

        Args:
            n: the number of examples.
            device: where they are drawn and returned (default CPU).

        Returns:
            ``(x, y)`` as ``batch``.
        """
        dev = torch.device(device) if device is not None else torch.device("cpu")
        gen = make_generator(mix_seed(self.seed, "eval"), dev)
        parts = [self.batch(min(256, n - i), gen, dev) for i in range(0, n, 256)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def probe_images(self, n: int) -> torch.Tensor:
        """``n`` held-out images to probe a network with (the ``eval_set`` stream, without labels), on the CPU.

        Args:
            n: how many.

        Returns:
            ``(n, C, *size)`` float32 images, at the scale the networks are trained on.
        """
        return self.eval_set(n)[0].float()

    # ----- loss and accuracy on a model output

    def _prepare(self, output: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dense:
            if output.dim() != 4:
                raise ErfError(f"task {self.name!r} is dense: the model must output a (N, C, H, W) map, "
                               f"got shape {tuple(output.shape)}; use plain_net/residual_net or erf.training.DenseHead")
            target = y.to(output.dtype)
            if target.shape[-2:] != output.shape[-2:]:
                target = F.adaptive_avg_pool2d(target, output.shape[-2:])
            return output[:, :1], target
        k = int(self.num_classes)
        if output.dim() == 4:
            output = output.mean(dim=(2, 3))
        if output.dim() != 2 or output.shape[1] < k:
            raise ErfError(f"task {self.name!r} has {k} classes: the model must output (N, >={k}) logits or a "
                           f"(N, >={k}, h, w) map, got shape {tuple(output.shape)}; build it with num_classes={k}")
        return output[:, :k], y

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (classification) or per-pixel mean squared error on channel 0 (dense).

        Args:
            output: the model's output: logits (N, K), a map (N, C, h, w).
            y: the batch's labels or targets.

        Returns:
            The mean loss (a 0-d tensor).

        Raises:
            ErfError: an output shape that does not fit the task.
        """
        out, target = self._prepare(output, y)
        if self.dense:
            return F.mse_loss(out, target)
        return F.cross_entropy(out, target)

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        """(number correct as a 0-d tensor, number of predictions); None for a regression target.

        Args:
            output: the model's output.
            y: the batch's labels or targets.

        Returns:
            ``(correct, total)``, or None for a regression target.

        Raises:
            ErfError: an output shape that does not fit the task.
        """
        out, target = self._prepare(output, y)
        if self.dense:
            if not self.params.get("binary", True):
                return None
            return ((out > 0.5) == (target > 0.5)).sum(), out.numel()
        return (out.argmax(1) == target).sum(), target.numel()


class ContextTask(Task):
    """Dotted-bar orientation on a torus: only dots ``spacing`` px apart, seen together, give the label."""

    summary = ("orientation (one of {orientations}) of a bar of {dots} dots {spacing:g} px apart at a random "
               "place on a torus, plus {distractors} stray dots; needs a receptive field spanning two dots")

    def _draw(self, n, gen):
        p = self.params
        k, dots, spacing = p["orientations"], p["dots"], float(p["spacing"])
        h, w = self.size
        labels = _balanced_labels(n, k, gen)
        angle = labels.float() * (math.pi / k)
        direction = torch.stack([-torch.sin(angle), torch.cos(angle)], 1)  # (y, x); 0 = horizontal
        centre = _rand(gen, n, 2) * torch.tensor([h, w], device=gen.device, dtype=torch.float32)
        steps = (torch.arange(dots, device=gen.device, dtype=torch.float32) - (dots - 1) / 2) * spacing
        bar = centre[:, None, :] + steps[None, :, None] * direction[:, None, :]
        bar = bar + _rand(gen, n, dots, 2) - 0.5  # independent sub-pixel phases: the grid tells nothing
        extra = _rand(gen, n, p["distractors"], 2) * torch.tensor([h, w], device=gen.device, dtype=torch.float32)
        centres = torch.cat([bar, extra], 1)
        amps = 0.6 + 0.4 * _rand(gen, n, centres.shape[1])
        signal = _dots(centres, amps, p["dot_sigma"], (h, w), wrap=True)
        return _to_channels(signal, self.channels, p["noise"], gen), labels


class QuadrantTask(Task):
    """Which quadrant holds the bright blob (0 TL, 1 TR, 2 BL, 3 BR); dim distractor blobs anywhere."""

    summary = ("which quadrant (0 TL, 1 TR, 2 BL, 3 BR) holds the bright blob, with {distractors} dim blobs "
               "anywhere; needs the blob's position relative to the border or centre")

    def _draw(self, n, gen):
        p = self.params
        h, w = self.size
        sigma = float(p["blob_sigma"])
        labels = _balanced_labels(n, 4, gen)
        margin = 2 * sigma
        half = torch.tensor([h / 2, w / 2], device=gen.device)
        span = (half - 2 * margin).clamp(min=0)
        corner = torch.stack([(labels // 2).float(), (labels % 2).float()], 1) * half
        bright = corner + margin + _rand(gen, n, 2) * span
        dim = _rand(gen, n, p["distractors"], 2) * torch.tensor([h, w], device=gen.device, dtype=torch.float32)
        centres = torch.cat([bright[:, None], dim], 1)
        amps = torch.full((n, centres.shape[1]), 0.5, device=gen.device)
        amps[:, 0] = 1.5
        signal = _dots(centres, amps, sigma, (h, w), wrap=False)
        return _to_channels(signal, self.channels, p["noise"], gen), labels


class SegmentationTask(Task):
    """Per-pixel target: 1 within ``radius`` px of a dot centre (needs RF >= 2 * radius + 1)."""

    summary = ("per pixel, is one of {blobs} dots within {radius:g} px; needs a receptive field of at "
               "least 2 * {radius:g} + 1 px")

    def _draw(self, n, gen):
        p = self.params
        h, w = self.size
        centres = _rand(gen, n, p["blobs"], 2) * torch.tensor([h, w], device=gen.device, dtype=torch.float32)
        amps = 0.6 + 0.4 * _rand(gen, n, p["blobs"])
        signal = _dots(centres, amps, 1.0, (h, w), wrap=False)
        yy = torch.arange(h, device=gen.device, dtype=torch.float32).view(1, 1, h, 1)
        xx = torch.arange(w, device=gen.device, dtype=torch.float32).view(1, 1, 1, w)
        d2 = (yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2
        target = (d2 <= float(p["radius"]) ** 2).any(1, keepdim=True).float()
        return _to_channels(signal, self.channels, p["noise"], gen), target


class ShiftTask(Task):
    """Regression: ``target[p] = x[0, p + offset]`` (zero outside); white-noise input."""

    summary = "per pixel, regress input channel 0 at offset (dy, dx) = {offset} from white noise"

    def _draw(self, n, gen):
        h, w = self.size
        dy, dx = self.params["offset"]
        x = torch.randn((n, self.channels, h, w), generator=gen, device=gen.device)
        pad = (max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0))
        padded = F.pad(x[:, :1], pad)
        target = padded[:, :, max(dy, 0):max(dy, 0) + h, max(dx, 0):max(dx, 0) + w]
        return x, target.contiguous()


class ImageTask(Task):
    """Classification of local images: a seeded train / held-out split of ``load_dataset``'s images."""

    summary = "classify the {images} images of {path} ({eval} held out for eval)"

    data: "ImageData" = None  # type: ignore[assignment]
    train_idx: torch.Tensor = None  # type: ignore[assignment]
    eval_idx: torch.Tensor = None  # type: ignore[assignment]

    def _draw(self, n, gen):
        pick = torch.randint(len(self.train_idx), (n,), generator=gen, device=gen.device).cpu()
        idx = self.train_idx[pick]
        return self.data.x[idx].to(gen.device), self.data.y[idx].to(gen.device)

    def eval_set(self, n: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` held-out images (the seeded split), on ``device`` (default CPU)."""
        idx = self.eval_idx[:n]
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return self.data.x[idx].to(dev), self.data.y[idx].to(dev)


# --------------------------------------------------------------------------- task factory


def _int_param(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ErfError(f"task parameter {name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _float_param(name: str, value, low: float, strict: bool = False) -> float:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        raise ErfError(f"task parameter {name} must be a number {'>' if strict else '>='} {low}; got {value!r}")
    return float(value)


def _context(size, channels, seed, orientations=4, dots=4, spacing=8, distractors=1, dot_sigma=1.0,
             noise=0.1):
    params = dict(orientations=_int_param("orientations", orientations, 2), dots=_int_param("dots", dots, 2),
                  spacing=_float_param("spacing", spacing, 0, strict=True),
                  distractors=_int_param("distractors", distractors, 0),
                  dot_sigma=_float_param("dot_sigma", dot_sigma, 0, strict=True),
                  noise=_float_param("noise", noise, 0))
    return ContextTask("context", size, channels, seed, "classification", params["orientations"], params)


def _quadrant(size, channels, seed, distractors=2, blob_sigma=1.5, noise=0.2):
    params = dict(distractors=_int_param("distractors", distractors, 0),
                  blob_sigma=_float_param("blob_sigma", blob_sigma, 0, strict=True),
                  noise=_float_param("noise", noise, 0))
    return QuadrantTask("quadrant", size, channels, seed, "classification", 4, params)


def _segmentation(size, channels, seed, blobs=3, radius=None, noise=0.2):
    radius = max(2, min(size) // 8) if radius is None else radius
    params = dict(blobs=_int_param("blobs", blobs, 1), radius=_float_param("radius", radius, 0, strict=True),
                  noise=_float_param("noise", noise, 0), binary=True)
    return SegmentationTask("segmentation", size, channels, seed, "dense", None, params)


def _shift(size, channels, seed, offset=None):
    offset = (0, size[1] // 8) if offset is None else offset
    try:
        dy, dx = (int(v) for v in offset)
    except (TypeError, ValueError):
        raise ErfError(f"task parameter offset must be (dy, dx) integers; got {offset!r}") from None
    if abs(dy) >= size[0] or abs(dx) >= size[1]:
        raise ErfError(f"task parameter offset {offset!r} must be smaller than the image {size}")
    return ShiftTask("shift", size, channels, seed, "dense", None, dict(offset=(dy, dx), binary=False))


def _images(size, channels, seed, path=None, count=None, eval_fraction=0.2):
    if path is None:
        raise ErfError("task 'images' needs path=FOLDER_OR_NPZ (a folder of images, subfolders = classes, "
                       "or an .npz with x and y)")
    frac = _float_param("eval_fraction", eval_fraction, 0, strict=True)
    if frac >= 1:
        raise ErfError(f"task parameter eval_fraction must be in (0, 1); got {eval_fraction!r}")
    data = load_dataset(path, size, count=count, seed=seed, channels=channels)
    if data.y is None or len(data.classes) < 2:
        raise ErfError(f"{path} has no labels to train on (one class or no y); put the images in one "
                       "subfolder per class, or save the .npz with y=labels")
    n = len(data.x)
    n_eval = max(1, int(round(frac * n)))
    if n - n_eval < 1:
        raise ErfError(f"{path} has {n} images: too few to split into train and eval; add images")
    order = torch.randperm(n, generator=make_generator(mix_seed(seed, "split")))
    task = ImageTask("images", size, channels, seed, "classification", len(data.classes),
                     dict(path=str(path), images=n, eval=n_eval))
    task.data, task.eval_idx, task.train_idx = data, order[:n_eval], order[n_eval:]
    return task


#: Task name -> factory ``(size (H, W), channels, seed, **params) -> Task``.
TASKS: dict[str, Callable[..., Task]] = {
    "context": _context,
    "quadrant": _quadrant,
    "segmentation": _segmentation,
    "shift": _shift,
    "images": _images,
}


def list_tasks() -> list[str]:
    """Names accepted by ``make_task``.

    Returns:
        The names of ``TASKS``.
    """
    return list(TASKS)


def make_task(name: str, size: int | Sequence[int] = 64, channels: int = 1, seed: int = 0, **kw: Any) -> Task:
    """Build task ``name`` (see the module docstring) for ``channels`` x ``size`` images.

    ``seed`` fixes the held-out eval set (``task.eval_set``) and, for ``images``, the split.
    ``kw`` are the task's parameters. A ``name`` that is an existing folder or ``.npz`` file
    means ``images`` with that path.

    Args:
        name: a name of ``TASKS``, or an image folder / ``.npz`` path.
        size: image size, one int or ``(H, W)`` (at least 8).
        channels: 1 or 3.
        seed: the task's seed (eval set, image split).
        **kw: the task's parameters.

    Returns:
        The ``Task``.

    Raises:
        ErfError: an unknown task or parameter, or a bad size, channel count, seed or parameter value.
    """
    key = str(name)
    if key not in TASKS and (key.endswith(".npz") or os.path.isdir(key)):
        kw = {**kw, "path": key}
        key = "images"
    if key not in TASKS:
        raise ErfError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} (or give an image folder / .npz)")
    hw = image_size(size)
    channels = check_channels(channels)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ErfError(f"seed must be an integer; got {seed!r}")
    try:
        return TASKS[key](hw, channels, int(seed), **kw)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        accepted = [p for p in inspect.signature(TASKS[key]).parameters if p not in ("size", "channels", "seed")]
        bad = [k for k in kw if k not in accepted]
        raise ErfError(f"task {key!r} does not accept parameter {bad[0] if bad else '?'!r}; "
                       f"accepted: {', '.join(accepted) or '(none)'}") from None

