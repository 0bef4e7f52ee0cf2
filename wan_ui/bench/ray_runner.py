"""`python -m wan_ui.bench --ray ADDRESS`: the sets spread over a Ray cluster's GPUs, one set per GPU process.

What runs where:
  - this machine (the driver) parses the sets, connects to the cluster (`connect`), submits one Ray task per set and
    merges the rows into OUT/results.jsonl, report.md and the charts, in --sets order, as they come back;
  - every set runs in a Ray task of its own (`measure_on_worker`; `num_gpus=1`, or 0 on a CPU-only cluster;
    `max_calls=1`, so each set gets a fresh worker process and Ray's CUDA_VISIBLE_DEVICES names its card). The task
    checks the set can run on its node (`measure.precheck`), then measures it exactly as `--process-per-set` does:
    `child.run_child` in a scratch folder on the worker's own disk (a fresh Python process, its time limit, its
    crash caught in the row). The worker reads and writes nothing on the driver's disk: the row comes back through
    Ray.
The task is a Ray generator (`ray.wait` and `ray.cancel` take its ObjectRefGenerator): its first item says where it
runs (hostname, visible cards, `env.hardware_record()`), its last item is the row, so a worker that dies mid-set
still leaves a `crashed` row naming its node (one that dies before that first item reaches the driver is named as
"a node it had not reported yet"). `TaskPool` holds that protocol and knows nothing of benchmark rows:
another sweep (the tuner's prompts, say) can spread its own generator the same way.

The baseline's quality reference: when quality is scored, the baseline (the first set) runs first; its worker
returns its video (frames and request, `scoring.QualityPlan.reference_payload`), the driver puts it in Ray's
object store once and passes it to every other set's task, whose worker writes it into its own OUT/frames/
(`install_reference`) before the child scores against it. Without quality (random weights, --no-quality) every
set starts at once. A baseline that fails leaves the others' *_vs_baseline cells "n/a (no baseline video)".

Time limits: --set-timeout and --time-budget hold per set as on one machine: the worker gives its child
min(set timeout, budget left when the set starts) and records a set that starts with less than MIN_SET_S of the
budget left as skipped. The driver cancels a task that overruns that limit by GRACE_S (a hung worker), and a task
still waiting for a GPU GRACE_S after the budget ends.

Connecting is the app's (`wan_ui.cluster.serving.connect`: a TCP probe of the address first, this package shipped to
every node with Ray's `py_modules`, so workers and their child processes run the driver's version of wan_ui).
`ray` is optional: it is imported only then, so `python -m wan_ui.bench` without --ray never loads it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wan_ui.bench.child import run_child
from wan_ui.bench.config import MIN_SET_S, BenchConfig, log
from wan_ui.bench.env import hardware_record
from wan_ui.bench.measure import base_row, precheck
from wan_ui.bench.report import write_outputs
from wan_ui.bench.rows import BenchRow
from wan_ui.bench.scoring import make_quality
from wan_ui.bench.sets import BenchSet, parse_set
from wan_ui.cluster.serving import connect
from wan_ui.cluster.worker import import_ray
from wan_ui.core.errors import UnavailableError, first_line
from wan_ui.core.hardware import probe_hardware

GRACE_S = 60.0  # beyond its own limit a task may take this long to return: a worker start, the child's kill, the row


# ---- 1. the cluster ------------------------------------------------------------------------------------------
def cluster_device(ray, asked: str | None) -> str:
    """The sets' device: `asked`, else cuda when the cluster has a GPU anywhere (this machine may have none)."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if asked == "cuda" and not gpus:
        raise UnavailableError("--device cuda: the Ray cluster of --ray has no GPU", field="device")
    return asked or ("cuda" if gpus else "cpu")


def where_text(where: dict | None) -> str:
    """'node gpu-3 (CUDA_VISIBLE_DEVICES=2)' for a crash message; says so when the task never reported it."""
    if not where:
        return "a node it had not reported yet"
    cards = where.get("cuda_visible_devices")
    return f"node {where['node']}" + (f" (CUDA_VISIBLE_DEVICES={cards})" if cards else "")


# ---- 2. tasks in flight ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How one task ended."""

    key: int  # what the caller submitted it as
    where: dict | None  # the task's first item (node, cards, hardware); None when it died before sending it
    value: dict | None  # the task's last item; None when it failed
    failure: str | None = None  # why there is no value: Ray's error in one line
    timed_out: bool = False  # cancelled by the driver: past its limit (started) or the deadline (never started)


@dataclass
class _Task:
    key: int
    gen: object  # the task's ObjectRefGenerator
    limit_s: float | None  # its own limit, counted from its first item
    until: float | None  # time.time() after which it must not run on (the time budget)
    where: dict | None = None
    deadline: float | None = None  # time.monotonic() at which the driver cancels it


class TaskPool:
    """Ray generator tasks in flight. Each yields {"where": ...} as soon as it runs, then its result (a dict); the
    pool waits for the next task to end (`next_outcome`), and cancels one that overruns its limit by GRACE_S."""

    def __init__(self, ray, grace_s: float = GRACE_S):
        self.ray, self.grace_s, self.tasks = ray, grace_s, []

    def __len__(self) -> int:
        return len(self.tasks)

    def submit(self, key: int, remote_fn, args: tuple, limit_s: float | None = None, until: float | None = None):
        task = _Task(key, remote_fn.remote(*args), limit_s, until)
        task.deadline = self._unstarted_deadline(task)
        self.tasks.append(task)

    def _unstarted_deadline(self, task: _Task) -> float | None:
        if task.until is None:
            return None
        return time.monotonic() + max(0.0, task.until - time.time()) + self.grace_s

    def next_outcome(self) -> Outcome:
        """Block until a task ends (its result, its failure, or its cancellation)."""
        while True:
            deadlines = [t.deadline for t in self.tasks if t.deadline is not None]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready, _ = self.ray.wait([t.gen for t in self.tasks], num_returns=1, timeout=wait_s)
            if not ready:
                late = min((t for t in self.tasks if t.deadline is not None), key=lambda t: t.deadline)
                if time.monotonic() >= late.deadline:
                    return self._cancel(late)
                continue
            task = next(t for t in self.tasks if t.gen is ready[0])
            outcome = self._advance(task)
            if outcome is not None:
                self.tasks.remove(task)
                return outcome

    def _advance(self, task: _Task) -> Outcome | None:
        """Read the task's next item: None after its first (where it runs), else how it ended."""
        try:
            item = self.ray.get(next(task.gen))
        except StopIteration:
            return Outcome(task.key, task.where, None, "the task ended without a result")
        except self.ray.exceptions.RayError as e:
            return Outcome(task.key, task.where, None, f"{type(e).__name__}: {first_line(e)}")
        if task.where is None and "where" in item:
            task.where = item["where"]
            limits = [time.monotonic() + task.limit_s] if task.limit_s is not None else []
            if task.until is not None:
                limits.append(time.monotonic() + max(0.0, task.until - time.time()))
            task.deadline = min(limits) + self.grace_s if limits else None
            return None
        return Outcome(task.key, task.where, item)

    def _cancel(self, task: _Task) -> Outcome:
        self.ray.cancel(task.gen, force=True)  # force: kill the worker (and so its child) rather than wait for it
        self.tasks.remove(task)
        return Outcome(task.key, task.where, None, "cancelled by the driver", timed_out=True)

    def cancel_all(self) -> None:
        for task in self.tasks:
            self.ray.cancel(task.gen, force=True)
        self.tasks.clear()


# ---- 3. one set on a worker ---------------------------------------------------------------------------------------
def where_here() -> dict:
    """Where this process runs: hostname, the cards Ray gave it, the hardware a row records."""
    return {"node": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "hardware": hardware_record()}


def measure_on_worker(job: dict, timeout_s: float | None, until: float | None, reference):
    """The Ray task of one set (a generator): yields {"where": where_here()}, then {"row": BenchRow dict,
    "reference": the baseline's (frames, request) or None}. `job`: {"config": BenchConfig dict, "spec", "index"};
    `until`: time.time() at which the time budget ends; `reference`: the baseline's payload, or None."""
    where = where_here()
    yield {"where": where}
    cfg = BenchConfig.from_dict(job["config"])
    cfg.out = Path(tempfile.mkdtemp(prefix="wan_ui_bench_"))  # this worker's disk: rows/, frames/
    try:
        bset, index = parse_set(job["spec"]), int(job["index"])
        quality = make_quality(cfg, cfg.device)
        row = precheck(cfg, bset, index, probe_hardware())
        left = None if until is None else until - time.time()
        if row is None and left is not None and left < MIN_SET_S:
            row = base_row(cfg, bset, index)
            row.status, row.error = "skipped", f"time budget of {cfg.time_budget_s:.0f} s spent"
        if row is None:
            if reference is not None:
                quality.install_reference(*reference)
            limits = [x for x in (timeout_s, left) if x is not None]
            row = run_child(cfg, bset, index, min(limits) if limits else None)
            if row.status in ("crashed", "timeout"):
                row.error = f"on {where_text(where)}: {row.error}"
        yield {"row": row.to_dict(), "reference": quality.reference_payload() if index == 0 else None}
    finally:
        shutil.rmtree(cfg.out, ignore_errors=True)


# ---- 4. the benchmark ----------------------------------------------------------------------------------------------
def run_on_ray(cfg: BenchConfig, sets: list[BenchSet], address: str, task: Callable | None = None) -> list[BenchRow]:
    """Every set as a Ray task on the cluster at `address`; the rows merged into cfg.out in --sets order (rewritten
    as each arrives). `task`: the generator each set runs on its worker (default `measure_on_worker`, whose
    contract another must keep)."""
    started = not import_ray().is_initialized()
    ray = connect(address)  # the app's: probes the address, ships this package to the workers (py_modules)
    try:
        return _run(ray, cfg, sets, task or measure_on_worker)
    finally:
        if started:
            ray.shutdown()


def _run(ray, cfg: BenchConfig, sets: list[BenchSet], task: Callable) -> list[BenchRow]:
    cfg.device = cluster_device(ray, cfg.device)
    cfg.process_per_set = True
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "frames" / "baseline.npy").unlink(missing_ok=True)
    gpus = 1 if cfg.device == "cuda" else 0
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    log(f"Ray cluster: {len(nodes)} node(s), {ray.cluster_resources().get('GPU', 0):.0f} GPU(s); {len(sets)} set(s), "
        f"one per {'GPU' if gpus else 'CPU'} process")
    remote = ray.remote(num_gpus=gpus, num_cpus=1, max_calls=1, max_retries=0, num_returns="streaming")(task)
    until = None if cfg.time_budget_s is None else time.time() + cfg.time_budget_s
    quality = make_quality(cfg, cfg.device)
    rows = [base_row(cfg, bset, i) for i, bset in enumerate(sets)]  # "pending" until the set's row arrives
    pool = TaskPool(ray)

    def submit(indexes, reference=None):
        for i in indexes:
            job = {"config": cfg.to_dict(), "spec": sets[i].spec, "index": i}
            pool.submit(i, remote, (job, cfg.set_timeout_s, until, reference), cfg.set_timeout_s, until)

    waiting = list(range(1, len(sets)))
    submit([0])
    if not quality.enabled:  # no reference to wait for: every set starts at once
        submit(waiting)
        waiting = []
    try:
        while pool:
            out = pool.next_outcome()
            rows[out.key] = _row_of(cfg, sets[out.key], out)
            log(f"set {out.key + 1}/{len(sets)} {sets[out.key].name!r}: {rows[out.key].status} "
                f"on {where_text(out.where)}")
            if out.key == 0 and waiting:
                submit(waiting, _share_reference(ray, quality, out))
                waiting = []
            write_outputs(cfg.out, rows, charts=False)
    except BaseException:  # Ctrl-C or a driver error: no task may run on, unowned, on the cluster
        pool.cancel_all()
        raise
    write_outputs(cfg.out, rows, charts=True)
    return rows


def _share_reference(ray, quality, out: Outcome):
    """The baseline's video in Ray's object store (one copy, fetched by each worker that needs it), also saved in
    the driver's OUT/frames/ as the local benchmark leaves it; None when the baseline saved none."""
    payload = (out.value or {}).get("reference")
    if payload is None:
        return None
    quality.install_reference(*payload)
    return ray.put(tuple(payload))


def _row_of(cfg: BenchConfig, bset: BenchSet, out: Outcome) -> BenchRow:
    """The set's row: the worker's, or one the driver writes when the task failed or was cancelled."""
    if out.value is not None and "row" in out.value:
        row = BenchRow.from_dict(out.value["row"])
    else:
        row = base_row(cfg, bset, out.key)
        who = f"set {out.key + 1} {bset.name!r}"
        if out.timed_out and out.where is None:
            row.status, row.error = "skipped", (f"time budget of {cfg.time_budget_s:.0f} s spent before a Ray "
                                                f"worker was free for {who}")
        elif out.timed_out:
            limit = min(x for x in (cfg.set_timeout_s, cfg.time_budget_s) if x is not None)
            row.status, row.error = "timeout", (f"the Ray task of {who} on {where_text(out.where)} ran past its "
                                                f"{limit:.0f} s limit and {GRACE_S:.0f} s of grace; cancelled")
        else:
            row.status, row.error = "crashed", (f"the Ray worker of {who} on {where_text(out.where)} died: "
                                                f"{out.failure}")
        row.method.process_per_set = True
        if out.where:
            row.node, row.cuda_visible_devices = out.where["node"], out.where.get("cuda_visible_devices")
            row.hardware = out.where.get("hardware") or row.hardware
        else:
            row.node = row.cuda_visible_devices = None
    if row.status != "ok":
        make_quality(cfg, cfg.device).mark_na(row)
    return row
