"""The app under load on a GPU: 20 API clients at once on a mixed set of presets, one of them out of memory.

    source scripts/gpu_call.sh && python scripts/gpu_load_test.py        # on the lent GPU (gradio carried)

Starts `app.py --model random-full` (the real architecture, random weights) in a child process whose CUDA allocator
is capped (`--cap`, a fraction of the card), so that one request in the mix runs out of memory for real. After one
warm-up call, 20 gradio_client sessions submit together: mostly "Fast (sparse)" and the defaults at one small size,
two "Baseline (report)" (fp32: a rebuild of the pipeline), one distilled preset (a LoRA load) and one request far
too large for the cap. Checked: every call is answered (a video, or an error that says what failed), the large one
fails alone with the out-of-memory message, and the GPU memory NVML reads returns to its level after the warm-up.
Writes $OUT/gpu_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pynvml
from gradio_client import Client

from wan_ui.core.options import OptimizationSet, preset

from gpu_runs import write_distilled_loras  # scripts/ is on sys.path when a script in it runs

SIZE = dict(width=480, height=272, num_frames=17, num_inference_steps=8, guidance_scale=5.0)
HUGE = dict(width=2048, height=2048, num_frames=257, num_inference_steps=1, guidance_scale=1.0)  # ~1.06 M tokens
MIX = (["Fast (sparse)"] * 10 + [None] * 6 + ["Baseline (report)"] * 2 + ["Self-Forcing DMD 4-step (sparse)"]
       + ["huge"])  # None = the defaults


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(port: int, outputs: Path, cap: float, extra: list[str], model: str) -> subprocess.Popen:
    # no cost limit (the out-of-memory request must reach the GPU) and no per-user share (every client here is
    # 127.0.0.1, one "user")
    argv = ["app.py", "--model", model, "--port", str(port), "--outputs", str(outputs), "--max-queue", "64",
            "--max-cost", "0", "--max-jobs-per-user", "0", *extra]
    capping = f"torch.cuda.set_per_process_memory_fraction({cap}); " if cap else ""
    code = (f"import sys, torch; {capping}sys.argv = {argv!r}; "
            "from wan_ui.ui.server import main; raise SystemExit(main())")
    log = open(outputs.parent / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with {proc.returncode}; see app.log")
            time.sleep(1)
    raise TimeoutError("the app did not answer in 600 s")


def nvml_used_mb() -> float | None:
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except pynvml.NVMLError:
        return None
    return pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20


def call_kwargs(kind: str | None, seed: int) -> dict:
    opts = OptimizationSet() if kind in (None, "huge") else preset(kind)
    request = HUGE if kind == "huge" else SIZE
    if kind == "Self-Forcing DMD 4-step (sparse)":
        request = {**SIZE, "num_inference_steps": 4, "guidance_scale": 1.0}
    return {"prompt": f"load test call {seed}", "seed": seed, **request, **opts.to_dict(), "quality": False}


def run_call(url: str, index: int, kind: str | None, barrier: threading.Barrier, rows: list) -> None:
    client = Client(url, verbose=False, download_files=False)
    barrier.wait()
    t0 = time.perf_counter()
    row = {"index": index, "kind": kind or "Defaults"}
    try:
        out = client.predict(**call_kwargs(kind, index), api_name="/generate")
        row.update(outcome="video", status=str(out[2])[:200])
    except Exception as e:  # recorded: the check below says which answers are right
        row.update(outcome="error", message=f"{type(e).__name__}: {str(e)[:300]}")
    row["latency_s"] = round(time.perf_counter() - t0, 2)
    rows.append(row)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cap", type=float, default=0.3, help="fraction of the card's memory the app may allocate")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    p.add_argument("--model", default="random-full", help="tiny: a dry run of the script on a CPU (with --cap 0)")
    p.add_argument("--calls", type=int, default=len(MIX), help="only the first N calls of the mix (a dry run; the out-of-memory call is the last)")
    p.add_argument("--app-arg", action="append", default=[], help="an extra flag for app.py (repeatable)")
    args = p.parse_args(argv)
    out = Path(args.out)
    work = Path("/tmp/gpu_load")
    write_distilled_loras(full=args.model != "tiny")  # the distilled preset's LoRA by hub id: a random one offline
    (work / "outputs").mkdir(parents=True, exist_ok=True)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # a dry run on a machine without NVIDIA's driver
        pass
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    report = {"cap_fraction": args.cap, "model": args.model, "size": SIZE, "huge": HUGE}
    t0 = time.perf_counter()
    mix = MIX[:args.calls]  # fewer calls: a dry run (the huge one is last, left out)
    report["mix"] = [k or "Defaults" for k in mix]
    proc = launch(port, work / "outputs", args.cap, args.app_arg, args.model)
    try:
        report["app_ready_s"] = round(time.perf_counter() - t0, 1)
        warm = []
        run_call(url, 1000, "Fast (sparse)", threading.Barrier(1), warm)
        report["warmup"] = warm[0]
        used = nvml_used_mb()
        report["nvml_used_after_warmup_mb"] = None if used is None else round(used)
        rows, barrier = [], threading.Barrier(len(mix))
        threads = [threading.Thread(target=run_call, args=(url, i, kind, barrier, rows)) for i, kind in enumerate(mix)]
        t1 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=1800)
        report["burst_s"] = round(time.perf_counter() - t1, 1)
        report["calls"] = sorted(rows, key=lambda r: r["index"])
        # one more Fast (sparse) call: the pipeline the warm-up held is resident again, so memory can be compared
        after = []
        run_call(url, 99, "Fast (sparse)", threading.Barrier(1), after)
        report["after"] = after[0]
        time.sleep(2)
        used = nvml_used_mb()
        report["nvml_used_after_burst_mb"] = None if used is None else round(used)
        report["server_alive"] = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    calls = report.get("calls", [])
    huge = [c for c in calls if c["kind"] == "huge"]
    report["checks"] = {
        "every_call_answered": len(calls) == len(mix),
        "only_the_huge_call_failed": all(c["outcome"] == "video" for c in calls if c["kind"] != "huge"),
        "huge_call_says_out_of_memory": bool(huge) and "out of GPU memory" in huge[0].get("message", ""),
        "memory_back_to_the_warm_level_mb": None if report.get("nvml_used_after_warmup_mb") is None
        else report["nvml_used_after_burst_mb"] - report["nvml_used_after_warmup_mb"],
    }
    (out / "gpu_load.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["checks"], indent=2))
    print(json.dumps([{k: c.get(k) for k in ("index", "kind", "outcome", "latency_s", "message")} for c in calls],
                     indent=1)[:6000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
