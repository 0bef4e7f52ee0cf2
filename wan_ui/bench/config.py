"""What every set of one benchmark shares (`BenchConfig`), the benchmark's log line, and the request a set runs.

Kept apart from `measure.py` so that `scoring.py` (the quality columns), which `measure.py` calls, can read them
without importing `measure.py` back.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from wan_ui.bench.sets import BenchSet
from wan_ui.core.distilled import request_for_set
from wan_ui.core.requests import WORKLOADS, GenerationRequest

MIN_SET_S = 30.0  # with less time budget left a set is not started (a child's imports and load alone take ~20 s)


@dataclass
class BenchConfig:
    """What every set of one benchmark shares (and what a child process is told, as JSON)."""

    workload: str  # requests.WORKLOADS key
    model: str  # as --model: tiny, random-full, a hub id or a folder
    out: Path  # the output folder
    steps: int | None = None  # denoising steps actually run (None: the workload's own)
    repeats: int = 1  # timed repeats after the warm-up run
    quality: bool | None = None  # None: on for real weights, off for random weights
    device: str | None = None  # None: cuda when available
    process_per_set: bool = False  # each set in a fresh child process (child.py)
    set_timeout_s: float | None = None  # per set, process_per_set only
    time_budget_s: float | None = None  # whole benchmark: later sets are skipped, children killed in time
    progress: bool = False  # show the pipeline's progress bars
    command: str = ""  # the command line as typed, recorded in every row

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), out=str(self.out))

    @classmethod
    def from_dict(cls, data: dict) -> BenchConfig:
        return cls(**dict(data, out=Path(data["out"])))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def request_for(cfg: BenchConfig, bset: BenchSet, distilled: bool = True) -> tuple[GenerationRequest, int]:
    """The workload's request with this set's step count; returns (request, steps_full). Sets with sparse attention
    always run every step: their dense steps scale with the step count, so a shortened run would not extrapolate.
    A set that loads a few-step distilled LoRA runs with its published steps and guidance (its full count);
    `distilled=False` gives the request before that, the reference of its quality metrics (scoring.py)."""
    workload = WORKLOADS[cfg.workload].request
    base = request_for_set(workload, bset.options) if distilled else workload
    steps = bset.steps or cfg.steps or base.num_inference_steps
    if bset.options.sparse_attention != "none":
        steps = base.num_inference_steps
    return dataclasses.replace(base, num_inference_steps=min(steps, base.num_inference_steps)), \
        base.num_inference_steps
