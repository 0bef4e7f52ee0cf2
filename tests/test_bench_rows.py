"""The benchmark row: results.jsonl's JSON shape read and written by `BenchRow`, every committed results file and
parallel record still loading, and a multi-GPU row paired with its 1-GPU twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_ui.bench.extrapolate import extrapolate_row
from wan_ui.bench.parallel import ModeRecord, read_records, write_report
from wan_ui.bench.parallel import main as parallel_main
from wan_ui.bench.report import read_results, read_rows, render_report
from wan_ui.bench.rows import SCHEMA, BenchRow, step_median
from wan_ui.core.errors import ValidationError
from wan_ui.core.metrics import Metrics

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
# the benchmark's results files (the tuner writes its own results.jsonl, schema wan_ui.tune/1, beside its report)
RESULTS = sorted(p for p in DOCS.glob("**/results.jsonl")
                 if json.loads(p.read_text().splitlines()[0]).get("schema") != "wan_ui.tune/1")
# fields added after the committed files were written: they load with their defaults
ADDED_TOP = {"world_size", "parallel_mode", "steps_note"}
ADDED_METRICS = {"option_notes", "phase_peak_reserved_mb", "reference_steps", "reference_guidance"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _row(**changes) -> dict:
    """A row as the runner writes it after two runs (warm-up + 1 repeat) on the tiny model."""
    metrics = Metrics(load_time_s=1.5, clip_latency_s=2.0, phases={"text_encode_s": 0.1, "denoise_s": 1.7,
                      "decode_s": 0.2}, step_latencies_s=[0.9, 0.8], forwards_planned=4, forwards_computed=4)
    row = {"schema": SCHEMA, "index": 1, "status": "ok", "error": None,
           "set": {"name": "quick", "spec": "quick: cpu-quick", "slug": "quick", "is_baseline": False,
                   "options": {"cache": "none", "cfg_truncation": 1.0}, "changed": {"precision": "fp32"}},
           "workload": "smoke", "workload_description": "tiny", "request": {"num_frames": 9, "guidance_scale": 5.0},
           "steps_run": 2, "steps_full": 2, "steps_note": None, "model": "tiny", "model_label": "tiny random",
           "random_weights": True, "hardware": {"device": "cpu"}, "versions": {"torch": "2"}, "date": "d",
           "command": "python -m wan_ui.bench", "method": {"repeats": 1, "runs_done": 2, "process_per_set": False,
                                                            "statistic": "median clip latency over the repeats"},
           "metrics": metrics.to_dict(),
           "runs": [{"clip_latency_s": 2.5, "phases": {}, "peak_vram_mb": None, "nvml_peak_used_mb": None,
                     "forwards_computed": 4, "step_median_s": 0.8, "warmup": True}],
           "extrapolation": None,
           "quality": {"enabled": False, "reason": "random weights", "na": {"clip_score": "n/a (random weights)"}},
           "bench": {"first_run_clip_latency_s": 2.5, "peak_vram_max_mb": None, "steady_runs": 1,
                     "clip_latency_median_s": 2.0, "warmup_raw_s": 0.5, "clip_latency_spread_s": 0.0},
           "wall_s": 6.0, "world_size": 1, "parallel_mode": "none"}
    row.update(changes)
    return row


def test_a_row_round_trips_exactly_and_is_typed():
    data = _row()
    row = BenchRow.from_dict(data)
    assert row.to_dict() == data
    assert isinstance(row.metrics, Metrics) and row.metrics.clip_latency_s == 2.0
    assert row.set.name == "quick" and row.method.runs_done == 2 and row.runs[0].warmup
    assert row.bench.warmup_raw_s == 0.5 and row.quality.na["clip_score"] == "n/a (random weights)"
    assert row.step_median_s == 0.8 and row.clip_latency_s == 2.0  # measured: nothing extrapolated
    row.metrics.clip_latency_s = 3.0  # the row owns its values: the dict it came from is not changed
    assert data["metrics"]["clip_latency_s"] == 2.0


def test_keys_written_only_with_a_value_stay_absent():
    """A set that never ran has no `bench` and no `wall_s`; `quality.error` appears only when scoring failed; a
    single run has no spread or raw warm-up. Their absence survives the round trip."""
    data = _row(status="unavailable", metrics=None, runs=[])
    for key in ("bench", "wall_s"):
        del data[key]
    row = BenchRow.from_dict(data)
    assert row.bench is None and row.wall_s is None and row.to_dict() == data
    single = _row(bench={"first_run_clip_latency_s": 2.5, "peak_vram_max_mb": None, "steady_runs": 0,
                         "clip_latency_median_s": 2.5})
    assert BenchRow.from_dict(single).to_dict() == single
    failed = _row(quality={"enabled": True, "reason": None, "na": {}, "error": "OSError: no weights"})
    assert BenchRow.from_dict(failed).quality.error == "OSError: no weights"
    assert BenchRow.from_dict(failed).to_dict() == failed


def test_extrapolated_clip_latency_is_the_rows_clip_latency():
    data = _row(steps_run=1, steps_full=2, extrapolation={"clip_latency_s": 9.5})
    assert BenchRow.from_dict(data).clip_latency_s == 9.5
    assert step_median([3.0, 1.0, 2.0]) == 1.5 and step_median([3.0]) == 3.0 and step_median([]) is None


@pytest.mark.parametrize("where, change", [
    ("top", {"colour": "red"}),
    ("set", {"set": dict(_row()["set"], extra=1)}),
    ("metrics", {"metrics": dict(_row()["metrics"], new_metric=1.0)}),
    ("runs", {"runs": [dict(_row()["runs"][0], x=0)]}),
])
def test_unknown_keys_are_an_error_not_silently_dropped(where, change):
    with pytest.raises(ValueError, match="unknown key"):
        BenchRow.from_dict(_row(**change))


def test_unknown_status_is_an_error():
    with pytest.raises(ValueError, match="unknown status 'fine'"):
        BenchRow.from_dict(_row(status="fine"))


def test_a_bad_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_row()) + "\n\n" + json.dumps(_row(colour="red")) + "\n")
    with pytest.raises(ValidationError, match=r"results.jsonl:3: not a benchmark row: unknown key\(s\) colour"):
        read_rows(path)
    with pytest.raises(ValidationError, match="does not exist"):
        read_results(tmp_path / "nowhere")


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name)
def test_every_committed_results_file_loads(path):
    """Committed rows keep every key and value through BenchRow; only fields added since appear, with their
    defaults (one GPU, no parallel plan)."""
    lines = _lines(path)
    rows = read_results(path.parent)
    assert len(rows) == len(lines) > 0
    for data, row in zip(lines, rows):
        out = row.to_dict()
        assert set(out) - set(data) <= ADDED_TOP
        for key, value in data.items():
            if key == "metrics" and value is not None:
                assert set(out[key]) - set(value) <= ADDED_METRICS
                assert {k: out[key][k] for k in value} == value
            else:
                assert out[key] == value, key
        assert (row.world_size, row.parallel_mode) == (1, "none")
        assert BenchRow.from_dict(out).to_dict() == out  # stable once loaded
    report = render_report(rows)
    for row in rows:
        assert f"## {row.index + 1}. {row.set.name}" in report


def test_extrapolate_row_reproduces_the_committed_extrapolation():
    """The row carries everything the extrapolation needs (steps, request, CFG options): recomputed from a
    committed row without a step cache, it gives the committed numbers."""
    checked = 0
    for path in RESULTS:
        for row in read_results(path.parent):
            if row.extrapolation and row.set.options.get("cache", "none") == "none":
                assert extrapolate_row(row) == pytest.approx(row.extrapolation)
                checked += 1
    assert checked >= 5
    assert extrapolate_row(BenchRow.from_dict(_row())) is None  # the full step count ran


def test_committed_parallel_records_load_and_pair_with_their_one_gpu_twin():
    folder = DOCS / "h200x2-20261126-multi-gpu"
    records = {r.name: r for r in read_records(folder)}
    assert set(records) == {"single", "ulysses-2", "cfg"}
    single, ulysses, cfg = records["single"].row, records["ulysses-2"].row, records["cfg"].row
    assert (single.world_size, single.parallel_mode) == (1, "none")
    assert (ulysses.world_size, ulysses.parallel_mode) == (2, "ulysses")
    assert (cfg.world_size, cfg.parallel_mode) == (2, "cfg")
    assert ulysses.twin_key() == single.twin_key() == cfg.twin_key()
    assert ulysses.clip_latency_s < single.clip_latency_s  # the extrapolated clip, as the committed report reads
    assert f"{single.clip_latency_s:.1f} s" in (folder / "report.md").read_text()
    other = BenchRow.from_dict(dict(ulysses.to_dict(), set=dict(ulysses.to_dict()["set"], changed={"cache": "mag"})))
    assert other.twin_key() != single.twin_key()  # another option set is not a twin
    again = ModeRecord.from_dict(records["cfg"].to_dict())
    assert again.to_dict() == records["cfg"].to_dict() and again.plan["mode"] == "cfg"


def test_the_parallel_bench_writes_a_bench_row_on_one_gpu(tiny_folder, tmp_path):
    """`python -m wan_ui.bench.parallel run` without --parallel: its record is a full BenchRow (1 GPU, no plan,
    extrapolated from 1 of 2 steps as the benchmark does) plus the mode's own keys, and its report reads it."""
    assert parallel_main(["run", "--name", "single", "--workload", "smoke", "--model", "tiny", "--steps", "1",
                          "--set", "precision=fp32", "--forward-repeats", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "single.json").read_text())
    record = ModeRecord.from_dict(data)
    assert record.to_dict() == data and record.plan is None and record.requested == "none"
    row = record.row
    assert row.status == "ok" and (row.world_size, row.parallel_mode) == (1, "none") and row.set.is_baseline
    assert row.set.name == "single" and row.set.changed == {"precision": "fp32"} and row.method.runs_done == 1
    assert (row.steps_run, row.steps_full) == (1, 2) and row.extrapolation == extrapolate_row(row)
    assert row.command.startswith("python -m wan_ui.bench.parallel run --name single")
    assert record.forward_s > 0
    text = write_report(tmp_path)
    assert "| single | 1 | none (none) |" in text and "| identical | yes | — |" in text
