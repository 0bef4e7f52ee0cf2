"""Hugging Face ZeroGPU: how long a generation holds the GPU, and running the app's GPU work under `spaces.GPU`.

On a ZeroGPU Space each call of a function decorated with `spaces.GPU(duration=...)` borrows a GPU for at most
`duration` seconds (a shorter request gets a better place in the queue; the visitor is charged what was used).
The call runs in a forked worker process: its arguments and its result are pickled, so the decorated function
takes plain values (a request, an `OptimizationSet`, a `gr.Progress`) and reaches the model manager through its
closure (the worker is a fork of the app and is reused while idle, so a built pipeline stays resident there).

`estimate_gpu_seconds(request, options)` is pure (no torch, no GPU): per-forward times measured on an H200
(docs/benchmarks/README.md, "Seconds per transformer forward against the floors"), scaled
by the token count, plus decode, model load and compile warm-up, with a safety margin.

Without the `spaces` package (or outside ZeroGPU, where `spaces.GPU` returns the function unchanged),
`gpu_function(task, duration)` is `task` itself and the app runs in this process as before.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wan_ui.core.errors import UnavailableError
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import GenerationRequest, validate_request
from wan_ui.optim.cfg import planned_forwards


# ---- the estimate -----------------------------------------------------------------------------------------
def _fit_forward_time(p1: tuple[int, float], p2: tuple[int, float]) -> tuple[float, float]:
    """(a, b) of t(N) = a*N + b*N^2 through two (tokens, seconds) points: linear layers grow with the token
    count N, attention with N^2."""
    (n1, t1), (n2, t2) = p1, p2
    b = (t2 / n2 - t1 / n1) / (n2 - n1)
    return t1 / n1 - b * n1, b


# Seconds per transformer forward (one CFG branch), bf16, SDPA, full H200 (docs/benchmarks/README.md, the floors):
# 0.614 s at 32,760 tokens (official480: 21 x 30 x 52), 3.20 s at 87,750 tokens (report: 25 x 45 x 78).
# Fitted: 8.2e-6 s/token + 3.2e-10 s/token^2 -> attention is ~80 % of a forward at the report's size.
FORWARD_A, FORWARD_B = _fit_forward_time((32_760, 0.614), (87_750, 3.20))

# Per-forward time relative to bf16 (H200, official480; docs/benchmarks/ "official480" report and the floors).
PRECISION_FACTOR = {"bf16": 1.0, "fp16": 1.0, "fp32": 10.1}  # fp32: 6.252 s vs 0.620 s per forward
QUANTIZATION_FACTOR = {"torchao_fp8": 1.24,  # eager FP8 rowwise: 0.761 s vs 0.614 s (the floors)
                       "bnb_nf4": 1.04, "bnb_int8": 1.04}  # "Report best" (NF4 + fp16): 0.644 s vs 0.620 s
OFFLOAD_FACTOR = {"group_block": 1.08, "group_leaf": 1.08,  # "Low VRAM" (group_leaf): 0.667 s vs 0.620 s
                  "model": 1.1,  # not measured: whole-model moves between text encoder, transformer and VAE
                  "sequential": 3.0}  # not measured: every layer crosses PCIe each forward; a guess, kept high
# VAE decode, seconds per output pixel x frame: fp32 10.0 s and bf16 1.8 s at official480 (832 x 480 x 81 =
# 32.3 M), 26.9 s and 4.9 s at the report's 87.2 M (the floors); tiled bf16 with the VAE resident (H200,
# docs/benchmarks/README.md, "VAE decode"): 256 px tiles 4.3 s (official480) and 10.1 s (report), 512 px tiles 3.2 s
# and 8.3 s inside the "Low VRAM" runs; 384 px interpolated.
DECODE_S_PER_PIXEL = {"fp32": 3.1e-7, "bf16": 5.6e-8, "tiled256": 1.33e-7, "tiled384": 1.15e-7, "tiled512": 9.8e-8}
# First-call compile time: regional 12-80 s, FP8 included (its warm-up 16-31 s on an H200 since torchao no longer
# switches on coordinate-descent tuning: docs/benchmarks/README.md, "FP8 compiles in seconds"); full-model 248 s (the
# floors).
COMPILE_S = {"none": 0.0, "regional": 80.0, "full": 250.0}
LOAD_S = 15.0  # building the pipeline in a fresh worker: 2.2 s (bf16) to 10.9 s (Low VRAM) measured, + disk
TEXT_ENCODE_S = 1.0  # UMT5 of 2 x 512 tokens: 0.05-0.6 s measured
SCORE_S = 10.0  # CLIP + LPIPS + SSIM of one video (small models); not measured on a GPU
MARGIN = 1.25  # on everything measured: card-to-card spread, a busier host
MIN_S = 10
# ZeroGPU's default device is a slice of an H200: "NVIDIA H200 MIG 3g.71gb" with 60 of the H200's 132 SMs
# (the `spaces` package's config, ZEROGPU_CUDA_MULTI_PROCESSOR_COUNT), so about 60/132 of its throughput.
ZEROGPU_SPEED = 60 / 132


@dataclass(frozen=True)
class GpuTimeEstimate:
    """Seconds on a full H200 unless `speed` says otherwise; `total_s` includes the margin."""
    forwards: int  # transformer forwards planned (steps + CFG steps), before any cache skip
    tokens: int  # per forward
    per_forward_s: float
    denoise_s: float
    decode_s: float
    load_s: float
    compile_s: float
    quality_s: float
    total_s: float

    @property
    def seconds(self) -> int:
        return max(MIN_S, math.ceil(self.total_s))


def forward_seconds(tokens: int, options: OptimizationSet) -> float:
    """One transformer forward (one CFG branch) on a full H200. Step caches and compile can only make it faster,
    so they are left out: the estimate is an upper bound of the steady state."""
    t = FORWARD_A * tokens + FORWARD_B * tokens ** 2
    return (t * PRECISION_FACTOR.get(options.precision, 1.0) * QUANTIZATION_FACTOR.get(options.quantization, 1.0)
            * OFFLOAD_FACTOR.get(options.offload, 1.0))


def decode_seconds(request: GenerationRequest, options: OptimizationSet) -> float:
    pixels = request.width * request.height * request.num_frames
    kind = f"tiled{options.vae_tile}" if options.vae_tiling else options.vae_precision
    return pixels * DECODE_S_PER_PIXEL.get(kind, DECODE_S_PER_PIXEL["fp32"])


def compile_seconds(options: OptimizationSet) -> float:
    return COMPILE_S.get(options.compile, 0.0)


def estimate_gpu_time(request: GenerationRequest, options: OptimizationSet, *, speed: float = 1.0,
                      quality: bool = False, load: bool = True) -> GpuTimeEstimate:
    """The parts of one generation's GPU time. speed: throughput relative to a full H200 (ZEROGPU_SPEED on
    ZeroGPU); quality: quality metrics follow, which may first generate the no-optimization baseline video;
    load: the pipeline is (re)built in this call."""

    request = validate_request(request)
    tokens = request.tokens_per_forward()
    forwards = planned_forwards(request.guidance_scale, request.num_inference_steps, options.cfg_truncation)
    per_forward = forward_seconds(tokens, options)
    denoise, decode = forwards * per_forward, decode_seconds(request, options)
    load_s = LOAD_S if load else 0.0
    compile_s = compile_seconds(options)
    quality_s = 0.0
    if quality:
        quality_s = SCORE_S
        if options != OptimizationSet():  # the baseline video: defaults, generated once per request
            base = OptimizationSet()
            quality_s += forwards * forward_seconds(tokens, base) + decode_seconds(request, base) + LOAD_S
    total = (TEXT_ENCODE_S + denoise + decode + load_s + compile_s + quality_s) * MARGIN / speed
    return GpuTimeEstimate(forwards, tokens, per_forward, denoise, decode, load_s, compile_s, quality_s, total)


def estimate_gpu_seconds(request: GenerationRequest, options: OptimizationSet, *, speed: float = 1.0,
                         quality: bool = False) -> int:
    """Whole seconds to ask ZeroGPU for one generation (at least MIN_S)."""
    return estimate_gpu_time(request, options, speed=speed, quality=quality).seconds


def estimate_comparison_seconds(request: GenerationRequest, sets: list[OptimizationSet], *,
                                speed: float = 1.0, quality: bool = False) -> int:
    """Every set in turn; a set loads weights only when its load-time part differs from the previous set's."""
    total, previous = 0.0, None
    for opts in sets:
        rebuild = previous is None or opts.load_key() != previous.load_key()
        total += estimate_gpu_time(request, opts, speed=speed, load=rebuild).total_s
        previous = opts
    if quality and sets:
        base = OptimizationSet()
        total += SCORE_S * len(sets) * MARGIN / speed
        if base not in sets:  # the no-optimization video every set is scored against, generated once
            total += estimate_gpu_time(request, base, speed=speed).total_s
    return max(MIN_S, math.ceil(total))


# ---- running under spaces.GPU -----------------------------------------------------------------------------
def load_spaces():
    """The `spaces` module where it imports (Hugging Face Spaces), else None. Import it before CUDA starts:
    on ZeroGPU it patches torch at import."""
    try:
        import spaces  # present only on a Hugging Face Space
    except ImportError:
        return None
    return spaces


class FileFlag:
    """A cancel flag that crosses into ZeroGPU's forked worker: set = the file exists. Pickles as its path;
    `generate()` checks `is_set()` once per denoising step (one stat call)."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def set(self) -> None:
        Path(self.path).touch()


@contextmanager
def mirrored_flag(event: threading.Event | None, poll_s: float = 0.2):
    """A FileFlag that is set as soon as `event` is (a watcher thread), removed on exit. None -> None."""
    if event is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="wan_ui-cancel-")
    os.close(fd)
    os.unlink(path)  # exists = cancelled
    flag, done = FileFlag(path), threading.Event()

    def watch() -> None:
        while not done.is_set():
            if event.wait(poll_s):
                flag.set()
                return

    watcher = threading.Thread(target=watch, name="wan_ui-cancel-mirror", daemon=True)
    watcher.start()
    try:
        yield flag
    finally:
        done.set()
        watcher.join()
        if os.path.exists(path):
            os.unlink(path)


def gpu_function(task: Callable, duration: Callable[..., int], spaces=None) -> Callable:
    """`task(cancel, *args, **kwargs)` run under `spaces.GPU(duration=duration(*args, **kwargs))` when the
    `spaces` package imports and decorates it (on ZeroGPU); else `task` itself.

    Under ZeroGPU the threading.Event `cancel` cannot cross into the worker process, so it is mirrored into a
    FileFlag for the duration of the call. Everything else in args/kwargs and the result must pickle."""
    spaces = spaces if spaces is not None else load_spaces()
    if spaces is None:
        return task
    decorated = spaces.GPU(duration=lambda cancel, *args, **kwargs: duration(*args, **kwargs))(task)
    if decorated is task:  # not on ZeroGPU: spaces.GPU is effect-free
        return task

    def run(cancel, *args, **kwargs):
        with mirrored_flag(cancel) as flag:
            return decorated(flag, *args, **kwargs)

    run.zerogpu = True
    return run


def on_zerogpu(fn: Callable) -> bool:
    """Whether `fn` (from gpu_function) runs in ZeroGPU's worker."""
    return bool(getattr(fn, "zerogpu", False))


def check_zerogpu(options: OptimizationSet) -> None:
    """What ZeroGPU cannot run, said before a GPU is requested: torch.compile is unsupported there (the Hub's
    ZeroGPU docs; ahead-of-time compilation would be the way)."""
    if options.compile != "none":
        raise UnavailableError(f"compile={options.compile} does not run on ZeroGPU (torch.compile is not "
                               f"supported there); choose compile=none", field="compile")
