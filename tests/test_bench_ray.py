"""`python -m wan_ui.bench --ray`: the sets spread over a Ray cluster (one the tests start here, 2 CPUs), each in a
fresh worker running the child process of `--process-per-set`; the rows come back through Ray and merge into one
results.jsonl and report.md in --sets order, each naming its node; a worker or child that dies gives a crashed row
naming the node while the other sets finish; without --ray the benchmark never imports ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from wan_ui.bench import child, ray_runner
from wan_ui.bench.config import BenchConfig
from wan_ui.bench.ray_runner import TaskPool
from wan_ui.bench.rows import BenchRow
from wan_ui.bench.runner import build_parser, main
from wan_ui.bench.scoring import QualityPlan
from wan_ui.bench.sets import parse_sets

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The session's local Ray cluster of 2 CPUs on 127.0.0.1 only (tests/conftest.py `ray_cluster`): two sets run at
    once, one per worker process; this package is shipped to the workers, as `--ray` ships it. Started after the
    tiny model is built, so the workers inherit its cache folder (WAN_UI_CACHE) and build nothing."""
    # this file's task functions travel by value: the workers' sys.path has the repository, not tests/
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_cluster
    ray_cluster.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _faulty(job, *args):
    """`measure_on_worker` with a fault planted in its own worker process (a fresh one per set, max_calls=1): the
    child process of the set labelled 'child dies' dies; the Ray worker of 'worker dies' dies while its set runs."""
    name = job["spec"].split(":")[0]
    if name == "child dies":
        child.child_command = lambda path: [sys.executable, "-c", "print('boom', flush=True); import os; os._exit(3)",
                                            str(path)]
    if name == "worker dies":
        def die(*_, **__):
            time.sleep(2)  # as a set would, well after the task said where it runs
            os._exit(9)

        ray_runner.run_child = die
    yield from ray_runner.measure_on_worker(job, *args)


SETS = "baseline, quick: cpu-quick, report-best, child dies: cpu-quick, worker dies: cpu-quick"


@pytest.fixture(scope="module")
def ray_bench(cluster, tmp_path_factory):
    """One benchmark over the cluster's two workers, from the command line: two sets run, one cannot run on the
    worker's node, two die (the faults travel with the task, `_faulty`)."""
    out = tmp_path_factory.mktemp("ray_bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray_runner, "measure_on_worker", _faulty)
        rc = main(["--ray", "auto", "--workload", "smoke", "--model", "tiny", "--repeats", "0", "--out", str(out),
                   "--sets", SETS])
    rows = [BenchRow.from_dict(json.loads(line)) for line in (out / "results.jsonl").read_text().splitlines()]
    return out, rc, rows


def test_a_benchmark_over_two_workers_merges_into_one_report(ray_bench):
    out, rc, rows = ray_bench
    assert rc == 0
    assert [r.set.name for r in rows] == ["Baseline (report)", "quick", "Report best", "child dies", "worker dies"]
    assert [r.index for r in rows] == [0, 1, 2, 3, 4]  # --sets order, whatever order they finished in
    assert [r.status for r in rows] == ["ok", "ok", "unavailable", "crashed", "crashed"], [r.error for r in rows]
    assert "needs a CUDA GPU" in rows[2].error  # checked on the worker's node, not the driver's
    for r in rows:
        assert r.node == HOST and r.hardware["device"] == "cpu" and r.method.process_per_set
        assert "--ray auto" in r.command
    assert rows[0].metrics.clip_latency_s > 0 and rows[1].metrics.load_time_s > 0
    assert not (out / "rows").exists()  # the workers kept their job and row files on their own disk
    report = (out / "report.md").read_text()
    assert report.count(f"ran on node {HOST}, CPU") == 5 and "quick | ok" in report
    assert report.index("## 1. Baseline (report)") < report.index("## 2. quick") < report.index("## 5. worker dies")
    assert (out / "latency.png").is_file()


def test_a_set_whose_worker_dies_gives_a_crashed_row_and_the_others_finish(ray_bench):
    _, _, rows = ray_bench
    assert rows[3].error.startswith(f"on node {HOST}: the child process of set 4 'child dies' exited with 3")
    assert "boom" in rows[3].error
    assert rows[4].error.startswith(f"the Ray worker of set 5 'worker dies' on node {HOST} died: WorkerCrashedError")
    assert rows[4].metrics is None and rows[4].quality.na["clip_score"] == "n/a (random weights)"
    assert "**crashed**" in (ray_bench[0] / "report.md").read_text()


def _cfg(out) -> BenchConfig:
    return BenchConfig("smoke", "tiny", out, repeats=0, device="cpu", command="python -m wan_ui.bench --ray auto")


def _hangs(_):
    yield {"where": {"node": socket.gethostname()}}
    time.sleep(600)
    yield {"never": True}


def test_the_driver_cancels_a_task_past_its_limit_and_one_that_never_starts(cluster):
    pool = TaskPool(ray, grace_s=0.5)
    remote = ray.remote(num_cpus=1, max_retries=0, num_returns="streaming")(_hangs)
    pool.submit(0, remote, (None,), limit_s=1.0)  # starts, then overruns 1 s + 0.5 s of grace
    starved = ray.remote(num_cpus=3, max_retries=0, num_returns="streaming")(_hangs)  # 3 CPUs: never placed
    pool.submit(1, starved, (None,), until=time.time() + 1.0)
    ends = {o.key: o for o in (pool.next_outcome(), pool.next_outcome())}
    assert not pool
    assert ends[0].timed_out and ends[0].where == {"node": HOST} and ends[0].value is None
    assert ends[1].timed_out and ends[1].where is None


def test_the_baselines_video_travels_through_the_object_store(cluster, tmp_path):
    """What the baseline's worker saved reaches another worker's own OUT/frames/, where scoring looks for it."""
    head, worker = tmp_path / "head", tmp_path / "worker"
    request = {"width": 64, "height": 64, "num_frames": 9}
    frames = np.arange(9 * 64 * 64 * 3, dtype=np.uint8).reshape(9, 64, 64, 3)
    saved = QualityPlan(_cfg(tmp_path / "baseline-worker"), False, "cpu")
    saved.install_reference(frames, request)
    outcome = ray_runner.Outcome(0, {"node": HOST}, {"row": {}, "reference": saved.reference_payload()})
    ref = ray_runner._share_reference(ray, QualityPlan(_cfg(head), False, "cpu"), outcome)

    @ray.remote(num_cpus=1)
    def received(reference):  # a worker's view of the argument: Ray fetched it from the object store
        return reference

    plan = QualityPlan(_cfg(worker), False, "cpu")
    plan.install_reference(*ray.get(received.remote(ref)))
    assert np.array_equal(plan._reference(request)[0], frames)
    assert np.array_equal(np.load(head / "frames" / "baseline.npy"), frames)  # the driver keeps a copy too
    empty = ray_runner.Outcome(0, None, None, "WorkerCrashedError: ...")
    assert ray_runner._share_reference(ray, QualityPlan(_cfg(head), False, "cpu"), empty) is None


REQUEST = {"width": 8, "height": 8, "num_frames": 2, "guidance_scale": 5.0, "seed": 0}


def _fake_set(job, timeout_s, until, reference):
    """A set that measures nothing (`measure_on_worker`'s contract, no model): the baseline returns a video as its
    reference, every other set says in its row which reference its task was handed."""
    yield {"where": {"node": socket.gethostname()}}
    index = job["index"]
    handed = None if reference is None else list(reference[0].shape)
    row = {"index": index, "status": "ok", "request": REQUEST, "steps_note": f"handed {handed}",
           "set": {"name": job["spec"], "spec": job["spec"], "is_baseline": index == 0}}
    video = (np.full((2, 8, 8, 3), 7, np.uint8), REQUEST) if index == 0 else None
    yield {"row": row, "reference": video}


def test_with_quality_on_the_others_start_after_the_baseline_with_its_video(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_runner, "make_quality", lambda cfg, device: QualityPlan(cfg, False, device))  # real weights
    sets = parse_sets(["baseline, a: cpu-quick, b: defaults"])
    rows = ray_runner.run_on_ray(_cfg(tmp_path), sets, "auto", task=_fake_set)
    assert [r.steps_note for r in rows] == ["handed None", "handed [2, 8, 8, 3]", "handed [2, 8, 8, 3]"]
    assert np.array_equal(np.load(tmp_path / "frames" / "baseline.npy"), np.full((2, 8, 8, 3), 7, np.uint8))


def test_without_ray_or_a_cluster_the_error_names_ray(cluster, tmp_path, monkeypatch, capsys):
    argv = ["--sets", "baseline", "--out", str(tmp_path), "--model", "tiny"]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as a process that is not connected yet
    assert main(["--ray", "127.0.0.1:1", *argv]) == 2
    assert "--ray 127.0.0.1:1: nothing answers at 127.0.0.1:1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as where the package is not installed
    assert main(["--ray", "auto", *argv]) == 2
    assert "--ray needs Ray, which is not installed here" in capsys.readouterr().err


def test_the_benchmark_without_ray_never_imports_it():
    code = ("import sys; from wan_ui.bench.runner import main; main(['--list-sets']); "
            "assert 'wan_ui.bench.ray_runner' in sys.modules; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "implies --process-per-set" in " ".join(build_parser().format_help().split())
