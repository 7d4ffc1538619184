"""torch.distributed helpers that degrade to one process (world size 1, rank 0)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)  # [W, *x.shape]
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x: [N, ...]` from all ranks -> [W * N, ...], rank order; differentiable.

    In one process this is `x` itself.
    """
    if world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)
