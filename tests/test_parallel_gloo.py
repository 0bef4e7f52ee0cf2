"""One video on 2 processes, on CPU through gloo: the frames equal the single-process run's.

diffusers 0.42.1's context parallelism runs on gloo (its all-to-all and all-gather exist there) except for one
line: `_resolve_parallel_config` places rank r on `rank % torch.accelerator.device_count()`, which is a division
by zero without an accelerator. The worker patches that count to 1 (so the rank's device is cpu:0); everything
else is the production path (`ParallelRuntime` -> `enable_parallelism`). Ring attention cannot run on CPU at all
(native SDPA returns no log-sum-exp), so only Ulysses is checked here; ring runs in scripts/gpu_parallel_bench.sh.

One spawn of 2 processes runs every scenario (each start costs ~10 s of imports on 2 cores):
  1. Ulysses-2 generation (fp32) and one transformer forward vs the single-process reference; the plan follows
     the request's token count (an odd count -> diffusers' ulysses_anything, applied but not run: gloo's
     allgather needs equal sizes, NCCL's does not); remove_parallel -> the plain forward again;
  2. Ulysses-2 with MagCache (its skip decision reads no activations, so ranks agree);
  3. CFG-parallel generation; forwards counted across both ranks;
  4. serving: rank 0 announces jobs (one normal, one cancelled on rank 0 only: both ranks stop at the same
     step), rank 1 follows until told to stop.
The CLI under torchrun (rank 0 alone writes the video and prints the JSON) runs as its own test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import traceback

import numpy as np
import pytest
import torch

FP32 = {"precision": "fp32", "text_encoder_precision": "fp32"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward_inputs(tokens_hw=(6, 6), frames=3):
    """Seeded transformer inputs: latents (1, 16, T, H, W) -> T x H/2 x W/2 tokens, text (1, 8, 32); the same
    token count as a request of 16 * tokens_hw pixels and 9 frames."""
    g = torch.Generator().manual_seed(0)
    h, w = tokens_hw
    return {"hidden_states": torch.randn(1, 16, frames, 2 * h, 2 * w, generator=g),
            "timestep": torch.tensor([500]), "encoder_hidden_states": torch.randn(1, 8, 32, generator=g),
            "return_dict": False}


def _worker(rank: int, port: int, cache: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), WAN_UI_CACHE=cache, HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    torch.accelerator.device_count = lambda: 1  # see the module docstring: the one line that needs a device
    try:
        queue.put((rank, _scenarios(rank)))
    except Exception:  # noqa: BLE001 - the parent reports it
        queue.put((rank, traceback.format_exc()[-3000:]))


def _scenarios(rank: int) -> dict:
    from wan_ui.core.errors import GenerationCancelled
    from wan_ui.core.generate import generate
    from wan_ui.core.manager import ModelManager
    from wan_ui.core.options import OptimizationSet
    from wan_ui.parallel.dist import init_distributed
    from wan_ui.parallel.hooks import remove_parallel
    from wan_ui.parallel.plan import ParallelConfig
    from wan_ui.parallel.runtime import ParallelRuntime
    from wan_ui.parallel.serving import follow_jobs
    from wan_ui.core.requests import WORKLOADS

    dist = init_distributed(serving=True)
    request, out = WORKLOADS["smoke"].request, {}

    def manager(spec, serving=False):
        runtime = ParallelRuntime(ParallelConfig.parse(spec), dist, serving=serving)
        return ModelManager(device=dist.device, log=lambda m: None, parallel=runtime)

    # 1. Ulysses: a generation, then plans for 3 x 5 x 5 = 75 tokens (odd: uneven split) and 3 x 6 x 6 = 108
    m = manager("ulysses=2")
    r = generate(m, "tiny", request, OptimizationSet.from_dict(FP32), out_dir=None)
    out["ulysses"] = (r.frames, r.to_json()["parallel"])
    opts = OptimizationSet.from_dict(FP32)
    with torch.inference_mode():
        # the plan follows the request (re-applied when it changes); an uneven split is applied but not run:
        # gloo's allgather needs equal sizes, which diffusers' uneven gather (_all_gather_anything) does not send
        for name, px in (("odd", 80), ("even", 96)):
            pipe, build, _ = m.get("tiny", opts, dataclasses.replace(request, width=px, height=px))
            out[f"plan_{name}"] = build.parallel
        out["forward_even"] = pipe.transformer(**_forward_inputs((6, 6)))[0].numpy()
        remove_parallel(pipe)
        out["forward_removed"] = pipe.transformer(**_forward_inputs((6, 6)))[0].numpy()
    # 2. Ulysses + MagCache
    r = generate(manager("ulysses=2"), "tiny", request, OptimizationSet.from_dict({**FP32, "cache": "mag"}),
                 out_dir=None)
    out["ulysses_mag"] = r.frames
    # 3. CFG-parallel
    r = generate(manager("cfg"), "tiny", request, OptimizationSet.from_dict(FP32), out_dir=None)
    out["cfg"] = (r.frames, r.to_json()["parallel"], r.metrics.forwards_computed, r.metrics.forwards_planned)
    # 4. serving
    m = manager("cfg", serving=True)
    if rank == 0:
        out["served"] = generate(m, "tiny", request, OptimizationSet.from_dict(FP32), out_dir=None).frames
        cancel = threading.Event()
        cancel.set()  # set on rank 0 only: the synced flag stops rank 1 at the same step
        try:
            generate(m, "tiny", request, OptimizationSet.from_dict(FP32), out_dir=None, cancel=cancel)
        except GenerationCancelled as e:
            out["cancelled"] = str(e)
        m.parallel.stop_followers()
    else:
        notes = []
        out["followed"] = follow_jobs(m, log=notes.append)
        out["follower_notes"] = notes
    return out


@pytest.fixture(scope="module")
def gloo_runs(tiny_folder, wan_cache):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, wan_cache, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in procs:
            rank, out = queue.get(timeout=240)
            results[rank] = out
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for rank, out in results.items():
        assert not isinstance(out, str), f"rank {rank} failed:\n{out}"
    return results


@pytest.fixture(scope="module")
def reference(tiny_folder):
    """The single-process run of the same requests and forwards."""
    from wan_ui.core.generate import generate
    from wan_ui.core.manager import ModelManager
    from wan_ui.core.options import OptimizationSet
    from wan_ui.core.requests import WORKLOADS

    m = ModelManager(device="cpu", log=lambda m: None)
    request = WORKLOADS["smoke"].request
    ref = {"frames": generate(m, "tiny", request, OptimizationSet.from_dict(FP32), out_dir=None).frames,
           "mag": generate(m, "tiny", request, OptimizationSet.from_dict({**FP32, "cache": "mag"}),
                           out_dir=None).frames}
    pipe, _, _ = m.get("tiny", OptimizationSet.from_dict(FP32))
    with torch.inference_mode():
        ref["forward_even"] = pipe.transformer(**_forward_inputs((6, 6)))[0].numpy()
    return ref


def _close(a, b, tol=1e-5):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12)) <= tol


def test_ulysses_matches_single_process(gloo_runs, reference):
    for rank in (0, 1):
        out = gloo_runs[rank]
        frames, plan = out["ulysses"]
        assert np.array_equal(frames, reference["frames"])  # every rank ends with the same video
        assert (plan["mode"], plan["ulysses_degree"], plan["rank"], plan["backend"]) == ("ulysses", 2, rank, "cpu:gloo")
        assert _close(out["forward_even"], reference["forward_even"])
        assert (out["plan_odd"]["tokens"], out["plan_odd"]["uneven"]) == (75, True)
        assert (out["plan_even"]["tokens"], out["plan_even"]["uneven"]) == (108, False)
        assert _close(out["forward_removed"], reference["forward_even"])  # apply -> remove: the plain forward


def test_ulysses_with_magcache_matches(gloo_runs, reference):
    assert all(np.array_equal(gloo_runs[r]["ulysses_mag"], reference["mag"]) for r in (0, 1))


def test_cfg_parallel_matches_and_counts_both_branches(gloo_runs, reference):
    for rank in (0, 1):
        frames, plan, computed, planned = gloo_runs[rank]["cfg"]
        assert np.array_equal(frames, reference["frames"])
        assert (plan["mode"], plan["cfg_degree"]) == ("cfg", 2)
        assert computed == planned == 4  # 2 steps x (cond + uncond), half on each rank


def test_serving_followers_run_each_job_and_cancel_together(gloo_runs, reference):
    leader, follower = gloo_runs[0], gloo_runs[1]
    assert np.array_equal(leader["served"], reference["frames"])
    assert leader["cancelled"] == "cancelled after step 1 of 2"
    assert follower["followed"] == 1 and follower["follower_notes"] == ["rank 1: job ended: cancelled after step 1 "
                                                                        "of 2"]


def test_cli_under_torchrun_rank0_writes_and_prints(tiny_folder, wan_cache, tmp_path):
    video = tmp_path / "v.mp4"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), "-m", "wan_ui", "generate", "--model", "tiny", "--prompt", "a cat", "--width", "64",
           "--height", "64", "--frames", "9", "--steps", "2", "--parallel", "cfg", "--json", "--out", str(video)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "WAN_UI_CACHE": wan_cache, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 1 stays quiet
    info = json.loads(lines[0])
    assert info["parallel"]["mode"] == "cfg" and info["parallel"]["rank"] == 0 and info["video"] == str(video)
    assert video.is_file() and [f.name for f in tmp_path.iterdir() if f.suffix == ".mp4"] == ["v.mp4"]
