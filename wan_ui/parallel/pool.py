"""Many users on several GPUs: one model manager per GPU, each job on a free one (throughput, not latency).

`ManagerPool` stands where a `ModelManager` stands (the app's `AppContext.manager`, `generate()`): it answers the
read-only questions (hardware, device, cache key) from its first manager, and `generate()` leases one manager for
the whole run (`with manager.lease(model, opts) as m:`; a plain ModelManager leases itself). A lease prefers a free
GPU that already holds the requested pipeline, then one that holds none, then the one released longest ago;
with every GPU busy it waits. The app's queue admits `slots` jobs at once (one per GPU).

Also here: the per-device helpers the core needs when several GPUs share one process (`device_scope`: CUDA's
current device is per thread, and synchronize / peak-memory calls read it).
"""

from __future__ import annotations

import contextlib
import threading
import time

import torch

from wan_ui.core.errors import UserError


class PoolBusyError(UserError):
    """Every GPU stayed busy for the whole wait."""


def device_index(device: str) -> int | None:
    """'cuda:1' -> 1; 'cuda' -> None (the current device); 'cpu' -> None."""
    kind, _, index = str(device).partition(":")
    return int(index) if kind == "cuda" and index else None


def is_cuda(device: str) -> bool:
    return str(device).split(":")[0] == "cuda"


def device_scope(device: str):
    """Make `device` CUDA's current device for this thread (a no-op for 'cuda' and 'cpu')."""
    index = device_index(device)
    if index is None or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.cuda.device(index)


def describe_placement(placement: dict | None, device: str | None = None) -> str:
    """One line for the UI's Others panel: how a run used the GPUs. `placement` is BuildInfo.parallel: a pool's
    dict, a parallel.ParallelPlan dict, or None."""
    if not placement:
        return f"one device ({device})" if device else "one device"
    mode = placement.get("mode")
    if mode == "pool":
        devices = ", ".join(placement.get("devices") or [])
        return f"pool of {placement['gpus']} GPUs ({devices}): one pipeline per GPU, each job on a free one" + \
            (f"; this run on {device}" if device else "")
    n = placement.get("world_size")
    if mode == "cfg":
        return f"one video on {n} GPUs: CFG-parallel (cond branch on rank 0, uncond on rank 1)"
    kinds = [f"Ulysses {placement['ulysses_degree']}" if placement.get("ulysses_degree", 1) > 1 else "",
             f"ring {placement['ring_degree']}" if placement.get("ring_degree", 1) > 1 else ""]
    return f"one video on {n} GPUs: {' x '.join(k for k in kinds if k)} ({placement.get('reason', '')})"


class ManagerPool:
    def __init__(self, managers: list, wait_s: float | None = None):
        if not managers:
            raise ValueError("a pool needs at least one manager")
        self.managers = list(managers)
        self.slots = len(self.managers)  # jobs that can run at once
        self.wait_s = wait_s  # None: wait for a free GPU as long as it takes
        self._free = list(self.managers)  # front = released longest ago
        self._cond = threading.Condition()
        placement = {"mode": "pool", "gpus": len(self.managers), "devices": [m.device for m in self.managers]}
        load_lock = threading.Lock()  # from_pretrained is not thread-safe (ModelManager._load_locked)
        for m in self.managers:
            m.placement = placement
            m.load_lock = load_lock

    @classmethod
    def for_devices(cls, devices: list[str], factory=None, **kwargs) -> "ManagerPool":
        """One manager per device ('cuda:0', 'cuda:1', ...); `factory(device=...)` defaults to ModelManager."""
        if factory is None:
            from wan_ui.core.manager import ModelManager as factory
        return cls([factory(device=d, **kwargs) for d in devices])

    # ---- what the core reads from "a manager" ---------------------------------------------------------
    @property
    def hw(self):
        return self.managers[0].hw

    @property
    def device(self) -> str:
        return self.managers[0].device

    @property
    def log(self):
        return self.managers[0].log

    @property
    def load_lock(self):  # shared by all managers of the pool (above); training holds it while it loads models
        return self.managers[0].load_lock

    def key(self, model, opts) -> tuple:
        return self.managers[0].key(model, opts)

    def resident(self) -> list[tuple]:
        return [k for m in self.managers for k in m.resident()]

    def clear(self) -> None:
        for m in self.managers:
            m.clear()

    def busy(self) -> list[str]:
        with self._cond:
            return [m.device for m in self.managers if m not in self._free]

    # ---- the one verb --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, model=None, opts=None):
        """`with pool.lease(model, opts) as manager:` — a free GPU's manager, exclusively, for the block."""
        manager = self._take(model, opts)
        try:
            yield manager
        finally:
            with self._cond:
                self._free.append(manager)
                self._cond.notify()

    def _take(self, model, opts):
        deadline = None if self.wait_s is None else time.monotonic() + self.wait_s
        with self._cond:
            while not self._free:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PoolBusyError(f"all {self.slots} GPUs stayed busy for {self.wait_s:.0f} s; try again")
                self._cond.wait(left)
            manager = self._pick(model, opts)
            self._free.remove(manager)
            return manager

    def _pick(self, model, opts):
        if opts is not None:
            key = self._free[0].key(model, opts)
            for m in self._free:  # 1. a GPU that already holds this pipeline: no load
                if key in m.resident():
                    return m
        for m in self._free:  # 2. an empty GPU: spread pipelines before evicting one
            if not m.resident():
                return m
        return self._free[0]  # 3. the one released longest ago


# ---- the app's GPU setup (python app.py --gpus 0,1 [--gpu-mode pool|parallel]) ------------------------------
GPU_MODES = ("pool", "parallel")


def parse_gpus(text: str | None) -> list[int] | None:
    """'0,1,3' -> [0, 1, 3]; None/'' -> None (one default device)."""
    if not text:
        return None
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--gpus expects GPU indices like 0,1; got {text!r}", field="gpus") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise UserError(f"--gpus expects distinct GPU indices like 0,1; got {text!r}", field="gpus")
    return gpus


def relaunch_command(argv: list[str], gpus: list[int]) -> tuple[list[str], dict]:
    """`python app.py ... --gpu-mode parallel` outside torchrun -> (command, env) that starts one process per GPU
    (rank 0 serves the UI) with only those GPUs visible and NVLink multicast off."""
    import os
    import sys

    from wan_ui.parallel.runtime import NVLS_OFF

    env = {**os.environ, **NVLS_OFF, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(len(gpus)),
            *argv], env


def build_app_manager(gpus: list[int] | None, mode: str = "pool", parallel: str | None = None, log=print):
    """The app's manager: one ModelManager (no --gpus), a ManagerPool over the GPUs (pool), or this rank's manager
    of one video across them (parallel, under torchrun; followers run the leader's jobs here and get None)."""
    from wan_ui.core.manager import ModelManager

    if mode not in GPU_MODES:
        raise UserError(f"--gpu-mode must be one of {list(GPU_MODES)}, got {mode!r}", field="gpu_mode")
    if gpus is None:
        return ModelManager(log=log)
    visible = torch.cuda.device_count()
    if mode == "pool":
        if max(gpus) >= visible:
            raise UserError(f"--gpus {','.join(map(str, gpus))}: this machine shows {visible} CUDA device(s)",
                            field="gpus")
        return ManagerPool.for_devices([f"cuda:{i}" for i in gpus], log=log)
    from wan_ui.parallel.runtime import ParallelConfig, ParallelRuntime, follow_jobs, init_distributed

    runtime = ParallelRuntime(ParallelConfig.parse(parallel or "auto"), init_distributed(serving=True), serving=True)
    if not runtime.dist.leader:
        follow_jobs(ModelManager(device=runtime.dist.device, log=lambda m: None, parallel=runtime), log=log)
        return None
    import atexit

    atexit.register(runtime.stop_followers)  # the followers return when the app stops
    return ModelManager(device=runtime.dist.device, log=log, parallel=runtime)
