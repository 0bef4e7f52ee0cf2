"""The child-process protocol of `--process-per-set`: the parent writes a JSON job, `python -m wan_ui.bench.child
JOB.json` measures one set and writes its BenchRow, the parent reads it back; a child that dies still gives a row
that names the set and says what happened."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from wan_ui.bench import child
from wan_ui.bench.child import ChildJob, run_child, write_job
from wan_ui.bench.config import BenchConfig
from wan_ui.bench.measure import base_row
from wan_ui.bench.rows import BenchRow
from wan_ui.bench.sets import parse_set

COMMAND = "python -m wan_ui.bench --sets 'baseline, quick: cpu-quick' --process-per-set"


def _cfg(out: Path, **changes) -> BenchConfig:
    fields = {"workload": "smoke", "model": "tiny", "out": out, "repeats": 0, "device": "cpu",
              "process_per_set": True, "progress": True, "command": COMMAND}
    return BenchConfig(**(fields | changes))


def test_job_file_round_trips_and_names_its_schema(tmp_path):
    cfg = _cfg(tmp_path, steps=1, quality=False, set_timeout_s=30.0)
    job, path = write_job(cfg, parse_set("quick: cpu-quick"), 1)
    data = json.loads(path.read_text())
    assert path == tmp_path / "rows" / "01.job.json" and data["schema"] == "wan_ui.bench.child/1"
    assert data["spec"] == "quick: cpu-quick" and data["index"] == 1 and data["config"]["out"] == str(tmp_path)
    assert ChildJob.from_dict(data) == job and job.row_path == tmp_path / "rows" / "01.json"
    with pytest.raises(ValueError, match="not a wan_ui.bench.child/1 job"):
        ChildJob.from_dict(dict(data, schema="other"))


def test_child_main_in_process_writes_the_sets_row(tiny_folder, tmp_path):
    cfg = _cfg(tmp_path, steps=1)
    job, path = write_job(cfg, parse_set("quick: cpu-quick"), 1)
    assert child.main([str(path)]) == 0
    row = BenchRow.from_dict(json.loads(job.row_path.read_text()))
    assert row.status == "ok" and row.index == 1 and row.set.name == "quick" and not row.set.is_baseline
    assert row.set.options["precision"] == parse_set("cpu-quick").options.precision
    assert row.method.runs_done == 1 and row.method.process_per_set and row.command == COMMAND
    assert (row.steps_run, row.steps_full) == (1, 2) and row.extrapolation["steps_full"] == 2
    assert (row.world_size, row.parallel_mode) == (1, "none")
    assert row.quality.na["clip_score"] == "n/a (random weights)"


def test_child_main_refuses_a_file_that_is_not_a_job(tmp_path, capsys):
    bad = tmp_path / "job.json"
    bad.write_text(json.dumps({"sets": ["baseline"]}))
    assert child.main([str(bad)]) == 2
    assert child.main([str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot read the job" in err and "missing.json" in err


def test_run_child_as_a_real_subprocess(tiny_folder, tmp_path):
    """`python -m wan_ui.bench.child` on the tiny model: the parent gets the child's row, the baseline's."""
    row = run_child(_cfg(tmp_path), parse_set("baseline"), 0, timeout=300)
    assert row.status == "ok", row.error
    assert row.set.name == "Baseline (report)" and row.set.is_baseline and row.method.runs_done == 1
    assert row.metrics.clip_latency_s > 0 and row.metrics.load_time_s > 0 and row.method.process_per_set
    assert row.to_dict() == json.loads((tmp_path / "rows" / "00.json").read_text()) | {"command": COMMAND}


def _fake_child(monkeypatch, code: str) -> None:
    """The parent runs this Python code instead of the real child (it gets the job file as sys.argv[1])."""
    monkeypatch.setattr(child, "child_command", lambda job_path: [sys.executable, "-c", code, str(job_path)])


def test_a_child_that_dies_without_a_row_gives_a_crashed_row_naming_the_set(tmp_path, monkeypatch):
    _fake_child(monkeypatch, "import sys; print('CUDA error: an illegal memory access', flush=True); sys.exit(3)")
    row = run_child(_cfg(tmp_path), parse_set("quick: cpu-quick"), 1, timeout=120)
    assert row.status == "crashed" and row.index == 1 and row.set.name == "quick"
    assert "set 2 'quick'" in row.error and "exited with 3" in row.error and "wrote no row" in row.error
    assert "CUDA error: an illegal memory access" in row.error
    assert row.metrics is None and row.method.process_per_set and row.command == COMMAND


def test_a_child_that_dies_after_a_run_keeps_that_run(tmp_path, monkeypatch):
    """A child killed after its warm-up run (its row says `partial`) still hands over the finished run."""
    cfg = _cfg(tmp_path, repeats=2)
    bset = parse_set("quick: cpu-quick")
    partial = base_row(cfg, bset, 1)
    partial.status, partial.method.runs_done, partial.wall_s = "partial", 1, 4.0
    src = tmp_path / "partial.json"
    src.write_text(json.dumps(partial.to_dict()))
    row_path = tmp_path / "rows" / "01.json"
    _fake_child(monkeypatch, f"import shutil, sys; shutil.copy({str(src)!r}, {str(row_path)!r}); sys.exit(-9)")
    row = run_child(cfg, bset, 1, timeout=120)
    assert row.status == "crashed" and "1 run(s) had finished" in row.error and "set 2 'quick'" in row.error
    assert row.wall_s == 4.0 and row.set.name == "quick"


def test_a_child_that_leaves_an_unreadable_row_says_so(tmp_path, monkeypatch):
    row_path = tmp_path / "rows" / "00.json"
    _fake_child(monkeypatch, f"open({str(row_path)!r}, 'w').write('{{\"colour\": 1}}')")
    row = run_child(_cfg(tmp_path), parse_set("baseline"), 0, timeout=120)
    assert row.status == "crashed" and "exited with 0" in row.error and "unreadable" in row.error


def test_the_child_command_is_the_documented_entry(tmp_path):
    cmd = child.child_command(tmp_path / "rows" / "00.job.json")
    assert cmd[0] == sys.executable and shlex.join(cmd[1:]).startswith("-m wan_ui.bench.child ")
    assert "python -m wan_ui.bench.child JOB.json" in child.__doc__
