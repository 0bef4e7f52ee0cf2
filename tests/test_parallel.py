"""Several GPUs, without GPUs: parallel config parsing, degree selection, stated conflicts, the GPU pool (fake
managers and real tiny ones on CPU), the manager's lease/start_job interface and the CLI's --parallel checks.
The process-group runs (gloo, 2 processes) are in test_parallel_gloo.py."""

import threading
import time

import pytest

from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError, UserError, ValidationError
from wan_ui.core.devices import describe_placement, device_index, device_scope, is_cuda
from wan_ui.core.options import OptimizationSet
from wan_ui.parallel.hooks import apply_parallel
from wan_ui.parallel.plan import CP_BACKENDS, RING_BACKENDS, ParallelConfig, ParallelPlan, check_parallel, resolve_plan
from wan_ui.parallel.pool import ManagerPool, PoolBusyError
from wan_ui.parallel.serving import build_app_manager, parse_gpus, relaunch_command

REPORT_TOKENS = 87_750  # 1248x720, 97 frames: 25 x 45 x 78


# ---- config ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, mode, ulysses, ring", [
    ("none", "none", 0, 0), (None, "none", 0, 0), ("auto", "auto", 0, 0), ("cfg", "cfg", 0, 0),
    ("ulysses", "ulysses", 0, 0), ("ulysses=2", "ulysses", 2, 0), ("ring=3", "ring", 0, 3),
    ("ulysses=2,ring=2", "mix", 2, 2), ("ring=2+ulysses=4", "mix", 4, 2), (" Ulysses=2 ", "ulysses", 2, 0)])
def test_parse(text, mode, ulysses, ring):
    c = ParallelConfig.parse(text)
    assert (c.mode, c.ulysses, c.ring) == (mode, ulysses, ring)
    assert ParallelConfig.parse(c.to_text()) == c


@pytest.mark.parametrize("text", ["fast", "ulysses=x", "ulysses=0", "ring=-1", "ulysses=2,ulysses=2", "cfg=2",
                                  "ulysses=1,ring=2", "tensor=2"])
def test_parse_rejects(text):
    with pytest.raises(ValidationError) as e:
        ParallelConfig.parse(text)
    assert e.value.field == "parallel"


# ---- degree selection -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("world, mode, ulysses, ring", [
    (2, "ulysses", 2, 1), (3, "ulysses", 3, 1), (4, "ulysses", 4, 1), (6, "ulysses", 6, 1), (12, "ulysses", 12, 1),
    (5, "ring", 1, 5), (7, "ring", 1, 7), (8, "mix", 4, 2), (16, "mix", 4, 4), (10, "mix", 2, 5)])
def test_auto_ulysses_for_divisors_of_12_heads_else_ring_or_both(world, mode, ulysses, ring):
    p = resolve_plan(ParallelConfig("auto"), world, heads=12, tokens=world * 1000)
    assert (p.mode, p.ulysses_degree, p.ring_degree, p.uneven) == (mode, ulysses, ring, False)
    assert p.reason.startswith("auto:") and p.requested == "auto" and p.world_size == world


def test_uneven_tokens_use_diffusers_anything_modes():
    p = resolve_plan(ParallelConfig("auto"), 2, heads=12, tokens=REPORT_TOKENS)  # 87750 = 2 x 43875
    assert (p.mode, p.uneven) == ("ulysses", False)
    p = resolve_plan(ParallelConfig("auto"), 4, heads=12, tokens=REPORT_TOKENS)  # not a multiple of 4
    assert (p.mode, p.ulysses_degree, p.uneven) == ("ulysses", 4, True) and "ulysses_anything" in p.reason
    p = resolve_plan(ParallelConfig("ring"), 4, heads=12, tokens=REPORT_TOKENS)
    assert (p.mode, p.ring_degree, p.uneven) == ("ring", 4, True) and "ring_anything" in p.reason
    # unified (ulysses x ring) attention has no uneven mode: Ulysses over all ranks instead
    p = resolve_plan(ParallelConfig("auto"), 8, heads=12, tokens=REPORT_TOKENS)
    assert (p.mode, p.ulysses_degree, p.ring_degree, p.uneven) == ("ulysses", 8, 1, True)
    # an explicit Ulysses degree that does not divide the heads: uneven heads
    p = resolve_plan(ParallelConfig.parse("ulysses=5"), 5, heads=12, tokens=5000)
    assert (p.mode, p.uneven) == ("ulysses", True)


@pytest.mark.parametrize("text, world, match", [
    ("ulysses=3", 2, "must equal the number of processes"), ("ulysses=2,ring=2", 2, "must equal"),
    ("cfg", 4, "exactly 2 processes"), ("none", 2, "2 times")])
def test_plans_that_cannot_run(text, world, match):
    with pytest.raises(ValidationError, match=match):
        resolve_plan(ParallelConfig.parse(text), world, heads=12)


def test_single_process_plan_and_kinds():
    assert resolve_plan(ParallelConfig(), 1, heads=12).kinds() == set()
    assert ParallelPlan("cfg", 2, cfg_degree=2).kinds() == {"cfg"}
    assert ParallelPlan("mix", 4, ulysses_degree=2, ring_degree=2).kinds() == {"context", "ring"}
    assert ParallelConfig("auto").kinds() == set()  # decided once the heads are known
    assert ParallelConfig.parse("ring=2").kinds() == {"context", "ring"}


# ---- stated conflicts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kinds, opts, match", [
    ({"context"}, {"attention_slicing": 1024}, "attention_slicing"),
    ({"context"}, {"attention_backend": "efficient"}, "no context-parallel support"),
    ({"context"}, {"attention_backend": "flex"}, "no context-parallel support"),
    ({"context", "ring"}, {"attention_backend": "native"}, "log-sum-exp"),
    ({"context"}, {"cache": "first_block"}, "hang"),
    ({"cfg"}, {"cache": "mag"}, "cache=none")])
def test_conflicts_are_stated(kinds, opts, match):
    with pytest.raises(IncompatibleOptionsError, match=match):
        check_parallel(OptimizationSet.from_dict(opts), kinds)


@pytest.mark.parametrize("kinds, opts", [
    ({"context"}, {}), ({"context"}, {"cache": "mag"}), ({"context"}, {"attention_backend": "cudnn"}),
    ({"context", "ring"}, {"attention_backend": "cudnn"}), ({"cfg"}, {"cfg_truncation": 0.5}), (set(), {})])
def test_allowed_combinations(kinds, opts):
    check_parallel(OptimizationSet.from_dict(opts), kinds)


def test_backend_lists_match_diffusers_registry():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    from wan_ui.optim.attention import BACKENDS

    supported = _AttentionBackendRegistry._supports_context_parallel
    ours = {name for name in OptimizationSet.specs()["attention_backend"].choices
            if BACKENDS.get(name, "native") in supported}
    assert ours == set(CP_BACKENDS)
    assert set(RING_BACKENDS) < set(CP_BACKENDS)


def test_context_parallel_needs_an_accelerator(monkeypatch):
    import torch

    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 0)
    plan = ParallelPlan("ulysses", 2, ulysses_degree=2)
    with pytest.raises(UnavailableError, match="needs a GPU"):
        apply_parallel(type("Pipe", (), {"transformer": None})(), plan, runtime=None)


def test_describe_placement_for_the_others_panel():
    from wan_ui.ui.values import others_markdown

    assert describe_placement(None, "cpu") == "one device (cpu)"
    pool = {"mode": "pool", "gpus": 2, "devices": ["cuda:0", "cuda:1"]}
    assert describe_placement(pool, "cuda:1") == (
        "pool of 2 GPUs (cuda:0, cuda:1): one pipeline per GPU, each job on a free one; this run on cuda:1")
    plan = resolve_plan(ParallelConfig("auto"), 2, heads=12).to_dict()
    assert describe_placement(plan).startswith("one video on 2 GPUs: Ulysses 2 (auto: 2 divides the 12 attention")
    assert "CFG-parallel" in describe_placement(resolve_plan(ParallelConfig("cfg"), 2, heads=12).to_dict())
    mix = resolve_plan(ParallelConfig("auto"), 8, heads=12, tokens=8000).to_dict()
    assert "Ulysses 4 x ring 2" in describe_placement(mix)
    info = {"model": "tiny", "model_label": "tiny", "device": "cuda:0", "parallel": plan,
            "metrics": {"load_time_s": 1.0}, "optimizations": {}}
    assert "| **GPUs** | one video on 2 GPUs: Ulysses 2" in others_markdown(info, {"torch": "2.x"})


# ---- devices --------------------------------------------------------------------------------------------------
def test_device_helpers():
    assert [device_index(d) for d in ("cuda:1", "cuda", "cpu")] == [1, None, None]
    assert [is_cuda(d) for d in ("cuda:3", "cuda", "cpu")] == [True, True, False]
    with device_scope("cpu"), device_scope("cuda"):
        pass


# ---- the pool -------------------------------------------------------------------------------------------------
class FakeManager:
    """What a pool needs of a manager: device, key, resident, hw."""

    def __init__(self, device, resident=()):
        self.device, self._resident, self.hw, self.log = device, list(resident), "hw", print
        self.active = 0
        self.max_active = 0
        self.cleared = False

    def key(self, model, opts):
        return (model, opts)

    def resident(self):
        return list(self._resident)

    def clear(self):
        self.cleared = True


def test_pool_hands_each_manager_to_one_job_at_a_time():
    managers = [FakeManager("cuda:0"), FakeManager("cuda:1")]
    pool = ManagerPool(managers)
    running, peak, lock = [0], [0], threading.Lock()

    def job():
        with pool.lease() as m:
            with lock:
                m.active += 1
                m.max_active = max(m.max_active, m.active)
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            with lock:
                m.active -= 1
                running[0] -= 1

    threads = [threading.Thread(target=job) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m.max_active == 1 for m in managers) and peak[0] == 2
    assert pool.busy() == [] and pool.slots == 2


def test_pool_prefers_resident_pipeline_then_empty_gpu_then_oldest():
    a, b, c = FakeManager("cuda:0", [("tiny", "x")]), FakeManager("cuda:1", [("tiny", "y")]), FakeManager("cuda:2")
    pool = ManagerPool([a, b, c])
    with pool.lease("tiny", "y") as m:
        assert m is b
    with pool.lease("tiny", "z") as m:
        assert m is c  # nothing resident there: no eviction needed
    c._resident = [("tiny", "z")]
    with pool.lease("tiny", "w") as m:
        assert m is a  # released longest ago
    assert pool.hw == "hw" and pool.device == "cuda:0" and pool.key("m", "o") == ("m", "o")
    assert a.placement == {"mode": "pool", "gpus": 3, "devices": ["cuda:0", "cuda:1", "cuda:2"]}
    pool.clear()
    assert a.cleared and b.cleared and c.cleared


def test_pool_waits_for_a_free_gpu_and_can_give_up():
    pool = ManagerPool([FakeManager("cuda:0")], wait_s=0.05)
    with pool.lease() as m:
        with pytest.raises(PoolBusyError, match="busy"):
            with pool.lease():
                pass
        assert pool.busy() == ["cuda:0"]
    pool.wait_s = None
    got = []
    with pool.lease():
        t = threading.Thread(target=lambda: got.append(pool._take(None, None)))
        t.start()
        time.sleep(0.05)
        assert got == []  # still waiting
    t.join(timeout=5)
    assert got == [m]


def test_generate_through_a_pool_of_cpu_managers(tiny_folder, smoke_request):
    from wan_ui.core.generate import generate
    from wan_ui.core.manager import ModelManager

    pool = ManagerPool.for_devices(["cpu", "cpu"], log=lambda m: None)
    results = []
    threads = [threading.Thread(target=lambda: results.append(generate(pool, "tiny", smoke_request,
                                                                         OptimizationSet(), out_dir=None)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(isinstance(m, ModelManager) for m in pool.managers)
    assert all(m.builds == 1 for m in pool.managers)  # each job on its own manager, at the same time
    assert (results[0].frames == results[1].frames).all()
    assert results[0].to_json()["parallel"] == {"mode": "pool", "gpus": 2, "devices": ["cpu", "cpu"]}


def test_plain_manager_leases_itself(manager):
    with manager.lease("tiny", OptimizationSet()) as m:
        assert m is manager
    flag = threading.Event()
    assert manager.start_job("tiny", None, OptimizationSet(), flag) is flag
    assert manager.slots == 1 and manager.parallel is None


# ---- CLI ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, match", [("ulysses=2", "needs several processes"), ("bogus", "expected none")])
def test_cli_parallel_without_torchrun_is_a_one_line_error(value, match, capsys, monkeypatch):
    from wan_ui.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["generate", "--model", "tiny", "--prompt", "x", "--parallel", value]) == 2
    assert match in capsys.readouterr().err


# ---- the app's GPU flags --------------------------------------------------------------------------------------
def test_parse_gpus():
    assert parse_gpus(None) is None and parse_gpus("") is None
    assert parse_gpus("0,1, 3") == [0, 1, 3]
    for bad in ("a", "0,0", "-1", ","):
        with pytest.raises(UserError, match="--gpus"):
            parse_gpus(bad)


def test_relaunch_command_starts_one_process_per_gpu_with_multicast_off():
    cmd, env = relaunch_command(["/x/app.py", "--gpus", "2,3", "--gpu-mode", "parallel"], [2, 3])
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    assert cmd[6:] == ["/x/app.py", "--gpus", "2,3", "--gpu-mode", "parallel"]
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["NCCL_NVLS_ENABLE"] == "0"
    assert env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"


def _fake_demo(monkeypatch):
    calls = []

    class FakeDemo:
        def launch(self, **kwargs):
            pass

    def fake_create_demo(manager, **kwargs):
        calls.append(manager)
        return FakeDemo()

    monkeypatch.setattr("wan_ui.ui.server.create_demo", fake_create_demo)
    return calls


def test_app_gpus_pool_builds_one_manager_per_gpu(monkeypatch, tmp_path):
    import torch

    import app

    demos = _fake_demo(monkeypatch)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert app.main(["--gpus", "0,1", "--model", "tiny", "--outputs", str(tmp_path)]) == 0
    (pool,) = demos
    assert isinstance(pool, ManagerPool) and [m.device for m in pool.managers] == ["cuda:0", "cuda:1"]
    assert pool.slots == 2 and pool.managers[0].load_lock is pool.managers[1].load_lock


def test_app_gpu_flags_fail_before_the_server_starts(monkeypatch, capsys):
    import app

    demos = _fake_demo(monkeypatch)
    assert app.main(["--gpus", "0,1", "--model", "tiny"]) == 2  # this machine shows no CUDA device
    assert "shows 0 CUDA device(s)" in capsys.readouterr().err and demos == []
    with pytest.raises(UserError, match="--gpu-mode"):
        build_app_manager([0], mode="fast")


def test_app_gpu_mode_parallel_restarts_under_torchrun(monkeypatch):
    import app

    class Exec(Exception):
        pass

    seen = {}

    def fake_exec(path, cmd, env):
        seen.update(cmd=cmd, env=env)
        raise Exec

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr("os.execvpe", fake_exec)
    _fake_demo(monkeypatch)
    with pytest.raises(Exec):
        app.main(["--gpus", "0,1", "--gpu-mode", "parallel", "--model", "tiny"])
    assert "torch.distributed.run" in seen["cmd"]
    assert seen["cmd"][-6:] == ["--gpus", "0,1", "--gpu-mode", "parallel", "--model", "tiny"]
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"


# ---- the benchmark's comparison ------------------------------------------------------------------------------
def _record(folder, name, world, step_s, clip_s, forward_s, frames, forward):
    import json

    import numpy as np

    rec = {"name": name, "parallel": {"mode": "ulysses"} if world > 1 else None, "requested": name,
           "world_size": world, "workload": "report", "model": "random-full", "steps_run": 3, "steps_full": 65,
           "request": {"width": 1248, "height": 720, "num_frames": 97, "guidance_scale": 6.0}, "options": {},
           "metrics": {"step_latencies_s": [step_s * 2, step_s, step_s], "peak_vram_mb": 30000.0},
           "extrapolation": {"clip_latency_s": clip_s}, "forward_s": forward_s, "hardware": {"gpu_name": "H100"}}
    (folder / f"{name}.json").write_text(json.dumps(rec))
    np.save(folder / f"{name}.frames.npy", frames)
    np.save(folder / f"{name}.forward.npy", forward)


def test_parallel_bench_report_speedups_and_match(tmp_path):
    import numpy as np

    from wan_ui.bench.parallel import frame_diff, rel_err, write_report

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    forward = rng.standard_normal((1, 16, 2, 4, 4)).astype(np.float16)
    _record(tmp_path, "single", 1, 8.0, 540.0, 4.0, frames, forward)
    _record(tmp_path, "ulysses-2", 2, 4.2, 290.0, 2.1, frames, forward * np.float16(1.001))
    noisy = np.clip(frames.astype(int) + rng.integers(-60, 60, frames.shape), 0, 255).astype(np.uint8)
    _record(tmp_path, "cfg", 2, 4.5, 310.0, 4.0, noisy, forward)
    text = write_report(tmp_path, target=1.8)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "1.86x" in rows["ulysses-2"] and "1.90x" in rows["ulysses-2"] and "| yes | met |" in rows["ulysses-2"]
    assert "| **no** | **missed** |" in rows["cfg"]  # 1.74x and noisy frames
    assert "identical" in rows["single"] and (tmp_path / "report.md").read_text() == text
    assert frame_diff(frames, frames)["psnr_db"] == float("inf") and rel_err(forward, forward) == 0.0
