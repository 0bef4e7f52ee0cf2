"""The model manager: the only holder of built pipelines (no module-level state elsewhere).

Pipelines are keyed by (model, load-time part of the OptimizationSet). Run-time options are applied to the
cached pipeline by the registry, which re-applies only the families whose fields changed. The cache is
bounded (default one resident pipeline); eviction drops every reference and empties the CUDA cache. A build
that fails leaves the manager as it was (on a GPU the least-recently-used pipeline is evicted *before* the new
build so both never need to fit; on CPU it is kept until the new one is built).
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from diffusers import WanPipeline

from wan_ui.core.devices import is_cuda
from wan_ui.core.errors import GpuOutOfMemoryError, ModelLoadError, first_line
from wan_ui.core.hardware import Hardware, probe_hardware
from wan_ui.core.metrics import install_forward_counter
from wan_ui.core.models import ModelSource, materialize, resolve_model
from wan_ui.core.options import OptimizationSet, check_available, check_compatible
from wan_ui.optim import apply_runtime, build_steps, load_kwargs

LOW_VRAM_HINT = "choose the 'Low VRAM' preset (group offload + tiled decode) or a smaller size/frame count"


@dataclass
class BuildInfo:
    model: str
    label: str
    random_weights: bool
    device: str
    rebuilt: bool  # True when this call loaded weights
    reapplied: list[str] = field(default_factory=list)  # run-time families (re)applied by this call
    load_time_s: float = 0.0  # from_pretrained + device moves + load-time optimizations (no download)
    load_breakdown: dict = field(default_factory=dict)  # download_s, weights_s, optimizations_s, runtime_apply_s
    parallel: dict | None = None  # how this run used several GPUs (parallel.ParallelPlan or a pool); None: one


@dataclass
class _Entry:
    pipe: object
    source: ModelSource
    info: BuildInfo
    fresh: bool = True  # no generation has run since the build or a run-time change (warm-up pending)


def _free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelManager:
    def __init__(self, device: str | None = None, max_resident: int = 1, hardware: Hardware | None = None,
                 log=print, parallel=None):
        self.hw = hardware or probe_hardware()
        self.device = device or self.hw.device  # "cuda", "cuda:<i>" or "cpu"
        self.parallel = parallel  # parallel.ParallelRuntime: this process's share of one video on several GPUs
        self.placement: dict | None = None  # set by a gpu_pool.ManagerPool holding this manager
        self.slots = 1  # jobs that can run at once (a ManagerPool has one per GPU)
        self.load_lock = threading.Lock()  # shared by a ManagerPool's managers: one from_pretrained at a time
        self.max_resident = max_resident
        self.log = log
        self.builds = 0  # how many times weights were loaded (tests count rebuild decisions with it)
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._job_lock = threading.RLock()  # held by lease(): one generation at a time

    # ---- queries ---------------------------------------------------------------------------------
    def resident(self) -> list[tuple]:
        return list(self._entries)

    def key(self, model: str | None, opts: OptimizationSet) -> tuple:
        return (resolve_model(model, self.hw.cuda).name, opts.load_key())

    # ---- the manager interface a gpu_pool.ManagerPool shares -------------------------------------
    @contextlib.contextmanager
    def lease(self, model: str | None = None, opts: OptimizationSet | None = None):
        """`with manager.lease(model, opts) as m:` — a manager is its own (and only) GPU, held by one job at a time:
        the app's queue admits `slots` jobs, but a batch (core/batch.py) runs in a thread outside the queue, and two
        runs on one pipeline would apply their options over each other. Re-entrant for the holding thread."""
        with self._job_lock:
            yield self

    def start_job(self, model, request, opts, cancel):
        """generate() announces each job here: a serving parallel app's other ranks join in (parallel.py)."""
        return self.parallel.start_job(model, request, opts, cancel) if self.parallel is not None else cancel

    # ---- the one verb ----------------------------------------------------------------------------
    def get(self, model: str | None, opts: OptimizationSet, request=None):
        """Return (pipeline, BuildInfo, fresh) with `opts` applied; build only when the load-time part changed."""
        with self._lock:
            check_available(opts, self.hw)
            check_compatible(opts)
            if self.parallel is not None:
                self.parallel.check(opts)
            source = resolve_model(model, self.hw.cuda)
            key = (source.name, opts.load_key())
            entry = self._entries.get(key)
            if entry is None:
                entry = self._build(key, source, opts)
            else:
                self._entries.move_to_end(key)
                entry.info.rebuilt = False
            t0 = time.perf_counter()
            try:
                entry.info.reapplied = apply_runtime(entry.pipe, opts, request)
            except torch.cuda.OutOfMemoryError:
                self._evict(key)
                raise GpuOutOfMemoryError(f"out of GPU memory while applying options; {LOW_VRAM_HINT}") from None
            if self.parallel is not None:  # after the run-time hooks, so the parallel layer stays outermost
                entry.info.parallel = self.parallel.sync(entry.pipe, opts, request, bool(entry.info.reapplied))
            else:
                entry.info.parallel = self.placement
            entry.info.load_breakdown["runtime_apply_s"] = time.perf_counter() - t0
            if entry.info.reapplied:
                entry.fresh = True
            fresh, entry.fresh = entry.fresh, False
            return entry.pipe, entry.info, fresh

    def _build(self, key, source: ModelSource, opts: OptimizationSet) -> _Entry:
        if is_cuda(self.device):
            while len(self._entries) >= self.max_resident:
                self._evict(next(iter(self._entries)))
        try:
            pipe, download_s, weights_s = self._load_locked(source, opts)
            t1 = time.perf_counter()
            install_forward_counter(pipe)  # before compile: hooks added to compiled blocks force recompiles
            build_steps(pipe, opts, self.device)
            if is_cuda(self.device):
                torch.cuda.synchronize(self.device)
        except torch.cuda.OutOfMemoryError:
            pipe = None  # raised below: inside this block the OOM's traceback still holds the half-built pipeline
        if pipe is None:
            _free_cuda()
            raise GpuOutOfMemoryError(f"out of GPU memory while loading the model; {LOW_VRAM_HINT}")
        t2 = time.perf_counter()
        self.builds += 1
        info = BuildInfo(source.name, source.label, source.random_weights, self.device, True,
                         load_time_s=weights_s + (t2 - t1),
                         load_breakdown={"download_s": download_s, "weights_s": weights_s, "optimizations_s": t2 - t1})
        while len(self._entries) >= self.max_resident:
            self._evict(next(iter(self._entries)))
        self._entries[key] = _Entry(pipe, source, info)
        return self._entries[key]

    def _load_locked(self, source: ModelSource, opts: OptimizationSet) -> tuple[object, float, float]:
        """Materialize + from_pretrained, one at a time per process (a ManagerPool's managers share the lock):
        loading patches process-wide state (meta-device init), and two concurrent loads leave meta tensors behind
        ("Cannot copy out of meta tensor", seen with two CPU managers). Returns (pipe, download_s, weights_s)."""
        with self.load_lock:
            folder, download_s = materialize(source, log=self.log)
            t0 = time.perf_counter()
            return self._load(folder, source, opts), download_s, time.perf_counter() - t0

    def _load(self, folder: str, source: ModelSource, opts: OptimizationSet):
        try:
            pipe = WanPipeline.from_pretrained(folder, use_safetensors=True, **load_kwargs(opts, self.hw))
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # a missing or corrupt file raises OSError, SafetensorError, JSONDecodeError, ...
            raise ModelLoadError(f"could not load model {source.name!r} from {folder}: {type(e).__name__}: "
                                 f"{first_line(e)}", field="model") from None
        if getattr(pipe.tokenizer, "pad_token", None) is None:  # loads, then every prompt fails to encode
            raise ModelLoadError(f"could not load model {source.name!r} from {folder}: its tokenizer has no padding "
                                 f"token (tokenizer/tokenizer_config.json missing or damaged?)", field="model")
        return pipe

    # ---- freeing ---------------------------------------------------------------------------------
    def _evict(self, key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.log(f"evicting pipeline {key[0]} ({len(self._entries)} left resident)")
        pipe = entry.pipe
        entry.pipe = None
        if hasattr(pipe, "remove_all_hooks"):
            pipe.remove_all_hooks()
        compiled = dict(key[1]).get("compile", "none") != "none"
        del pipe, entry
        if compiled:
            # torch.compile's code cache keeps the compiled blocks (and through them the pipeline's weights)
            # alive: drop it, or an evicted compiled pipeline keeps its GPU memory.
            torch._dynamo.reset()
        _free_cuda()

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._evict(key)

    def mark_broken(self, model: str | None, opts: OptimizationSet) -> None:
        """Drop a pipeline whose state is unknown (OOM or an error mid-generation); the next call rebuilds."""
        with self._lock:
            self._evict(self.key(model, opts))
