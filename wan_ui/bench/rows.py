"""One benchmark row: one optimization set measured on one workload, one line of results.jsonl.

`BenchRow.to_dict()` writes and `BenchRow.from_dict()` reads exactly the JSON object of a results.jsonl line
(schema "wan_ui.bench/1"). A row written before a field existed loads with that field's default (`world_size` 1,
`parallel_mode` "none", `steps_note` None, `option_notes` []); a key this module does not know is an error (a file
written by a newer version would otherwise lose data when rewritten). A few keys are written only when they carry
a value (`bench`, `wall_s`, `node`, `cuda_visible_devices`, `quality.error`, `bench.warmup_raw_s`,
`bench.clip_latency_spread_s`), so every results.jsonl already on disk reads and writes back unchanged. Times are
seconds, memory MiB (2**20 bytes), as in `wan_ui/core/metrics.py`.

The runner, the child processes, the report, the extrapolation and the parallel benchmark all pass `BenchRow`s;
JSON appears only at the file and process boundaries.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from dataclasses import dataclass, field

from wan_ui.core.metrics import Metrics

SCHEMA = "wan_ui.bench/1"
STATUSES = ("pending", "partial", "ok", "unavailable", "incompatible", "oom", "error", "timeout", "crashed", "skipped")
OMIT_NONE = {"omit_none": True}  # field metadata: the key is left out of the JSON while the value is None


def step_median(step_latencies: list[float]) -> float | None:
    """Median step time, leaving out step 1 when there are two or more (it carries the pipeline's set-up and, in
    a first run, compilation)."""
    if not step_latencies:
        return None
    return statistics.median(step_latencies[1:] if len(step_latencies) > 1 else step_latencies)


@dataclass
class SetInfo:
    """The optimization set a row measured."""

    name: str = ""  # display name in the report (label, preset name or the terms joined)
    spec: str = ""  # the --sets item as typed; `sets.parse_set(spec)` rebuilds the set
    slug: str = ""  # the name for file names
    is_baseline: bool = False  # the first set: the baseline of every ratio
    options: dict = field(default_factory=dict)  # OptimizationSet.to_dict(): every option's value
    changed: dict = field(default_factory=dict)  # OptimizationSet.diff_from_default(): options off their default


@dataclass
class Method:
    """How the set was measured."""

    repeats: int = 0  # timed repeats after the warm-up run (0: the single run is the record)
    runs_done: int = 0  # runs that finished, the warm-up run included
    process_per_set: bool = False  # measured in a fresh child process (cold load)
    statistic: str = "median clip latency over the repeats"  # which run is the steady-state record


@dataclass
class RunSummary:
    """One run of a set (warm-up first), kept next to the steady-state record."""

    clip_latency_s: float | None = None  # text encode + denoise + decode, s
    phases: dict = field(default_factory=dict)  # text_encode_s, denoise_s, decode_s
    peak_vram_mb: float | None = None  # torch.cuda.max_memory_allocated over the run, MiB; None on CPU
    nvml_peak_used_mb: float | None = None  # device memory in use (all processes), sampled, MiB
    forwards_computed: int | None = None  # transformer forwards that ran the blocks (not skipped by a cache)
    step_median_s: float | None = None  # `step_median` of the run's step latencies, s
    warmup: bool = False  # the first run after the build (compile, autotuning land here)


@dataclass
class BenchStats:
    """Statistics over all runs of a set."""

    first_run_clip_latency_s: float | None = None  # the warm-up run's clip latency, s
    peak_vram_max_mb: float | None = None  # largest peak allocated over all runs (warm-up included), MiB
    steady_runs: int = 0  # timed repeats behind the median (0: the single run is the record)
    clip_latency_median_s: float | None = None  # median clip latency of the steady runs, s
    warmup_raw_s: float | None = field(default=None, metadata=OMIT_NONE)  # first run - median, unclamped, s
    clip_latency_spread_s: float | None = field(default=None, metadata=OMIT_NONE)  # max - min steady clip, s


@dataclass
class QualityInfo:
    """Whether quality was scored, and why each empty quality cell is empty."""

    enabled: bool = False  # scored for this row (off for random weights, --no-quality, a set that did not run)
    reason: str | None = None  # why quality is off for the whole benchmark, e.g. "random weights"
    na: dict = field(default_factory=dict)  # metric key -> "n/a (why)", printed in the report instead of a number
    error: str | None = field(default=None, metadata=OMIT_NONE)  # the scorer's exception, when scoring failed


@dataclass
class BenchRow:
    """One set measured on one workload: context, status, the steady-state Metrics, every run, extrapolation."""

    schema: str = SCHEMA  # results.jsonl format version
    index: int = 0  # position in --sets; 0 is the baseline
    status: str = "pending"  # one of STATUSES; only "ok" rows count as results
    error: str | None = None  # one line: why the set did not finish
    set: SetInfo = field(default_factory=SetInfo)
    workload: str = ""  # requests.WORKLOADS key, e.g. "report"
    workload_description: str = ""
    request: dict = field(default_factory=dict)  # GenerationRequest.to_dict() of the run (its steps_run steps)
    steps_run: int = 0  # denoising steps run
    steps_full: int = 0  # the workload's step count (latencies are extrapolated to it when steps_run is less)
    steps_note: str | None = None  # why steps_run differs from what was asked
    model: str = ""  # resolved model name, e.g. "random-full" or a hub id
    model_label: str = ""
    random_weights: bool = False  # real architecture with random weights: speed and memory only
    hardware: dict = field(default_factory=dict)  # env.hardware_record(): GPU, driver, CUDA, CPU
    versions: dict = field(default_factory=dict)  # env.package_versions()
    date: str = ""  # ISO 8601 with the UTC offset, when the row was started
    command: str = ""  # the benchmark's command line as typed
    method: Method = field(default_factory=Method)
    metrics: Metrics | None = None  # the steady-state run (see Method.statistic); None before any run finished
    runs: list[RunSummary] = field(default_factory=list)
    extrapolation: dict | None = None  # extrapolate.extrapolate()'s record; None when the full step count ran
    quality: QualityInfo = field(default_factory=QualityInfo)
    bench: BenchStats | None = field(default=None, metadata=OMIT_NONE)  # None before any run finished
    wall_s: float | None = field(default=None, metadata=OMIT_NONE)  # the set's wall time, build included, s
    world_size: int = 1  # GPUs that generated the video together
    parallel_mode: str = "none"  # the parallel plan's mode (ulysses, ring, cfg, ...); "none" on one GPU
    node: str | None = field(default=None, metadata=OMIT_NONE)  # hostname of the machine that ran the set
    # CUDA_VISIBLE_DEVICES the set ran under (which card(s) of the node; Ray sets it per task); None: not set
    cuda_visible_devices: str | None = field(default=None, metadata=OMIT_NONE)

    # ---- JSON -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _dump(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchRow:
        d = _checked(cls, data)
        for key, sub in (("set", SetInfo), ("method", Method), ("quality", QualityInfo), ("bench", BenchStats)):
            if d.get(key) is not None:
                d[key] = sub(**_checked(sub, d[key]))
        if d.get("metrics") is not None:
            d["metrics"] = Metrics(**_checked(Metrics, d["metrics"]))
        d["runs"] = [RunSummary(**_checked(RunSummary, r)) for r in d.get("runs") or []]
        if d.get("status", "pending") not in STATUSES:
            raise ValueError(f"unknown status {d['status']!r} in a BenchRow record; one of {', '.join(STATUSES)}")
        return cls(**d)

    # ---- values derived from the record -----------------------------------------------------------------------
    @property
    def step_median_s(self) -> float | None:
        """Median step of the steady-state run (step 1 left out), s."""
        return step_median(self.metrics.step_latencies_s) if self.metrics else None

    @property
    def clip_latency_s(self) -> float | None:
        """Clip latency at the workload's full step count: extrapolated when fewer steps ran, else measured, s."""
        if self.extrapolation:
            return self.extrapolation["clip_latency_s"]
        return self.metrics.clip_latency_s if self.metrics else None

    def twin_key(self) -> tuple:
        """What a multi-GPU row and its 1-GPU twin share: the workload, model, request and option changes. Rows
        with the same key measured the same video; `world_size` and `parallel_mode` tell them apart."""
        return (self.workload, self.model, self.steps_run, _frozen(self.request), _frozen(self.set.changed))


def _checked(cls, data: dict) -> dict:
    """A copy of `data` after checking it names only fields of `cls`."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in a {cls.__name__} record (written by a newer "
                         f"version of wan_ui?)")
    return copy.deepcopy(dict(data))


def _dump(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get("omit_none"):
            continue
        if dataclasses.is_dataclass(value):
            value = _dump(value)
        elif isinstance(value, list):
            value = [_dump(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v) for v in value]
        else:
            value = copy.deepcopy(value)
        out[f.name] = value
    return out


def _frozen(value):
    """A hashable copy of a JSON value (dicts by sorted key)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value
