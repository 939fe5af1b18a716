"""Data parallelism with `torch.distributed`, started by `torchrun` (or a single process without it).

Each worker draws its own prompts and rollouts; gradients are averaged with
one all-reduce per step (a flat buffer, so one collective, not one per
tensor), and the few scalars that must agree (the KL that drives beta, the
gate's evaluation) are averaged too, so every worker holds identical weights
and the same beta. Rank 0 alone talks to the weight store and writes files.

The backend follows the configured device, not what the machine has: gloo
for `cpu` (the default, also on a machine with GPUs), nccl for `cuda`, one GPU
per worker (`cuda:LOCAL_RANK`). The collectives below put their tensors on
`World.device`, since nccl only moves GPU tensors.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from rlhf.models.device import resolve_device


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where this worker computes; collectives run on it."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "cpu") -> World:
    """Join the process group if `torchrun` started us (WORLD_SIZE > 1); otherwise a world of one.

    `device` is a setting (`cpu`, `cuda`, `auto`; see `rlhf.models.device`): it picks
    this worker's device (a bare `cuda` under torchrun means `cuda:LOCAL_RANK`) and
    with it the backend, gloo or nccl.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    where = resolve_device(device, local_rank)
    if where.type == "cuda":
        torch.cuda.set_device(where)  # nccl's object collectives use the current device
    if world_size <= 1:
        return World(device=where)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(where))
    return World(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
        device=where,
    )


def backend_for(device: torch.device) -> str:
    """nccl for GPU workers, gloo for CPU ones (nccl cannot reduce CPU tensors, whatever the machine has)."""
    return "nccl" if device.type == "cuda" else "gloo"


def shutdown(world: World) -> None:
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(world: World, values: Iterable[float]) -> list[float]:
    """Average a few scalars over workers (one collective)."""
    values = list(values)
    if not world.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world.world_size).tolist()


def all_reduce_sum(world: World, values: Iterable[float]) -> list[float]:
    values = list(values)
    if not world.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def average_gradients(world: World, params: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over workers, through one flat buffer."""
    if not world.enabled:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        chunk = flat[offset : offset + n].view_as(g)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


def broadcast_module(world: World, module: torch.nn.Module) -> None:
    """Make every worker start from rank 0's weights (e.g. after rank 0 alone fetched a version)."""
    if not world.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def broadcast_object(world: World, obj: object) -> object:
    """Rank 0's value of a small picklable object, on every worker."""
    if not world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()


def replicas_in_sync(world: World, module: torch.nn.Module) -> bool:
    """True if every worker holds exactly rank 0's weights (a cheap check that data parallelism is sound)."""
    if not world.enabled:
        return True
    local = float(sum(p.detach().double().sum().item() * (i + 1) for i, p in enumerate(module.parameters())))
    reference = broadcast_object(world, local)
    agree = all_reduce_sum(world, [1.0 if local == reference else 0.0])[0]
    return int(agree) == world.world_size
