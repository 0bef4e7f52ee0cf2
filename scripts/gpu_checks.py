"""GPU checks for one lent-GPU call: build random-full once, run the GPU-only techniques, write JSON to $OUT.

Usage (on the GPU machine, wheels installed on PYTHONPATH): python scripts/gpu_checks.py [--steps 4] [--only a,b]
Each check is isolated (try/except) so one failure never loses the others' figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import time
import traceback

import torch


from wan_ui.core.generate import generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import materialize, resolve_model
from wan_ui.core.options import OptimizationSet, preset
from wan_ui.core.requests import WORKLOADS

OUT = os.environ.get("OUT", "/tmp/out")


def summary(r):
    m = r.metrics
    steps = m.step_latencies_s
    return {"load_time_s": m.load_time_s, "load_breakdown": m.load_breakdown, "warmup_time_s": m.warmup_time_s,
            "clip_latency_s": m.clip_latency_s, "phases": m.phases,
            "step_median_s": sorted(steps)[len(steps) // 2] if steps else None, "steps": steps,
            "peak_vram_mb": m.peak_vram_mb, "peak_reserved_mb": m.peak_reserved_mb,
            "phase_peak_vram_mb": m.phase_peak_vram_mb, "nvml_peak_used_mb": m.nvml_peak_used_mb,
            "forwards": [m.forwards_planned, m.forwards_computed], "vram_note": m.vram_note}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="official480")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--sets", default="bf16;fp32=precision=fp32+text_encoder_precision=fp32")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%F %T"),
               "workload": args.workload, "steps": args.steps, "runs": {}}
    t0 = time.perf_counter()
    folder, built = materialize(resolve_model("random-full"))
    results["random_full_build_s"] = built
    print(f"random-full ready in {time.perf_counter() - t0:.1f}s at {folder}", flush=True)
    req = dataclasses.replace(WORKLOADS[args.workload].request, num_inference_steps=args.steps)
    manager = ModelManager(device="cuda")
    for item in args.sets.split(";"):
        name, _, spec = item.partition("=")
        try:
            if spec.startswith("preset:"):
                opts = preset(spec[7:])
            else:
                opts = OptimizationSet.from_dict(dict(kv.split("=", 1) for kv in spec.split("+") if kv))
            runs = []
            for i in range(args.repeat):
                r = generate(manager, "random-full", req, opts, out_dir=None)
                runs.append(summary(r))
                print(name, i, json.dumps({k: runs[-1][k] for k in ("clip_latency_s", "step_median_s",
                      "peak_vram_mb", "nvml_peak_used_mb", "warmup_time_s", "load_time_s")}), flush=True)
            results["runs"][name] = {"options": opts.diff_from_default(), "runs": runs}
        except Exception as e:
            results["runs"][name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            print(name, "FAILED", type(e).__name__, str(e)[:500], flush=True)
            manager.clear()
        with open(os.path.join(OUT, f"gpu_checks_{args.workload}.json"), "w") as f:
            json.dump(results, f, indent=1)
    manager.clear()
    print("allocated after clear (MiB):", torch.cuda.memory_allocated() / 2**20)
    results["allocated_after_clear_mb"] = torch.cuda.memory_allocated() / 2**20
    with open(os.path.join(OUT, f"gpu_checks_{args.workload}.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
