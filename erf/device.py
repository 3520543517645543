"""One ``resolve_device`` for every package: the engine, training and the experiment runner."""

from __future__ import annotations

import torch

from erf.errors import ErfError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device a run uses, checked against this machine.

    Args:
        device: ``None`` or ``"auto"`` (any case): CUDA when available, else CPU; otherwise a
            device name or ``torch.device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    Returns:
        The ``torch.device``.

    Raises:
        ErfError: an unknown name, a device type other than cpu/cuda, CUDA asked for on a
            machine without it, or a CUDA index this machine does not have.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
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
