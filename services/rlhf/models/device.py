"""Which torch device a service computes on: `cpu` (the default everywhere), `cuda` or `auto`.

One resolver for every service, so the settings mean the same thing in each:
`auto` takes the GPU when torch sees one; `cuda` (or `cuda:N`) insists on one
and says clearly when there is none, rather than failing later inside a
kernel call. Under torchrun each local worker takes its own GPU (`cuda:LOCAL_RANK`),
as NCCL requires one GPU per rank.
"""
from __future__ import annotations

import torch

DEVICE_CHOICES = ("cpu", "cuda", "auto")


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` -> a concrete device; a bare `cuda` means GPU `local_rank`."""
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:N), not {name!r}")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine (use cpu or auto)")
    device = torch.device(name)
    index = local_rank if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceUnavailable(
            f"device cuda:{index} asked for (worker {local_rank} of this machine), but only {count} GPU(s) are "
            "visible: run at most one worker per GPU"
        )
    return torch.device("cuda", index)
