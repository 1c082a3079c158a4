"""The few collectives raygan needs, as no-ops in a single process (no Ray import)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; the input is left alone)."""
    tensor = tensor.detach().clone()
    if is_distributed():
        on_wire = tensor.to(_collective_device())
        dist.all_reduce(on_wire)
        tensor = on_wire.to(tensor.device)
    return tensor


def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks, so that every rank takes the same decision from it."""
    return all_reduce_sum(tensor) / world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
