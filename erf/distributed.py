"""Runs under ``torchrun``: one process per GPU (or CPU worker), on one node or many.

``erf measure`` and ``erf run`` call ``init()`` first: when ``torchrun`` launched the process
(``WORLD_SIZE`` > 1 in the environment) it joins the process group, with NCCL for CUDA tensors
and Gloo for CPU tensors, and each process takes the GPU of its ``LOCAL_RANK``. The engine
then measures only this rank's share of the sample indices (``share``) and sums the
accumulators over ranks (``all_sum``); rank 0 alone writes files (``is_main``). Nothing here
does anything in a single process, so library users never need to call it.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from erf.errors import ErfError


def launched() -> bool:
    """True when a launcher (``torchrun``) started this process as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ErfError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from None


def init(timeout_s: float = 1800.0) -> bool:
    """Join the process group when launched by ``torchrun`` (idempotent); True when distributed."""
    if not launched():
        return False
    if not dist.is_available():
        raise ErfError("this torch build has no torch.distributed; run as a single process (without torchrun)")
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ErfError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun "
                           "(e.g. torchrun --nproc_per_node=4 -m erf.cli run CONFIG)")
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank() % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return active()


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files and prints."""
    return rank() == 0


def device(dev: torch.device) -> torch.device:
    """This rank's device: ``cuda`` becomes the GPU of ``LOCAL_RANK`` when distributed."""
    if dev.type == "cuda" and dev.index is None and active():
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def share(n: int) -> tuple[int, int]:
    """This rank's contiguous share ``[lo, hi)`` of ``n`` indices (balanced; all of them alone)."""
    r, w = rank(), world_size()
    return r * n // w, (r + 1) * n // w


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks, in place (float64 stays float64); no-op in a single process."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (pickled over the CPU backend)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (same structure)."""
    if not active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src)


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (at exit of the CLI)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
