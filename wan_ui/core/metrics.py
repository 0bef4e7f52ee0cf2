"""The metrics of one run, each defined once here (docs/METRICS.md repeats these definitions).

Timing is wall clock with the device synchronised before every clock read (`Clock`); memory is torch's peak
allocator statistics over the whole run and per phase, plus device memory in use sampled by NVML in a background
thread (`NvmlSampler`), on the GPU the run used: NVML numbers GPUs its own way, so the device is found by UUID or
PCI location (`nvml_handle_for`).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# `Metrics.warmup_method` of the app's own runs: estimated inside the first run after a (re)build or a run-time
# change, or none at all on a pipeline a generation already warmed (`generate._assemble_metrics`)
WARMUP_IN_RUN = "first step - median step (first generation after a build)"
WARMUP_NONE_WARM = "none: the pipeline was already warm (a generation ran on it since its build or option change)"
# what kind of run a warm-up figure describes, as a table says it beside the value (`warmup_kind`)
WARMUP_KINDS = {WARMUP_IN_RUN: "first run after a build or option change", WARMUP_NONE_WARM: "pipeline already warm"}


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
    - peak_vram_mb / peak_reserved_mb: torch.cuda.max_memory_allocated / max_memory_reserved over the whole
      run: text encode, denoise, decode and the moments between them (stats reset at its start; `Clock` folds
      the counters in before each per-phase reset). Reserved memory includes what the caching allocator already
      held when the run started. `phase_peak_vram_mb` / `phase_peak_reserved_mb`: the same two per phase
      ({"text_encode", "denoise", "decode"} -> MiB). null / {} on CPU, with `vram_note` saying why.
    - nvml_peak_used_mb: peak device memory in use (all processes, as nvidia-smi shows) sampled at >= 4 Hz, on
      the GPU the run used (matched by UUID, else PCI location: `nvml_handle_for`).
    - forwards_planned: transformer forwards the request asks for (steps + CFG steps); forwards_computed:
      forwards that ran the transformer blocks (the last block's FFN ran); the rest were skipped by a cache.
      Under torch.compile (hooks inside compiled blocks are not run reliably): MagCache's replayed schedule (exact:
      its skip decision reads no activations), null for the other caches.
    - clip_score, lpips_vs_baseline, psnr_vs_baseline, ssim_vs_baseline, lpips_temporal: see `quality.py`.
    - reference_steps / reference_guidance: the step count and CFG scale of the request whose unoptimized video
      the *_vs_baseline metrics compared with: the user's request. A set that loads a few-step distilled LoRA
      runs with its own steps and guidance (`distilled.request_for_set`), so there they differ from the run's
      own; null when there was no reference.
    - option_notes (not a measurement): what an option of the set does not do on this hardware, e.g. attention
      slicing on fused SDPA kernels (`options.option_notes`); shown with the result.
    """

    load_time_s: float | None = None
    load_breakdown: dict = field(default_factory=dict)
    rebuilt: bool | None = None
    warmup_time_s: float | None = None
    warmup_method: str = WARMUP_IN_RUN
    clip_latency_s: float | None = None
    phases: dict = field(default_factory=dict)  # text_encode_s, denoise_s, decode_s
    step_latencies_s: list = field(default_factory=list)
    frame_latency_s: float | None = None
    throughput_fps: float | None = None
    peak_vram_mb: float | None = None
    peak_reserved_mb: float | None = None
    phase_peak_vram_mb: dict = field(default_factory=dict)  # phase -> peak allocated, MiB
    phase_peak_reserved_mb: dict = field(default_factory=dict)  # phase -> peak reserved, MiB
    nvml_peak_used_mb: float | None = None
    vram_note: str | None = None
    forwards_planned: int | None = None
    forwards_computed: int | None = None
    clip_score: float | None = None
    lpips_vs_baseline: float | None = None
    psnr_vs_baseline: float | None = None
    ssim_vs_baseline: float | None = None
    lpips_temporal: float | None = None
    reference_steps: int | None = None  # num_inference_steps of the *_vs_baseline reference's request
    reference_guidance: float | None = None  # guidance_scale of that request
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


def warmup_kind(metrics: dict) -> str | None:
    """The kind of run a metrics dict's warm-up describes ("first run after a build or option change", "pipeline
    already warm"), or None for another method (the benchmark's end-to-end one says its own)."""
    return WARMUP_KINDS.get(metrics.get("warmup_method"))


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
    a step cache's skips as warm-up (a skipped MagCache step takes almost no time, so a dense first step would
    count nearly whole)."""
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
    """Synchronised phase timer with peak memory over the whole run and per phase, on CUDA.

    torch keeps one peak counter per device (allocated and reserved), and a phase can read its own peak only by
    resetting it at its start. Before each reset, and when the run's peak is read (`vram`), the counter is
    folded into the run's maxima, so the run's peak covers every phase and the moments between them (not only
    the last phase). `memory` is `torch.cuda` or a stand-in with its `synchronize`, `reset_peak_memory_stats`,
    `max_memory_allocated` and `max_memory_reserved` (tests); given one, the clock measures memory on any device.
    """

    def __init__(self, device: str, memory: Any = None):
        if memory is None and device == "cuda" and torch.cuda.is_available():
            memory = torch.cuda
        self.memory = memory
        self.cuda = memory is not None
        self.phases: dict[str, float] = {}
        self.peaks: dict[str, float] = {}  # phase -> peak allocated, MiB
        self.reserved_peaks: dict[str, float] = {}  # phase -> peak reserved, MiB
        self._run_allocated = 0.0  # MiB, peak allocated of the run so far (folded in before each reset)
        self._run_reserved = 0.0  # MiB, peak reserved of the run so far

    def sync(self) -> None:
        if self.cuda:
            self.memory.synchronize()

    def start_run(self) -> None:
        if self.cuda:
            self.memory.synchronize()
            self.memory.reset_peak_memory_stats()
            self._run_allocated = self._run_reserved = 0.0

    def _fold(self) -> tuple[float, float]:
        """The counter's peaks since its last reset, (allocated, reserved) MiB, folded into the run's."""
        allocated = self.memory.max_memory_allocated() / 2**20
        reserved = self.memory.max_memory_reserved() / 2**20
        self._run_allocated = max(self._run_allocated, allocated)
        self._run_reserved = max(self._run_reserved, reserved)
        return allocated, reserved

    def phase(self, name: str):
        clock = self

        class _Phase:
            def __enter__(self):
                clock.sync()
                if clock.cuda:
                    clock._fold()  # what ran since the last reset belongs to the run's peak
                    clock.memory.reset_peak_memory_stats()
                self.t0 = time.perf_counter()
                return self

            def __exit__(self, *exc):
                clock.sync()
                clock.phases[name] = time.perf_counter() - self.t0
                if clock.cuda:
                    clock.peaks[name], clock.reserved_peaks[name] = clock._fold()
                return False

        return _Phase()

    def vram(self) -> tuple[float | None, float | None, str | None]:
        """(peak allocated, peak reserved, note) of the whole run so far, MiB; (None, None, why) without CUDA."""
        if not self.cuda:
            return None, None, "no CUDA device: GPU memory is not measured on CPU"
        self._fold()
        return self._run_allocated, self._run_reserved, None


# ---- which NVML device is torch's cuda:N ------------------------------------------------------------------
@dataclass(frozen=True)
class GpuIdentity:
    """What names one physical GPU the same way in torch and in NVML. Ordinals do not: torch numbers the GPUs
    CUDA_VISIBLE_DEVICES leaves (in CUDA_DEVICE_ORDER), NVML numbers every GPU of the machine by PCI location."""

    uuid: str | None = None  # lower-case hex with dashes, without NVML's "GPU-" / "MIG-" prefix
    pci: tuple[int, int, int] | None = None  # (domain, bus, device) of the PCI location


def normalize_uuid(value) -> str | None:
    """'GPU-8F0C...' (NVML, str or bytes) or '8f0c...' (torch) -> '8f0c...'; None for nothing."""
    if value is None:
        return None
    text = (value.decode() if isinstance(value, bytes) else str(value)).strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text or None


def cuda_identity(index: int) -> GpuIdentity:
    """torch's view of cuda:<index>: `get_device_properties(index).uuid` and its PCI domain/bus/device ids."""
    props = torch.cuda.get_device_properties(index)
    pci = None
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        pci = (int(props.pci_domain_id), int(props.pci_bus_id), int(props.pci_device_id))
    return GpuIdentity(normalize_uuid(getattr(props, "uuid", None)), pci)


def nvml_identity(nvml, handle) -> GpuIdentity:
    """NVML's view of one device: `nvmlDeviceGetUUID` and `nvmlDeviceGetPciInfo`'s domain/bus/device; a field
    NVML cannot read is None."""
    try:
        uuid = normalize_uuid(nvml.nvmlDeviceGetUUID(handle))
    except Exception:  # NVMLError (NotSupported, GpuIsLost, ...): match on the other field
        uuid = None
    try:
        info = nvml.nvmlDeviceGetPciInfo(handle)
        pci = (int(info.domain), int(info.bus), int(info.device))
    except Exception:  # as above
        pci = None
    return GpuIdentity(uuid, pci)


def match_gpu(want: GpuIdentity, candidates: list[GpuIdentity]) -> int | None:
    """Position in `candidates` (NVML's devices in NVML order) of the GPU `want` names: the one with its UUID,
    else the one at its PCI location (a MIG instance's UUID is no NVML device's; its PCI location is its GPU's).
    None when nothing matches, or when two candidates do (no guess)."""
    for key in ("uuid", "pci"):
        value = getattr(want, key)
        hits = [i for i, c in enumerate(candidates) if value is not None and getattr(c, key) == value]
        if len(hits) == 1:
            return hits[0]
    return None


def nvml_handle_for(nvml, cuda_index: int, want: GpuIdentity | None):
    """NVML's handle of the GPU torch calls cuda:<cuda_index>. `want` is that GPU's identity (`cuda_identity`):
    NVML's devices are searched for it, because NVML ignores CUDA_VISIBLE_DEVICES (with it set to "2,3",
    torch's cuda:0 is NVML's device 2). Without an identity (or one with no field), NVML's device of the same
    ordinal: right only when torch sees every GPU in PCI order. Raises LookupError when no device matches."""
    if want is None or (want.uuid is None and want.pci is None):
        return nvml.nvmlDeviceGetHandleByIndex(cuda_index)
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    found = match_gpu(want, [nvml_identity(nvml, h) for h in handles])
    if found is None:
        raise LookupError(f"no NVML device matches cuda:{cuda_index} (UUID {want.uuid}, PCI {want.pci})")
    return handles[found]


AUTO = "auto"  # identity argument: read it from torch (`resolve_identity`)


def resolve_identity(identity, cuda_index: int, nvml_injected: bool) -> GpuIdentity | None:
    """The identity `NvmlSampler` / `GpuMonitor` look for. A GpuIdentity or None as given; AUTO: torch's view of
    cuda:<cuda_index> when the real NVML is used and CUDA is up, else None (a stand-in NVML describes no real
    GPU; without CUDA there is no torch device to match)."""
    if identity != AUTO:
        return identity
    if nvml_injected or not torch.cuda.is_available():
        return None
    return cuda_identity(cuda_index)


class NvmlSampler:
    """Background sampler of device memory used (MiB) at `hz`; start/stop cleanly every run.

    `index` is torch's CUDA ordinal (cuda:<index>); the NVML device sampled is the one with that GPU's
    `identity` (`nvml_handle_for`): AUTO reads it from torch (`default_identity`), None samples NVML's device
    `index`. Under MIG the PCI match gives the whole GPU, all its instances. `nvml` is the pynvml module
    (nvidia-ml-py) or a stand-in with the same calls, for tests.
    """

    def __init__(self, index: int = 0, hz: float = 10.0, nvml=None, identity: GpuIdentity | str | None = AUTO):
        self.index, self.period = index, 1.0 / hz
        self._nvml = nvml
        self._injected = nvml is not None
        self.identity = identity
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
            want = resolve_identity(self.identity, self.index, self._injected)
            self._handle = nvml_handle_for(nvml, self.index, want)
        except Exception as e:  # no driver, no GPU, package missing, no NVML device matches
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
