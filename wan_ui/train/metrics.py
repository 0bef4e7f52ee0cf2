"""What a run measures: per-step records (memory and an optional JSONL file) and the summary of the steady state.
The record fields are described in docs/TRAINING.md (Metrics)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from wan_ui.core.devices import is_cuda


class MetricsLog:
    """Per-step records in memory, and appended to a JSONL file when one is given."""

    def __init__(self, path: str | None):
        self.records: list[dict] = []
        self._file = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        if record.get("event") == "step":
            self.records.append(record)
        if self._file:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def summarize(records: list[dict], warmup: int = 2) -> dict:
    """Steady state over the steps after the first `warmup` (compile, autotuning and allocator growth land
    there); `first_steps_s` lists those separately. Times in seconds, memory in MiB."""
    if not records:
        return {"steps": 0}
    times = [r["step_time_s"] for r in records]
    steady = times[warmup:] if len(times) > warmup + 1 else times
    median = statistics.median(steady)
    losses = [r["loss"] for r in records]
    peaks = [r["peak_vram_mb"] for r in records if r["peak_vram_mb"] is not None]
    k = min(5, len(losses))
    return {
        "steps": len(records), "first_step": records[0]["step"], "last_step": records[-1]["step"],
        "median_step_s": median, "mean_step_s": statistics.fmean(steady),
        "p90_step_s": sorted(steady)[int(0.9 * (len(steady) - 1))], "first_steps_s": times[:warmup],
        "samples_per_s": records[0]["batch_size"] / median,
        "tokens_per_s": records[0]["batch_size"] * records[0]["tokens_per_sample"] / median,
        "peak_vram_mb": max(peaks) if peaks else None,
        "loss_first5_mean": statistics.fmean(losses[:k]), "loss_last5_mean": statistics.fmean(losses[-k:]),
        "total_train_s": sum(times),
    }


def peak_vram_mb(device: str) -> float | None:
    """Peak allocated CUDA memory since the last reset, in MiB; None on the CPU (no counter there)."""
    return torch.cuda.max_memory_allocated() / 2**20 if is_cuda(device) else None
