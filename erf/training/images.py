"""Local images for training and measuring: a folder of images or an ``.npz``.

A folder is read recursively; its first-level subfolders are the classes. An ``.npz`` holds
``x`` as (N, C, H, W), (N, H, W, C) or (N, H, W) and optionally labels ``y``. Images are
converted to the asked number of channels, resized to cover the size and centre-cropped,
then normalised per channel (``load_dataset``).
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from erf.errors import ErfError
from erf.training.seeds import make_generator, mix_seed

__all__ = ["IMAGE_SUFFIXES", "ImageData", "image_size", "check_channels", "load_dataset", "load_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_LUMA = (0.299, 0.587, 0.114)


def image_size(size: int | Sequence[int], minimum: int = 8) -> tuple[int, int]:
    """An image size as ``(H, W)``.

    Args:
        size: one int (square) or ``(H, W)`` ints.
        minimum: the smallest side accepted.

    Returns:
        ``(H, W)``.

    Raises:
        ErfError: not an int or a pair of ints, or a side below ``minimum``.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < minimum or w < minimum:
        raise ErfError(f"image size must be an int or (H, W) of ints >= {minimum}; got {size!r}")
    return h, w


def check_channels(channels: int) -> int:
    """The number of image channels, checked.

    Args:
        channels: 1 (grey) or 3 (RGB).

    Returns:
        ``channels`` as an int.

    Raises:
        ErfError: any other value.
    """
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ErfError(f"channels must be 1 (grey) or 3 (RGB); got {channels!r}")
    return int(channels)



@dataclass
class ImageData:
    """Loaded images ``x`` (N, C, H, W) float32, labels ``y`` (N,) int64 or None, class names, sources."""

    x: torch.Tensor
    y: torch.Tensor | None
    classes: list[str]
    sources: list[str]
    mean: list[float]
    std: list[float]


def _fit(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize (N, C, h, w) so it covers ``hw`` keeping the aspect ratio, then centre-crop to ``hw``."""
    h, w = img.shape[-2:]
    th, tw = hw
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        img = F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return img[..., top:top + th, left:left + tw]


def _convert_channels(img: torch.Tensor, channels: int, source: str) -> torch.Tensor:
    """(N, c, H, W) with c in 1, 2 (grey + alpha), 3, 4 (RGBA) -> (N, channels, H, W); alpha dropped."""
    c = img.shape[1]
    if c in (2, 4):
        img, c = img[:, : c - 1], c - 1
    if c not in (1, 3):
        raise ErfError(f"{source}: images must have 1, 3 or 4 channels; got {img.shape[1]}")
    if c == channels:
        return img
    if channels == 1:
        w = torch.tensor(_LUMA, dtype=img.dtype).view(1, 3, 1, 1)
        return (img * w).sum(1, keepdim=True)
    return img.expand(-1, 3, -1, -1)


def _as_float(arr: np.ndarray, source: str) -> torch.Tensor:
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32) / 255.0)
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32) / 65535.0)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number):
        out = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        if not torch.isfinite(out).all():
            raise ErfError(f"{source}: the images contain NaN or infinite values; clean the data")
        return out
    raise ErfError(f"{source}: images must be numeric arrays; got dtype {arr.dtype}")


def _pick(n: int, count: int | None, seed: int, source: str) -> torch.Tensor:
    """Indices of ``count`` items out of ``n`` (all when None), in a seeded random order."""
    if count is None:
        return torch.arange(n)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ErfError(f"image count must be a positive integer; got {count!r}")
    if count > n:
        raise ErfError(f"asked for {count} images but {source} holds only {n}; lower the count or add images")
    return torch.randperm(n, generator=make_generator(mix_seed(seed, "images")))[: int(count)]


MAX_ENTRIES = 10_000_000  # files and folders looked at under an image folder
MAX_PIXELS = 2**26  # pixels of one image file (larger ones are refused before they are decoded)


def _image_files(root: str) -> list[str]:
    """Regular image files under ``root`` (links to folders not followed, hidden names skipped), sorted.

    Raises:
        ErfError: ``root`` under /proc, /sys or /dev, or more than ``MAX_ENTRIES`` entries.
    """
    real = os.path.realpath(root)
    for tree in ("/proc", "/sys", "/dev"):
        if real == tree or real.startswith(tree + "/"):
            raise ErfError(f"{root} is under {tree}, a system folder, not images; point at a folder of images")
    files, entries = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        entries += len(dirnames) + len(filenames)
        if entries > MAX_ENTRIES:
            raise ErfError(f"more than {MAX_ENTRIES} files and folders under {root}; point at a smaller folder")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."):
                try:
                    if stat.S_ISREG(os.stat(full).st_mode):  # never open a FIFO or device named a.png
                        files.append(full)
                except OSError:
                    continue
    return files


def _check_size(path: str) -> None:
    """Refuse an image whose header claims more than ``MAX_PIXELS`` (a decompression bomb), unread."""
    from PIL import Image  # lazy: Pillow comes with matplotlib and only image folders need it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Image.DecompressionBombError as exc:
            raise ErfError(f"image {path}: {' '.join(str(exc).split())[:120]}; remove it") from None
        except Exception:  # noqa: BLE001 - not an image Pillow knows: matplotlib's reader says why below
            return
    if w * h > MAX_PIXELS:
        raise ErfError(f"image {path} has {w}x{h} pixels, more than {MAX_PIXELS}; shrink or remove it")


def _read_image(path: str) -> torch.Tensor:
    import matplotlib.image as mpimg  # lazy: matplotlib is heavy and only image folders need it

    _check_size(path)
    try:
        arr = np.asarray(mpimg.imread(path))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        msg = " ".join(str(exc).split())[:120]
        raise ErfError(f"cannot read image {path} ({type(exc).__name__}: {msg}); fix or remove the file") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ErfError(f"image {path} has shape {arr.shape}; expected H x W or H x W x channels")
    return _as_float(np.ascontiguousarray(arr.transpose(2, 0, 1))[None], path)


def _from_folder(root: str, hw: tuple[int, int], count: int | None, seed: int,
                 channels: int) -> tuple[torch.Tensor, torch.Tensor | None, list[str], list[str]]:
    files = _image_files(root)
    if not files:
        raise ErfError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}; point at a folder of images")
    names = [os.path.relpath(os.path.dirname(f), root).split(os.sep)[0] for f in files]
    classes = sorted(set(names))
    idx = _pick(len(files), count, seed, root)
    chosen = [files[i] for i in idx.tolist()]
    x = torch.cat([_fit(_convert_channels(_read_image(f), channels, f), hw) for f in chosen])
    y = torch.tensor([classes.index(names[i]) for i in idx.tolist()], dtype=torch.int64)
    return x, (y if len(classes) > 1 else None), classes, chosen


def _from_npz(path: str, hw: tuple[int, int], count: int | None, seed: int,
              channels: int) -> tuple[torch.Tensor, torch.Tensor | None, list[str], list[str]]:
    try:
        data = np.load(path, allow_pickle=False)
        keys = list(data.keys())
    except Exception as exc:  # noqa: BLE001
        raise ErfError(f"cannot read {path} as an .npz archive ({type(exc).__name__}); "
                       "save it with numpy.savez(path, x=images, y=labels)") from None
    if "x" not in keys:
        raise ErfError(f"{path} has no 'x' array (keys: {', '.join(keys) or 'none'}); "
                       "save it with numpy.savez(path, x=images, y=labels)")
    try:
        x = data["x"]
        y = data["y"] if "y" in keys else None
    except ValueError as exc:  # object arrays need pickle
        raise ErfError(f"{path}: cannot load arrays without pickle ({exc}); store plain numeric arrays") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 2, 3, 4) and x.shape[-1] in (1, 2, 3, 4):
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 2, 3, 4):
            raise ErfError(f"{path}: x must have 1, 3 or 4 channels as (N, C, H, W) or (N, H, W, C); "
                           f"got shape {x.shape}")
    else:
        raise ErfError(f"{path}: x must be (N, C, H, W), (N, H, W, C) or (N, H, W); got shape {x.shape}")
    n = x.shape[0]
    if n < 1 or min(x.shape[-2:]) < 1:
        raise ErfError(f"{path}: x holds no images (shape {x.shape})")
    classes: list[str] = []
    if y is not None:
        if y.ndim != 1 or len(y) != n:
            raise ErfError(f"{path}: y must be a 1-D array with one label per image ({n}); got shape {y.shape}")
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.str_)):
            raise ErfError(f"{path}: y must hold integer (or string) class labels; got dtype {y.dtype}")
        values, y = np.unique(y, return_inverse=True)
        classes = [str(v) for v in values]
    idx = _pick(n, count, seed, path)
    xs = _convert_channels(_as_float(np.ascontiguousarray(x[idx.numpy()]), path), channels, path)
    out_y = torch.from_numpy(y.reshape(-1)[idx.numpy()].astype(np.int64)) if y is not None else None
    sources = [f"{path}[{i}]" for i in idx.tolist()]
    return _fit(xs, hw), out_y, classes or ["."], sources


def load_dataset(path: str | os.PathLike, size: int | Sequence[int] = 64, count: int | None = None, seed: int = 0,
                 channels: int = 3) -> ImageData:
    """Load local images: a folder (recursive; first-level subfolders = classes) or an ``.npz``.

    The ``.npz`` holds ``x`` as (N, C, H, W), (N, H, W, C) or (N, H, W) (uint8 in 0..255 or
    floats) and optionally ``y`` (N,) labels. ``count`` images (all when None) are drawn in a
    random order fixed by ``seed``, converted to ``channels`` (luma for grey), resized with
    ``interpolate`` so they cover ``size`` and centre-cropped, then normalised per channel to
    zero mean and unit std over the loaded set.

    Args:
        path: a folder of images or an ``.npz`` file.
        size: the output size, one int or ``(H, W)``.
        count: how many images (all when None).
        seed: fixes which images and their order.
        channels: 1 (grey, by luma) or 3.

    Returns:
        The ``ImageData``.

    Raises:
        ErfError: a missing path or one of another kind, no images, unreadable or non-numeric
            images, bad shapes or labels, a bad ``count``, ``size`` or ``channels``.
    """
    hw = image_size(size, minimum=1)
    channels = check_channels(channels)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ErfError(f"image path not found: {path}; give a folder of images or an .npz file")
    if os.path.isdir(path):
        x, y, classes, sources = _from_folder(path, hw, count, seed, channels)
    elif path.lower().endswith(".npz"):
        x, y, classes, sources = _from_npz(path, hw, count, seed, channels)
    else:
        raise ErfError(f"{path} is neither a folder of images nor an .npz file")
    x = x.float().contiguous()
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return ImageData(x, y, classes, sources, mean.tolist(), std.tolist())


def load_images(path: str | os.PathLike, size: int | Sequence[int] = 64, count: int | None = None, seed: int = 0,
                channels: int = 3) -> torch.Tensor:
    """``count`` local images as an (N, C, H, W) float32 tensor normalised per channel (see ``load_dataset``).

    Args:
        path: a folder of images or an ``.npz`` file.
        size: the output size, one int or ``(H, W)``.
        count: how many images (all when None).
        seed: fixes which images and their order.
        channels: 1 or 3.

    Returns:
        The images.

    Raises:
        ErfError: as ``load_dataset``.
    """
    return load_dataset(path, size, count=count, seed=seed, channels=channels).x
