"""Real images as probe inputs: find them, pick them at random with the seed, decode and preprocess them.

``inputs`` may name a PATH: an image folder (recursive; an ImageFolder layout of class
subfolders, or flat), a glob (``val/*/*.JPEG``; the parent folder is the class), or an
``.npy``/``.npz`` array of shape (N, C, H, W), (N, H, W, C) or (N, H, W) (uint8 in 0..255,
else floats in 0..1; an ``.npz`` holds it as ``x`` or as its only array).

Which image is sample ``i`` depends on the seed alone (``ImageSet.order``): the files are
shuffled within each class and the classes taken in turn (each round in a shuffled class
order), so the first ``k * classes`` samples hold ``k`` images of every class, never the first
files of a folder. Sample ``i`` is the ``i``-th *readable* image of that order, so every
process, batch size and resume sees the same images; unreadable files are skipped and
counted (``ImageSource.skipped``).

Each image is decoded with Pillow, converted to the model's channels (RGB or luma), resized
so it covers the input size divided by the crop fraction (1 unless the model's preprocessing
gives one: the shorter side becomes the input size) and centre-cropped, then normalised with
``Preprocessing`` (``preprocessing_for``): ``--mean/--std`` when given, else the model's own
statistics (timm's ``pretrained_cfg``/``default_cfg``; a torchvision model carries its weights'
transforms there when loaded with weights), else ImageNet's, with a note.
"""

from __future__ import annotations

import atexit
import fnmatch
import os
import shutil
import stat
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from erf.errors import ErfError

__all__ = ["IMAGE_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD", "SKIP_NOTE", "ImageSet", "ImageSource", "Preprocessing",
           "array_image", "decode_image", "find_images", "first_readable", "fit_image", "generate_images", "is_path",
           "model_preprocessing", "preprocessing_for"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GLOB_CHARS = "*?["
_LUMA = (0.299, 0.587, 0.114)
SKIP_NOTE = "unreadable image files skipped:"  # how the note counting skipped files starts


@dataclass
class ImageSet:
    """The images a PATH names: files with their class, or one array.

    Attributes:
        path: the PATH as given.
        files: image files, sorted (empty for an array).
        labels: class index of each file (of each array row: 0).
        classes: class names (subfolders; ``"."`` for a flat folder or an array).
        array: the (N, C, H, W) array of an ``.npy``/``.npz`` PATH, else None.
    """

    path: str
    files: list[str]
    labels: list[int]
    classes: list[str]
    array: np.ndarray | None = None
    readable: bool = False  # one file is known to decode (``first_readable``)
    _orders: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.files) if self.array is None else int(self.array.shape[0])

    def order(self, seed: int) -> list[int]:
        """The seeded, class-balanced order of the images (indices into ``files`` or the array rows).

        Args:
            seed: the measurement's seed (the same in every process).

        Returns:
            Every image once: classes taken in turn, each round in a shuffled class order.
        """
        if seed not in self._orders:
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, 0x1A6E5])
            by_class = [[] for _ in self.classes]
            for i, c in enumerate(self.labels):
                by_class[c].append(i)
            pools = [[members[j] for j in rng.permutation(len(members))] for members in by_class]
            out: list[int] = []
            for r in range(max((len(p) for p in pools), default=0)):
                for c in rng.permutation(len(pools)):
                    if r < len(pools[c]):
                        out.append(pools[c][r])
            self._orders = {seed: out}  # one seed per run: keep one order
        return self._orders[seed]

    def describe(self) -> str:
        """``'N images in K classes from PATH'``."""
        kind = "array rows" if self.array is not None else "image files"
        cls = f" in {len(self.classes)} classes" if len(self.classes) > 1 else ""
        return f"{len(self)} {kind}{cls} from {self.path}"


def is_path(inputs: Any) -> bool:
    """True when ``inputs`` is a string naming images rather than a noise kind."""
    return isinstance(inputs, (str, os.PathLike)) and str(inputs) not in ("gaussian", "uniform", "constant")


_CACHE: dict[tuple, ImageSet] = {}


def find_images(path: str | os.PathLike) -> ImageSet:
    """The images ``path`` names (a folder, a glob, an ``.npy``/``.npz`` file); listed once per process.

    Args:
        path: the PATH.

    Returns:
        The ``ImageSet``.

    Raises:
        ErfError: nothing there, no image files, or an array of the wrong shape.
    """
    path = os.fspath(path)
    stamp = os.path.getmtime(path) if os.path.exists(path) else None
    key = (path, stamp)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _list(path)
    return _CACHE[key]


def _list(path: str) -> ImageSet:
    if path.lower().endswith((".npy", ".npz")) and os.path.isfile(path):
        x = _read_array(path)
        return ImageSet(path, [], [0] * int(x.shape[0]), ["."], array=x)
    if os.path.isdir(path):
        _not_a_system_tree(path, path)
        files = _walk(path, None)
        names = [os.path.relpath(f, path).split(os.sep)[0] if os.sep in os.path.relpath(f, path) else "."
                 for f in files]
    elif any(ch in path for ch in _GLOB_CHARS):
        base, pattern = _split_glob(path)
        _not_a_system_tree(base, path)
        files = _walk(base, pattern) if os.path.isdir(base) else []
        names = [os.path.dirname(f) for f in files]
    else:
        raise ErfError(f"inputs {path!r} is not gaussian, uniform or constant, and no such file or folder exists; "
                       "give a noise kind, an image folder, a glob or an .npy/.npz array")
    if not files:
        raise ErfError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {path!r}; point --inputs at a folder "
                       "of images, a glob or an .npy/.npz array")
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return ImageSet(path, files, [index[n] for n in names], classes)


MAX_IMAGE_ENTRIES = 10_000_000  # files and folders looked at when listing the images of a PATH
MAX_IMAGE_PIXELS = 2**26  # pixels of one image file (67 M, 8192 x 8192): larger ones are skipped, unread
_SYSTEM_TREES = ("/proc", "/sys", "/dev")


def _not_a_system_tree(folder: str, path: str) -> None:
    """Refuse image folders under /proc, /sys, /dev (endless or blocking pseudo-files)."""
    real = os.path.realpath(folder)
    for tree in _SYSTEM_TREES:
        if real == tree or real.startswith(tree + "/"):
            raise ErfError(f"inputs {path!r} is under {tree}, a system folder, not images; point --inputs at a "
                           "folder of images, a glob or an .npy/.npz array")


def _split_glob(path: str) -> tuple[str, list[str]]:
    """``a/b/*/x*.png`` -> (``a/b``, ``["*", "x*.png"]``): the folder before the first pattern, and the rest."""
    parts = path.split(os.sep)
    for i, part in enumerate(parts):
        if any(ch in part for ch in _GLOB_CHARS):
            base = os.sep.join(parts[:i]) or ("/" if path.startswith(os.sep) else ".")
            return base, [p for p in parts[i:] if p]
    return path, []


def _matches(parts: list[str], pattern: list[str]) -> bool:
    """Whether relative path components match glob components (``**``: any number of folders)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return _matches(parts, pattern[1:]) or (bool(parts) and _matches(parts[1:], pattern))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _walk(root: str, pattern: list[str] | None) -> list[str]:
    """The image files below ``root`` (matching ``pattern`` when given), sorted.

    Hidden names are skipped; only regular files are taken (a FIFO or device named ``a.png`` is
    never opened); links to folders are followed only when they stay inside ``root`` and were not
    seen before (no loops); at most ``MAX_IMAGE_ENTRIES`` entries are looked at.

    Raises:
        ErfError: more entries than the limit.
    """
    real_root = os.path.realpath(root)
    depth = None if pattern is None or "**" in pattern else len(pattern)
    seen, files, entries = set(), [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel = os.path.relpath(dirpath, root)
        level = 0 if rel == "." else rel.count(os.sep) + 1
        entries += len(dirnames) + len(filenames)
        if entries > MAX_IMAGE_ENTRIES:
            raise ErfError(f"more than {MAX_IMAGE_ENTRIES} files and folders under {root!r}; point --inputs at a "
                           "smaller folder or a narrower glob")
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # a loop of links, or a second way into a folder
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith(".") or (depth is not None and level + 1 >= depth):
                continue
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not (target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)):
                    continue  # a link out of the folder
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if f.startswith(".") or not f.lower().endswith(IMAGE_SUFFIXES):
                continue
            full = os.path.join(dirpath, f)
            if pattern is not None and not _matches(([] if rel == "." else rel.split(os.sep)) + [f], pattern):
                continue
            try:
                if stat.S_ISREG(os.stat(full).st_mode):
                    files.append(full)
            except OSError:
                continue
    return files


def _read_array(path: str) -> np.ndarray:
    try:
        if path.lower().endswith(".npy"):
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.keys())
                if "x" not in keys and len(keys) != 1:
                    raise ErfError(f"{path} holds {', '.join(keys) or 'no arrays'}; store the images as 'x' "
                                   "(numpy.savez(path, x=images))")
                x = data["x" if "x" in keys else keys[0]]
    except ErfError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise ErfError(f"cannot read {path} as a numpy array ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:120]}); save it with numpy.save / numpy.savez") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 2, 3, 4) and x.shape[-1] in (1, 2, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 2, 3, 4) or x.shape[0] < 1:
        raise ErfError(f"{path}: images must be (N, C, H, W), (N, H, W, C) or (N, H, W) with 1, 3 or 4 channels; "
                       f"got shape {list(x.shape)}")
    if not (x.dtype == np.bool_ or np.issubdtype(x.dtype, np.number)) or np.issubdtype(x.dtype, np.complexfloating):
        raise ErfError(f"{path}: images must be real numbers; got dtype {x.dtype}")
    if 0 in x.shape:
        raise ErfError(f"{path}: the images are empty (shape {list(x.shape)}); give at least one image of at least "
                       "1x1 pixels")
    if np.issubdtype(x.dtype, np.floating):
        bad = sum(int(np.count_nonzero(~np.isfinite(x[i:i + 256]))) for i in range(0, x.shape[0], 256))
        if bad:
            raise ErfError(f"{path}: {bad} values are NaN or infinite; the ERF of such inputs means nothing: "
                           "replace or drop those images")
    return x


def decode_image(path: str, channels: int) -> torch.Tensor:
    """One image file as a (channels, H, W) float32 tensor in 0..1.

    Args:
        path: the file.
        channels: 1 (luma) or 3 (RGB).

    Returns:
        The image.

    Raises:
        OSError, ValueError: a file Pillow cannot decode (the caller skips it).
    """
    from PIL import Image  # lazy: Pillow (installed with matplotlib) is only needed for image inputs

    if not stat.S_ISREG(os.stat(path).st_mode):  # never open a FIFO or a device: it may block forever
        raise ValueError("not a regular file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
        try:
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ValueError(f"{w}x{h} pixels, more than {MAX_IMAGE_PIXELS} (not decoded)")
                img = img.convert("L" if channels == 1 else "RGB")
                arr = np.asarray(img, dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise ValueError(" ".join(str(exc).split())[:100]) from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if min(arr.shape[:2]) < 1:
        raise ValueError("empty image")
    return torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32) / 255.0)


def array_image(x: np.ndarray, i: int, channels: int) -> torch.Tensor:
    """Row ``i`` of an (N, C, H, W) array as a (channels, H, W) float32 tensor (uint8 / 255, else as stored)."""
    row = np.asarray(x[i])
    img = torch.from_numpy(row.astype(np.float32) / (255.0 if row.dtype == np.uint8 else 1.0))
    if img.shape[0] in (2, 4):  # drop alpha
        img = img[:-1]
    if img.shape[0] == channels:
        return img
    if channels == 1:
        return (img * torch.tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)
    return img.expand(channels, -1, -1)


def fit_image(img: torch.Tensor, size: Sequence[int], crop_pct: float = 1.0) -> torch.Tensor:
    """Resize (C, h, w) so it covers ``size / crop_pct`` keeping the aspect ratio, then centre-crop to ``size``.

    Args:
        img: the image.
        size: ``(H, W)``.
        crop_pct: the share of the resized image kept (timm's ``crop_pct``; 1: the shorter side
            becomes the input size).

    Returns:
        The (C, H, W) image.
    """
    h, w = img.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    scale = max(th / h, tw / w) / crop_pct
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    top, left = (nh - th) // 2, (nw - tw) // 2
    return img[:, top:top + th, left:left + tw]


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel normalisation ``(x - mean) / std`` and the centre-crop fraction, with where they come from."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    origin: str = "ImageNet statistics"


def model_preprocessing(model: nn.Module | None) -> Preprocessing | None:
    """The model's own preprocessing: a ``pretrained_cfg`` / ``default_cfg`` dict with ``mean`` and ``std``.

    timm models carry one; a torchvision model loaded with weights carries its transforms'
    ``mean``/``std``/crop there (set by ``erf.models.pretrained``, with an ``origin`` naming them).

    Args:
        model: the network, or None.

    Returns:
        Its ``Preprocessing``, or None when it has none.
    """
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and cfg.get("mean") is not None and cfg.get("std") is not None:
            crop = cfg.get("crop_pct") or 1.0
            return Preprocessing(tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]),
                                 float(crop), str(cfg.get("origin") or f"the model's {attr}"))
    return None


def preprocessing_for(model: nn.Module | None, channels: int, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None) -> tuple[Preprocessing, str]:
    """The normalisation of image inputs: ``mean``/``std`` when given, else the model's, else ImageNet's.

    Args:
        model: the network (its ``pretrained_cfg``), or None.
        channels: the model's input channels.
        mean, std: the user's statistics (``MeasureOptions.mean``/``std``), or None.

    Returns:
        ``(preprocessing, note)``; the note says which statistics were used.

    Raises:
        ErfError: statistics whose length is neither 1 nor ``channels``, or a std <= 0.
    """
    own = model_preprocessing(model)
    if mean is not None or std is not None:
        base = own or Preprocessing(IMAGENET_MEAN, IMAGENET_STD)
        pre = Preprocessing(tuple(mean) if mean is not None else base.mean,
                            tuple(std) if std is not None else base.std, base.crop_pct, "mean/std given")
        note = f"images normalised with the given mean {_fmt(pre.mean)}, std {_fmt(pre.std)}"
    elif own is not None:
        pre, note = own, (f"images normalised with {own.origin} (mean {_fmt(own.mean)}, std {_fmt(own.std)}, "
                          f"centre crop {own.crop_pct:.4g})")
    else:
        pre = Preprocessing(IMAGENET_MEAN, IMAGENET_STD)
        note = ("images normalised with ImageNet statistics (the model has no preprocessing of its own; "
                "set mean/std to change it)")
    return Preprocessing(_per_channel(pre.mean, channels, "mean"), _per_channel(pre.std, channels, "std"),
                         pre.crop_pct, pre.origin), note


def _per_channel(values: Sequence[float], channels: int, name: str) -> tuple[float, ...]:
    v = tuple(float(x) for x in values)
    if len(v) == 1:
        v = v * channels
    elif len(v) == 3 and channels == 1:
        v = (sum(w * x for w, x in zip(_LUMA, v)),)
    if len(v) != channels:
        raise ErfError(f"{name} has {len(v)} values but the model takes {channels} channels; give 1 or {channels}")
    if name == "std" and min(v) <= 0:
        raise ErfError(f"std must be positive; got {_fmt(v)}")
    return v


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


class ImageSource:
    """``(seed, draw, first, count) -> batch``: sample ``i`` is the ``i``-th readable image of ``order(seed)``.

    Every weight draw sees the same images; the source returns None (or a short batch) when
    the images run out.
    """

    def __init__(self, images: ImageSet, shape: tuple[int, ...], pre: Preprocessing, device: torch.device,
                 dtype: torch.dtype, window: tuple[slice, ...] | None = None):
        """Args:
            images: the ``ImageSet``; ``shape``: ``(channels, H, W)`` of one input.
            pre: the normalisation; ``device``, ``dtype``: where batches go.
            window: the crop (one slice per spatial axis), or None.
        """
        if len(shape) != 3:
            raise ErfError(f"image inputs need a 2-D input size; this model takes {len(shape) - 1}-D inputs")
        if shape[0] not in (1, 3):
            raise ErfError(f"image inputs need a model with 1 or 3 input channels; this one takes {shape[0]}")
        self.images, self.shape, self.pre, self.device, self.dtype = images, tuple(shape), pre, device, dtype
        self.window = window or tuple(slice(0, n) for n in shape[1:])
        self.good: list[int] = []  # image indices of the readable images found so far, in order
        self.scanned = 0  # positions of the order looked at
        self.skipped: list[tuple[str, str]] = []  # (file, reason) of each unreadable file met
        self._seed: int | None = None
        self._mean = torch.tensor(pre.mean).view(-1, 1, 1)
        self._std = torch.tensor(pre.std).view(-1, 1, 1)

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` (of ``files`` or the array), fitted and normalised: (C, H, W) float32 on the CPU.

        Raises:
            OSError, ValueError: an unreadable file.
        """
        c = self.shape[0]
        if self.images.array is not None:
            img = array_image(self.images.array, index, c)
        else:
            img = decode_image(self.images.files[index], c)
        img = fit_image(img, self.shape[1:], self.pre.crop_pct)
        return (img - self._mean) / self._std

    def _scan(self, seed: int, upto: int, keep: range) -> dict[int, torch.Tensor]:
        """Find readable images until ``upto`` are known; return the loaded ones whose sample index is in ``keep``."""
        if seed != self._seed:
            self._seed, self.good, self.scanned, self.skipped = seed, [], 0, []
        order = self.images.order(seed)
        loaded: dict[int, torch.Tensor] = {}
        for i in keep:  # already known readable: load them
            if i < len(self.good):
                loaded[i] = self.load(self.good[i])
        while len(self.good) < upto and self.scanned < len(order):
            index = order[self.scanned]
            self.scanned += 1
            try:
                img = self.load(index)
            except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoder errors
                self.skipped.append((self.images.files[index], f"{type(exc).__name__}: {exc}"))
                continue
            if len(self.good) in keep:
                loaded[len(self.good)] = img
            self.good.append(index)
        return loaded

    def __call__(self, seed: int, draw: int, first: int, count: int) -> torch.Tensor | None:
        """Samples ``first .. first + count - 1`` (fewer at the end of the images; None past it)."""
        loaded = self._scan(seed, first + count, range(first, first + count))
        batch = [loaded[i] for i in range(first, first + count) if i in loaded]
        if not batch:
            return None
        x = torch.stack(batch)[(slice(None), slice(None), *self.window)]
        return x.to(device=self.device, dtype=self.dtype)

    def skip_note(self) -> str | None:
        """One line counting the unreadable files met so far (None when there were none)."""
        if not self.skipped:
            return None
        f, why = self.skipped[0]
        return (f"{SKIP_NOTE} {len(self.skipped)} of {self.scanned} read, e.g. {f}: "
                f"{' '.join(why.split())[:100]}")


def first_readable(images: ImageSet, channels: int = 3) -> None:
    """Check that at least one image of ``images`` decodes (an array always does).

    Raises:
        ErfError: no file decodes (one line naming the first failure).
    """
    if images.array is not None or images.readable:
        return
    first = None
    for f in images.files:
        try:
            decode_image(f, channels)
        except (OSError, ValueError, SyntaxError) as exc:
            first = first or f"{f}: {type(exc).__name__}: {' '.join(str(exc).split())[:100]}"
            continue
        images.readable = True
        return
    raise ErfError(f"no readable image under {images.path!r} ({len(images.files)} files, none decodes; e.g. "
                   f"{first}); point --inputs at readable images")


_GENERATED: dict[tuple, str] = {}
MAX_GENERATED = 100_000  # generated images per folder (erf.limits.MAX_GENERATED_IMAGES)


def generate_images(count: int, size: int | Sequence[int], seed: int = 0, classes: int = 4,
                    folder: str | os.PathLike | None = None) -> str:
    """Write ``count`` PNG images the code draws (for ``--quick`` runs and CI): an ImageFolder of ``classes``.

    Each image is a smooth random field (a sum of a few Gaussian blobs and an oriented
    grating whose angle is its class's) with pixel noise, 5/4 of ``size`` high and 3/2 wide so
    the resize and centre crop have work to do. The same arguments give the same pixels;
    without ``folder`` they go to a temporary folder made once per process and removed when the
    process ends.

    Args:
        count: how many images; ``size``: the input size (an int or ``(H, W)``).
        seed: fixes the pixels; ``classes``: class subfolders.
        folder: where to write (default: a new temporary folder, reused for the same arguments).

    Returns:
        The folder.

    Raises:
        ErfError: a count that is not an integer from 1 to ``MAX_GENERATED``.
    """
    from PIL import Image  # lazy: Pillow is only needed for image inputs

    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_GENERATED:
        raise ErfError(f"generated images: count must be an integer from 1 to {MAX_GENERATED} (each image is a "
                       f"file in a temporary folder); got {count!r}")
    h, w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    key = (int(count), h, w, int(seed), int(classes))
    if folder is None and key in _GENERATED and os.path.isdir(_GENERATED[key]):
        return _GENERATED[key]
    if folder is None:
        out = tempfile.mkdtemp(prefix="erf-generated-images-")
        atexit.register(shutil.rmtree, out, True)  # this process made it: removed when it ends
    else:
        out = os.fspath(folder)
    H, W = (5 * h) // 4, (3 * w) // 2
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    rng = np.random.default_rng([int(seed), 0x6E7])
    for i in range(int(count)):
        c = i % classes
        img = np.zeros((H, W, 3))
        for _ in range(4):
            cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(0.05, 0.3) * min(H, W)
            img += rng.uniform(0.2, 1.0, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        angle = np.pi * c / classes
        grating = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / max(4.0, min(H, W) / 6))
        img += 0.3 * grating[..., None] + 0.05 * rng.standard_normal((H, W, 3))
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-9)
        path = os.path.join(out, f"class{c}", f"img{i:04d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
    if folder is None:
        _GENERATED[key] = out
    return out
