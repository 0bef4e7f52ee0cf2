"""Many users on several GPUs: one model manager per GPU, each job on a free one (throughput, not latency).

`ManagerPool` stands where a `ModelManager` stands (the app's `AppContext.manager`, `generate()`): it answers the
read-only questions (hardware, device, cache key) from its first manager, and `generate()` leases one manager for
the whole run (`with manager.lease(model, opts) as m:`; a plain ModelManager leases itself). A lease prefers a free
GPU that already holds the requested pipeline, then one that holds none, then the one released longest ago;
with every GPU busy it waits. The app's queue admits `slots` jobs at once (one per GPU).

"""

from __future__ import annotations

import contextlib
import threading
import time

from wan_ui.core.errors import UserError
from wan_ui.core.manager import ModelManager


class PoolBusyError(UserError):
    """Every GPU stayed busy for the whole wait."""


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
        factory = factory or ModelManager
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
