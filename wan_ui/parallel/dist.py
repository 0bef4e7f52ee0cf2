"""The process group of a parallel run (torchrun), and the messages a serving app's ranks exchange: job
announcements from rank 0 and a cancel flag every rank reads at the same step."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

# Keep NVLink multicast (NVLS / symmetric memory) off in every process we start: it is not available on every
# machine this runs on, and NCCL's NVLS init fails there rather than falling back.
NVLS_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


# ---- 3. the process group ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: str  # "cuda:<local_rank>", or "cpu" (gloo, tests)
    backend: str  # "cpu:gloo,cuda:nccl" | "cpu:gloo"
    control: object = field(default=None, compare=False)  # gloo group for serving: job announcements, cancel

    @property
    def leader(self) -> bool:
        return self.rank == 0


def torchrun_world_size(env=None) -> int:
    return int((os.environ if env is None else env).get("WORLD_SIZE", "1"))


def init_distributed(serving: bool = False) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    os.environ.update(NVLS_OFF)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)  # NCCL and diffusers' mesh use the current device
    # gloo beside NCCL: diffusers' uneven-split modes exchange their sizes on CPU when the group has a CPU backend
    # (and otherwise ask torch.accelerator, which names CUDA even on a CPU-only build of torch)
    device, backend = (f"cuda:{local}", "cpu:gloo,cuda:nccl") if cuda else ("cpu", "cpu:gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=torch.device(device) if cuda else None)
    # an idle app waits for the next job far longer than a collective's default timeout
    control = dist.new_group(backend="gloo", timeout=timedelta(days=30)) if serving else None
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, device, backend, control)


def finish_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def announce(dist_info: DistInfo, job) -> None:
    """Leader: send (model, request, opts) — or None to stop — to every follower."""
    dist.broadcast_object_list([job], src=0, group=dist_info.control)


def receive(dist_info: DistInfo):
    box = [None]
    dist.broadcast_object_list(box, src=0, group=dist_info.control)
    return box[0]


class SyncedCancel:
    """A cancel flag that every rank reads at the same step (the step callback): set on all ranks as soon as
    any rank's own flag is set, through one tiny all-reduce per step on the control group."""

    def __init__(self, local: threading.Event | None, group):
        self.local, self.group = local, group

    def set(self) -> None:
        if self.local is not None:
            self.local.set()

    def is_set(self) -> bool:

        flag = torch.tensor([1 if self.local is not None and self.local.is_set() else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())
