"""The app's jobs on a Ray cluster (wan_ui/cluster, `python app.py --ray`): a one-machine cluster started here on
127.0.0.1 only (2 CPUs, no dashboard), two CPU workers holding the tiny model. Jobs from a Gradio client run on the
workers and say where; a killed worker's job fails naming its node and the next job runs on the restarted worker;
a cancel stops the worker's denoising loop; `python app.py` without --ray never imports ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ui_server import free_port

from wan_ui.core.errors import GenerationCancelled, UnavailableError, ValidationError
from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import GenerationRequest
from wan_ui.ui.generate_tab import RUN_OUTPUTS

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"prompt": "a lighthouse in a storm", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2,
         "seed": 7}
# long enough (hundreds of tiny steps) for a kill or a cancel to land while the worker denoises
LONG = GenerationRequest("a lighthouse in a storm", width=256, height=256, num_frames=17, seed=1,
                         num_inference_steps=200)


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The session's Ray cluster on 127.0.0.1 only (tests/conftest.py `ray_cluster`), with the package shipped to
    the workers as `python app.py --ray` ships it."""
    return ray_cluster


@pytest.fixture(scope="module")
def pool(cluster):
    from wan_ui.cluster.serving import build_ray_pool

    pool = build_ray_pool("local", workers=2, log=lambda m: None)  # keeps the connection above
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def client(pool, tmp_path_factory):
    from gradio_client import Client

    from wan_ui.ui.app import create_demo, launch_kwargs

    root = tmp_path_factory.mktemp("cluster_app")
    demo = create_demo(pool, model="tiny", outputs=root / "outputs", settings_file=root / "last.json")
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(root / "outputs"))
    yield Client(url, verbose=False, download_files=False), demo, root / "outputs"
    demo.close()


def test_gradio_jobs_run_on_the_workers_and_say_where(client, pool):
    api, demo, outputs = client
    limits = {fn.api_name: fn.concurrency_limit for fn in demo.fns.values() if fn.api_name in ("generate", "compare")}
    assert limits == {"generate": 2, "compare": 2}  # one job per worker at a time
    replies = []

    def call(seed):
        values = api.predict(**{**SMALL, "seed": seed}, api_name="/generate")
        replies.append(dict(zip(RUN_OUTPUTS, values)))

    threads = [threading.Thread(target=call, args=(seed,)) for seed in (7, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 2
    hostname = pool.workers[0].where["hostname"]
    for out in replies:
        info = out["result_json"]
        assert info["parallel"]["mode"] == "ray" and info["parallel"]["node_ip"] == "127.0.0.1"
        assert f"| **Ran on** | node {hostname} (127.0.0.1, Ray node " in out["others"]
        assert "Ray cluster of 2 workers" in out["others"] and "| **Device** | cpu |" in out["others"]
        video = Path(info["video"])  # written on this host, with its sidecar, by the app (not the worker)
        assert video.parent == outputs and video.stat().st_size > 0
        assert json.loads(video.with_suffix(".json").read_text())["request"]["seed"] == info["seed"]
        assert info["frames"] == 5 and info["metrics"]["step_latencies_s"]
    assert pool.resident() and all(key[0] == "tiny" for key in pool.resident())


def test_a_killed_worker_fails_its_job_naming_the_node_and_is_restarted(cluster, pool):
    from wan_ui.cluster.pool import WorkerLostError

    opts = OptimizationSet()
    with pool.lease("tiny", opts) as worker:
        pid = worker.where["pid"]
        denoising, failed = threading.Event(), []

        def job():
            try:
                generate(worker, "tiny", LONG, opts, out_dir=None,
                         on_progress=lambda phase, done, total: phase == "denoising" and denoising.set())
            except Exception as e:  # noqa: BLE001 - the test reads what it was
                failed.append(e)

        thread = threading.Thread(target=job)
        thread.start()
        assert denoising.wait(60)
        cluster.kill(worker.actor, no_restart=False)  # as the OOM killer or a lost node would
        thread.join(60)
        assert len(failed) == 1 and isinstance(failed[0], WorkerLostError)
        message = str(failed[0])
        assert f"node {worker.where['hostname']} (127.0.0.1" in message and "was lost during this job" in message
        assert "\n" not in message and worker.resident() == []
        result = generate(worker, "tiny", GenerationRequest(**SMALL), opts, out_dir=None)  # the restarted worker
    assert result.frames.shape == (5, 64, 64, 3) and result.build.parallel["pid"] != pid
    assert result.build.rebuilt  # a new process: the pipeline was loaded again


def test_cancel_stops_the_workers_denoising_loop(pool, tmp_path):
    cancel = threading.Event()
    steps = []

    def on_progress(phase, done, total):
        if phase == "denoising":
            steps.append(done)
            cancel.set()  # the app's Cancel: the local flag, forwarded as ray.cancel of the worker's task

    with pytest.raises(GenerationCancelled, match=r"cancelled after step (\d+) of 200 on node .*127\.0\.0\.1") as e:
        generate(pool, "tiny", LONG, OptimizationSet(), out_dir=tmp_path, on_progress=on_progress, cancel=cancel)
    stopped = int(e.value.args[0].split("step ")[1].split(" of")[0])
    assert steps and stopped < 200 and list(tmp_path.iterdir()) == []  # stopped early, nothing written
    previews = []  # the live preview comes back too (the latest one at each poll, as the page shows only that)
    result = generate(pool, "tiny", GenerationRequest(**SMALL), OptimizationSet(), out_dir=None,
                      on_preview=lambda step, image, seconds: previews.append((step, image.shape)))
    assert result.frames.shape[0] == 5 and previews[-1][0] == 2 and previews[-1][1][2] == 3


def test_cluster_flags_say_what_is_wrong(monkeypatch):
    from wan_ui.cluster.serving import probe, worker_count
    from wan_ui.cluster.worker import import_ray
    from wan_ui.core.devices import describe_host
    from wan_ui.ui.server import build_parser

    assert describe_host(None, "cuda:0") == "this host, cuda:0"  # the Others panel of a run on the app's host
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UnavailableError, match=r"--ray needs Ray, which is not installed here: pip install"):
        import_ray()
    monkeypatch.undo()

    assert worker_count({"GPU": 8.0, "CPU": 64.0}, None) == (8, True)
    assert worker_count({"GPU": 8.0, "CPU": 64.0}, 3) == (3, True)
    assert worker_count({"GPU": 2.0, "CPU": 64.0}, 5, log=lambda m: None) == (2, True)  # capped at one per GPU
    assert worker_count({"CPU": 2.0}, None, log=lambda m: None) == (1, False)
    with pytest.raises(ValidationError, match="--ray-workers 5: the cluster has no GPU and 2 CPU"):
        worker_count({"CPU": 2.0}, 5, log=lambda m: None)
    with pytest.raises(UnavailableError, match=r"--ray 127\.0\.0\.1:1: nothing answers at 127\.0\.0\.1:1"):
        probe("127.0.0.1:1")
    with pytest.raises(ValidationError, match="--ray expects auto, local, HOST:PORT"):
        probe("head-node")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ray", "auto", "--gpus", "0"])  # argparse: not allowed with argument --gpus


def test_the_app_without_ray_never_imports_it(tmp_path):
    script = f"""
import sys
import wan_ui.ui.server as server
assert "ray" not in sys.modules, "import wan_ui.ui.server loaded ray"

class Demo:
    def launch(self, **kwargs):
        pass

server.create_demo = lambda manager, **kwargs: Demo()
server.serve_until_stopped = lambda demo, runs, launch, timeout: launch() or 0
assert server.main(["--model", "tiny", "--outputs", {str(tmp_path / "out")!r}, "--no-save-settings"]) == 0
print("ray" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path, check=False)  # the status is asserted below, with stderr
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
