"""Timing one call on the GPU (or the CPU, for a dry run), shared by the kernel scripts (time_sparse_layout.py,
gpu_flex_tune.py): a first call (compile, autotune, allocations) timed apart, then the median of `iters` calls
timed with CUDA events (the GPU's own clock, without the host's launch latency) or the host clock on a CPU."""

from __future__ import annotations

import statistics
import time

import torch


def timed(fn, iters: int, cuda: bool) -> tuple[float, float, object]:
    """(median seconds of `iters` calls, seconds of the first call, the first call's output)."""
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    first, times = time.perf_counter() - t0, []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times), first, out
