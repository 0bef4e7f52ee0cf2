"""One benchmark set in a process of its own: `python -m wan_ui.bench.child JOB.json`.

`python -m wan_ui.bench --process-per-set` runs every set this way, so its load time is a cold load (a new CUDA
context, no compile cache in memory) and one set's crash, OOM or timeout cannot take the others down.

The protocol, both directions JSON:
  1. the parent writes the job, OUT/rows/NN.job.json (`ChildJob`):
       {"schema": "wan_ui.bench.child/1", "config": BenchConfig, "spec": "<the --sets item>", "index": N,
        "row_path": "OUT/rows/NN.json"}
     `spec` rebuilds the set with `sets.parse_set`; `index` 0 is the baseline (it saves the quality reference);
  2. the child measures the set and writes its `BenchRow` (results.jsonl's object) to `row_path` after every run,
     atomically (`core.files.write_text_atomic`), so a kill keeps the runs that finished; it exits 0 once
     the row is final (whatever the set's status), 2 when the job file cannot be read;
  3. the parent reads the row back (`run_child`). A child killed by the time limit reads `timeout`; one that exits
     otherwise before its row is final reads `crashed`, with its exit status, the set's name and the last lines
     of its output in `error`.
The job file stays in OUT/rows/, so one set can be re-run by hand: `python -m wan_ui.bench.child OUT/rows/01.job.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from wan_ui.bench.config import BenchConfig, log
from wan_ui.bench.measure import base_row, measure_set, prepare_process
from wan_ui.bench.rows import BenchRow
from wan_ui.bench.scoring import make_quality
from wan_ui.bench.sets import BenchSet, parse_set
from wan_ui.core.errors import UserError
from wan_ui.core.files import write_text_atomic
from wan_ui.core.manager import ModelManager

JOB_SCHEMA = "wan_ui.bench.child/1"
TAIL_LINES = 20  # the child's last output lines kept for a crash message (3 of them go into the row's error)


@dataclass
class ChildJob:
    """What one child process measures: one set of one benchmark."""

    config: BenchConfig  # the benchmark's shared settings, device already resolved by the parent
    spec: str  # the set as typed in --sets
    index: int  # the set's position in --sets (0: the baseline)
    row_path: Path  # where the child writes its BenchRow JSON

    def to_dict(self) -> dict:
        return {"schema": JOB_SCHEMA, "config": self.config.to_dict(), "spec": self.spec, "index": self.index,
                "row_path": str(self.row_path)}

    @classmethod
    def from_dict(cls, data: dict) -> ChildJob:
        if data.get("schema") != JOB_SCHEMA:
            raise ValueError(f"not a {JOB_SCHEMA} job (schema {data.get('schema')!r})")
        return cls(BenchConfig.from_dict(data["config"]), data["spec"], int(data["index"]), Path(data["row_path"]))


# ---- 1. the child ----------------------------------------------------------------------------------------------
def run_job(job: ChildJob) -> BenchRow:
    """Measure the job's set in this process, writing its row after every run and once final."""
    cfg = job.config
    manager = ModelManager(device=cfg.device, log=log)
    row = measure_set(manager, cfg, parse_set(job.spec), job.index, make_quality(cfg, manager.device),
                      on_update=lambda r: write_text_atomic(job.row_path, json.dumps(r.to_dict())))
    write_text_atomic(job.row_path, json.dumps(row.to_dict()))
    return row


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wan_ui.bench.child", description=__doc__.split("\n\n")[0],
                                epilog="Written and run by `python -m wan_ui.bench --process-per-set`; see the "
                                       "module docstring for the job's fields.")
    p.add_argument("job", type=Path, help="the job file (JSON) the parent wrote, e.g. OUT/rows/01.job.json")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        job = ChildJob.from_dict(json.loads(args.job.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: cannot read the job {args.job}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    prepare_process(job.config.progress)  # before the model loads: the allocator default must precede CUDA
    try:
        run_job(job)
    except UserError as e:  # e.g. a set spec or model the parent accepted but this process cannot resolve
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


# ---- 2. the parent ---------------------------------------------------------------------------------------------
def child_command(job_path: Path) -> list[str]:
    return [sys.executable, "-m", "wan_ui.bench.child", str(job_path)]


def write_job(cfg: BenchConfig, bset: BenchSet, index: int) -> tuple[ChildJob, Path]:
    """(the job, its file OUT/rows/NN.job.json) for set `index`, NN counting from 00; the set's old row file is
    removed."""
    folder = cfg.out / "rows"
    folder.mkdir(parents=True, exist_ok=True)
    job = ChildJob(cfg, bset.spec, index, folder / f"{index:02d}.json")
    job.row_path.unlink(missing_ok=True)
    path = folder / f"{index:02d}.job.json"
    write_text_atomic(path, json.dumps(job.to_dict()))
    return job, path


def _pump(stream, tail: deque) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip())
        sys.stderr.write(line)
    stream.close()


def _wait(cmd: list[str], timeout: float | None) -> tuple[int, bool, list[str]]:
    """Run `cmd`, its output passed through to stderr; (exit status, killed by the timeout, last output lines)."""
    tail: deque = deque(maxlen=TAIL_LINES)
    # own session: a timeout kills the child and its compile workers together (by the child's process group)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pump = threading.Thread(target=_pump, args=(proc.stdout, tail), daemon=True)
    pump.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # the parent was interrupted: the child goes too
            _kill_group(proc)
            proc.wait()
    pump.join(timeout=5)
    return rc, timed_out, list(tail)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it exited meanwhile
        pass


def read_child_row(job: ChildJob) -> tuple[BenchRow | None, str | None]:
    """(the row the child wrote, None) or (None, why there is none)."""
    if not job.row_path.is_file():
        return None, "it wrote no row"
    try:
        return BenchRow.from_dict(json.loads(job.row_path.read_text())), None
    except (ValueError, TypeError) as e:
        return None, f"its row {job.row_path} is unreadable ({type(e).__name__}: {e})"


def run_child(cfg: BenchConfig, bset: BenchSet, index: int, timeout: float | None) -> BenchRow:
    """Measure set `index` in a fresh process. The child rewrites its row after every run, so a timeout or a crash
    keeps the runs that finished; a child that leaves no row still gives a row, saying what happened."""
    job, job_path = write_job(cfg, bset, index)
    rc, timed_out, tail = _wait(child_command(job_path), timeout)
    row, missing = read_child_row(job)
    row = row or base_row(cfg, bset, index)
    who = f"set {index + 1} {bset.name!r}"
    if timed_out:
        row.status = "timeout"
        row.error = (f"killed after {timeout:.0f} s (set timeout or time budget); "
                     f"{row.method.runs_done} run(s) had finished")
    elif rc != 0 or row.status in ("pending", "partial"):
        row.status = "crashed"
        why = f"; {missing}" if missing else f"; {row.method.runs_done} run(s) had finished"
        row.error = f"the child process of {who} exited with {rc}{why}: " + " | ".join(tail[-3:])
    if row.status in ("timeout", "crashed"):
        log(f"{who} {row.status}: {row.error}")
    row.method.process_per_set = True
    row.command = cfg.command  # the parent's, with the set list
    return row


if __name__ == "__main__":
    raise SystemExit(main())
