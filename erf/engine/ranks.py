"""Sharing one measurement over ``torchrun`` processes: the strategy the engine is given.

Every rank measures rank 0's weights and rank 0's crop, a contiguous share of whole
batches of the single-process run (``erf.engine.loop.plan_shares``), and the float64
sums are added over ranks at the end. In one process every step is a no-op (a world
of one), so the loop never branches on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.nn as nn

from erf import distributed
from erf.engine.accumulate import Accumulator
from erf.errors import ErfError

__all__ = ["Ranks"]

T = TypeVar("T")


class Ranks:
    """The processes measuring together (``erf.distributed``); one process when not under torchrun."""

    def __init__(self, tol: float | None = None):
        """
        Args:
            tol: the adaptive-stop tolerance (refused when sharded).

        Raises:
            ErfError: ``tol`` under torchrun (adaptive sampling cannot be split).
        """
        self.active = distributed.active()
        if self.active and tol:
            raise ErfError("tol (adaptive sampling) cannot be split over torchrun processes; give a fixed "
                           "sample count, or run it as one process")

    @property
    def world(self) -> int:
        """Number of processes."""
        return distributed.world_size()

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and in a single process)."""
        return distributed.is_main()

    def device(self, dev: torch.device) -> torch.device:
        """This rank's device (``cuda`` becomes the GPU of ``LOCAL_RANK``)."""
        return distributed.device(dev)

    def share(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share ``[lo, hi)`` of ``n`` indices."""
        return distributed.share(n)

    def broadcast_weights(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers into every rank's ``module``."""
        distributed.broadcast_module(module)

    def from_main(self, decide: Callable[[], T], default: T) -> T:
        """Rank 0 runs ``decide()``; every rank gets its answer (others pass ``default`` in)."""
        value = decide() if self.is_main else default
        return distributed.broadcast_object(value)

    def reduce(self, acc: Accumulator, n_groups: int) -> None:
        """Add the accumulators of every rank (groups ``0..n_groups-1``); a no-op in one process."""
        if distributed.active():
            acc.sum_over(n_groups, distributed.all_sum)

    def state_path(self, path: str | Path) -> Path:
        """This rank's own state file: ``path`` with ``.rank{r}of{w}`` when sharded."""
        path = Path(path)
        if distributed.active():
            path = path.with_name(f"{path.name}.rank{distributed.rank()}of{distributed.world_size()}")
        return path

    def note(self) -> str | None:
        """The result's note on the processes, when there were several."""
        return f"measured by {self.world} processes (torch.distributed)" if self.active else None
