"""Repeatable runs: what is deterministic already, and the switch for what is not.

On CPU a run repeats bit for bit with no setting: probe inputs are hashes of (seed, draw,
sample, pixel), weights are redrawn from seeded generators, sums are float64 in a fixed order
and group sums use plain slices (no atomics). On CUDA the same holds for everything the toolkit
does itself, but some kernels of the model may not: cuDNN may pick non-deterministic
convolution algorithms, and the backward of max/adaptive pooling, interpolation and
scatter/index ops adds with atomics (float32 sums in a varying order). ``deterministic_mode``
(``deterministic=True``, ``--deterministic``, ``experiment.deterministic``) turns on
``torch.use_deterministic_algorithms``, ``cudnn.deterministic`` (and off ``cudnn.benchmark``)
and sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8``; an op with no deterministic kernel then fails
with a message naming it. It can cost speed on CUDA (typically a few percent for convnets).
"""

from __future__ import annotations

import contextlib
import os

import torch

from erf.errors import ErfError

CUBLAS_SETTING = ":4096:8"


def prepare() -> None:
    """Set the cuBLAS workspace variable before CUDA starts (the CLI calls this for --deterministic)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_SETTING)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device | None = None):
    """Deterministic kernels for the block when ``enabled``; previous settings restored after."""
    if not enabled:
        yield
        return
    prepare()
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as exc:
        if "deterministic" in str(exc):
            first = str(exc).strip().splitlines()[0]
            raise ErfError(f"deterministic mode: {first[:300]}; run without --deterministic for this model") from None
        raise
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[2], old[3]
