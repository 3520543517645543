"""Seeds and random generators of the training data: one named stream per use."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["mix_seed", "make_generator"]


def mix_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named stream (``train``, ``eval``, ...) of ``seed``; stable across runs.

    Args:
        seed: the run's seed.
        stream: the stream's name.

    Returns:
        The stream's seed, in [0, 2**63).
    """
    digest = hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``.

    Args:
        seed: the seed.
        device: where the generator draws (CPU and CUDA streams differ).

    Returns:
        The generator.
    """
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))
