"""The device setting: what `cpu`, `auto`, `cuda` and `cuda:N` resolve to, and the clear errors when there is no such GPU."""
from __future__ import annotations

import pytest
import torch
from rlhf.models.device import DeviceUnavailable, resolve_device
from rlhf.ppo_learner.distributed import backend_for, init_from_env


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_cpu_is_cpu_whatever_the_machine_has(one_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ", local_rank=3) == torch.device("cpu")


def test_auto_takes_the_gpu_only_when_there_is_one(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_and_cuda_take_this_workers_gpu(one_gpu):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:0", local_rank=5) == torch.device("cuda", 0)  # an explicit index wins


def test_cuda_without_a_gpu_says_so(no_gpu):
    with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
        resolve_device("cuda")


def test_more_workers_than_gpus_says_so(one_gpu):
    with pytest.raises(DeviceUnavailable, match="only 1 GPU"):
        resolve_device("cuda", local_rank=1)
    with pytest.raises(DeviceUnavailable, match="cuda:2"):
        resolve_device("cuda:2")


def test_unknown_device_names_are_refused():
    with pytest.raises(ValueError, match="cpu, cuda, auto"):
        resolve_device("tpu")


def test_the_backend_follows_the_device_not_the_machine():
    assert backend_for(torch.device("cpu")) == "gloo"  # even where a GPU exists: nccl cannot reduce CPU tensors
    assert backend_for(torch.device("cuda", 1)) == "nccl"


def test_a_world_of_one_computes_where_the_setting_says(monkeypatch, no_gpu):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = init_from_env("auto")
    assert not world.enabled and world.device == torch.device("cpu")
    with pytest.raises(DeviceUnavailable):
        init_from_env("cuda")
