"""The metrics of one run, each defined once here (README "Metrics" repeats these definitions).

Timing is wall clock with the device synchronised before every clock read (`Clock`); memory is torch's peak
allocator statistics per phase, plus device memory in use sampled by NVML in a background thread.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Metrics:
    """One run. Times in seconds, memory in MiB (2**20 bytes).

    - load_time_s: building the pipeline: `from_pretrained` + device moves + load-time optimizations (FP8
      storage, offload hooks, compile wrappers). Download time is `load_breakdown.download_s`, never included.
      A reused pipeline reports the load time of the build it reuses, with `rebuilt` false.
    - warmup_time_s: extra cost of the first generation after a (re)build or a run-time change, over steady
      state: for each kind of step (forwards computed, dense or sparse attention: `generate.step_kinds`), its
      first step minus the median of its later ones, summed (compile, autotuning and kernel selection land in the
      first step of a kind); see `warmup_from_steps`. 0 for a generation on an already-warm pipeline; null with one
      step or when the first step's kind never comes again. The benchmark measures it end to end instead (first
      run minus median of later runs) — `warmup_method` says which.
    - clip_latency_s: wall time of text encode + denoise + decode, synchronised; `phases` splits it.
    - step_latencies_s: time between consecutive step-end callbacks (the first from the start of denoising).
    - frame_latency_s = clip_latency_s / frames;  throughput_fps = frames / clip_latency_s.
    - peak_vram_mb / peak_reserved_mb: torch.cuda.max_memory_allocated / max_memory_reserved over the run
      (stats reset at its start); `phase_peak_vram_mb` per phase. null on CPU, with `vram_note` saying why.
    - nvml_peak_used_mb: peak device memory in use (all processes, as nvidia-smi shows) sampled at >= 4 Hz.
    - forwards_planned: transformer forwards the request asks for (steps + CFG steps); forwards_computed:
      forwards that ran the transformer blocks (the last block's FFN ran); the rest were skipped by a cache.
      Under torch.compile (hooks inside compiled blocks are not run reliably): MagCache's replayed schedule (exact:
      its skip decision reads no activations), null for the other caches.
    - clip_score, lpips_vs_baseline, psnr_vs_baseline, ssim_vs_baseline, lpips_temporal: see `quality.py`.
    - option_notes (not a measurement): what an option of the set does not do on this hardware, e.g. attention
      slicing on fused SDPA kernels (`options.option_notes`); shown with the result.
    """

    load_time_s: float | None = None
    load_breakdown: dict = field(default_factory=dict)
    rebuilt: bool | None = None
    warmup_time_s: float | None = None
    warmup_method: str = "first step - median step (first generation after a build)"
    clip_latency_s: float | None = None
    phases: dict = field(default_factory=dict)  # text_encode_s, denoise_s, decode_s
    step_latencies_s: list = field(default_factory=list)
    frame_latency_s: float | None = None
    throughput_fps: float | None = None
    peak_vram_mb: float | None = None
    peak_reserved_mb: float | None = None
    phase_peak_vram_mb: dict = field(default_factory=dict)
    nvml_peak_used_mb: float | None = None
    vram_note: str | None = None
    forwards_planned: int | None = None
    forwards_computed: int | None = None
    clip_score: float | None = None
    lpips_vs_baseline: float | None = None
    psnr_vs_baseline: float | None = None
    ssim_vs_baseline: float | None = None
    lpips_temporal: float | None = None
    quality_note: str | None = None  # why a quality metric is null, or that weights were random
    random_weights: bool | None = None
    option_notes: list = field(default_factory=list)  # what the options did not do here (options.option_notes)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def forwards_skipped(self) -> int | None:
        if self.forwards_planned is None or self.forwards_computed is None:
            return None
        return self.forwards_planned - self.forwards_computed


def frame_metrics(clip_latency_s: float, frames: int) -> tuple[float, float]:
    """(frame_latency_s, throughput_fps) from one clip's latency."""
    return clip_latency_s / frames, frames / clip_latency_s


def warmup_from_steps(steps: list[float], kinds: list | None = None) -> float | None:
    """Extra time of the first step of each kind over the median of the later steps of that kind, summed
    (`kinds[i]`: what step i computed, e.g. (forwards that ran the blocks, dense attention?)): compile and
    autotuning land in the first step, and again in the first step of a new kind (the first sparse step compiles
    the sparse kernel). Kinds seen once have no reference and add nothing; None when the first step's kind has
    none. Without `kinds` (a cache that decides per step from activations): first step minus second step, the
    nearest step of the same kind (caches compute the early steps). Comparing with every later step would count
    a step cache's skips as warm-up (MagCache's median step is ~0.02 s: a 6.6 s dense first step read as 6.6 s)."""
    if len(steps) < 2:
        return None
    if kinds is None:
        return max(0.0, steps[0] - steps[1])
    by_kind: dict = {}
    for t, k in zip(steps, kinds):
        by_kind.setdefault(k, []).append(t)
    if len(by_kind[kinds[0]]) < 2:
        return None
    return sum(max(0.0, ts[0] - statistics.median(ts[1:])) for ts in by_kind.values() if len(ts) > 1)


class ForwardCounter:
    """Counts transformer forwards and those that ran the blocks (not skipped by a step cache).

    Installed once per pipeline, before compile (hooks added to a compiled module later would force a
    recompile). `computed` counts calls of the last block's first FFN projection, which is not reached when a
    cache skips the block or predicts the FFN output (a hook on the block itself would fire either way).
    """

    def __init__(self, transformer):
        self.calls = 0
        self.computed = 0
        transformer.register_forward_pre_hook(self._call)
        transformer.blocks[-1].ffn.net[0].register_forward_pre_hook(self._computed)

    def _call(self, *_):
        self.calls += 1

    def _computed(self, module, args):
        self.computed += args[0].shape[0] if args and hasattr(args[0], "shape") else 1  # a CFG batch = 2

    def reset(self) -> None:
        self.calls = self.computed = 0


def install_forward_counter(pipe) -> ForwardCounter:
    pipe._wan_ui_forward_counter = ForwardCounter(pipe.transformer)
    return pipe._wan_ui_forward_counter


def forward_counter(pipe) -> ForwardCounter:
    return getattr(pipe, "_wan_ui_forward_counter", None) or install_forward_counter(pipe)


class Clock:
    """Synchronised phase timer with per-phase peak memory on CUDA."""

    def __init__(self, device: str):
        self.cuda = device == "cuda" and torch.cuda.is_available()
        self.phases: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def start_run(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def phase(self, name: str):
        clock = self

        class _Phase:
            def __enter__(self):
                clock.sync()
                if clock.cuda:
                    torch.cuda.reset_peak_memory_stats()
                self.t0 = time.perf_counter()
                return self

            def __exit__(self, *exc):
                clock.sync()
                clock.phases[name] = time.perf_counter() - self.t0
                if clock.cuda:
                    clock.peaks[name] = torch.cuda.max_memory_allocated() / 2**20
                return False

        return _Phase()

    def vram(self) -> tuple[float | None, float | None, str | None]:
        if not self.cuda:
            return None, None, "no CUDA device: GPU memory is not measured on CPU"
        return max(self.peaks.values(), default=0.0), torch.cuda.max_memory_reserved() / 2**20, None


class NvmlSampler:
    """Background sampler of device memory used (MiB) at `hz`; start/stop cleanly every run.

    `nvml` is the pynvml module (nvidia-ml-py) or a stand-in with the same three calls, for tests.
    """

    def __init__(self, index: int = 0, hz: float = 10.0, nvml=None):
        self.index, self.period = index, 1.0 / hz
        self._nvml = nvml
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB used)
        self.error: str | None = None

    def _module(self):
        if self._nvml is None:
            import pynvml  # optional: NVML exists only where an NVIDIA driver is installed

            self._nvml = pynvml
        return self._nvml

    def start(self) -> "NvmlSampler":
        self.stop()
        self.samples, self.error = [], None
        initialised = False
        try:
            nvml = self._module()
            nvml.nvmlInit()
            initialised = True
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as e:  # no driver, no GPU, package missing
            self.error = f"NVML unavailable: {type(e).__name__}: {e}"
            if initialised:
                self._nvml.nvmlShutdown()
            return self
        self._stop.clear()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        nvml = self._nvml
        while not self._stop.is_set():
            try:
                used = nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
                self.samples.append((time.perf_counter() - self._t0, used))
            except Exception as e:
                self.error = f"NVML read failed: {e}"
                break
            self._stop.wait(self.period)

    def stop(self) -> float | None:
        """Stop the thread; return the peak MiB seen (None if nothing was sampled)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
        return max((s[1] for s in self.samples), default=None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
