"""Measurement plans for one lent-GPU call each: many generations in one process (pipelines and compiled graphs are
reused where the load-time options match), every run isolated, JSON written to $OUT after each run.

Usage (wheels on PYTHONPATH as in scripts/gpu_bench.sh):
    python scripts/gpu_runs.py --plan NAME [--budget 560] [--only run1,run2]
    python scripts/gpu_runs.py --list
CPU dry run of a plan's code paths: OUT=/tmp/gr python scripts/gpu_runs.py --plan NAME --model tiny --workload smoke

A run: a workload, a preset and/or `--set`-style options, request overrides, `warmup` steps run first (compiles and
loads outside the timed run; 0 = none) and `repeats` timed runs. Kinds:
- "gen": the above;
- "oom": caps this process's GPU memory (`torch.cuda.set_per_process_memory_fraction`) to `cap_gb`, runs the
  request (a real allocator OOM), records the error text and the memory left allocated, lifts the cap and runs
  `after` (a small request) to show the next request works.
Distilled presets get a random LoRA of the published rank and key layout written at their hub path under
$WAN_UI_LORA_DIR (random weights: a speed figure, never a quality one) and their published steps/guidance.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch


from wan_ui.core.distilled import DISTILLED, PRESET_REQUEST_HINTS
from wan_ui.core.generate import generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import FULL_TRANSFORMER, TINY_TRANSFORMER, materialize, resolve_model
from wan_ui.optim.lora import lora_dir, parse_lora_spec
from wan_ui.core.options import OptimizationSet, preset
from wan_ui.bench.random_lora import write_random_lora
from wan_ui.core.requests import WORKLOADS
from gpu_checks import summary  # noqa: E402  (scripts/ is on sys.path when a script in it runs)

OUT = Path(os.environ.get("OUT", "/tmp/out"))
T0 = time.perf_counter()
SF, CV = "Self-Forcing DMD 4-step", "CausVid 8-step"
STA = {"sparse_attention": "sta"}


def _run(name, workload, preset_name=None, sets=None, request=None, warmup=2, repeats=1, kind="gen", **extra):
    return {"name": name, "workload": workload, "preset": preset_name, "set": sets or {}, "request": request or {},
            "warmup": warmup, "repeats": repeats, "kind": kind, **extra}


PLANS = {
    # official480: attention slicing / CFG batching (issue 3), a real OOM (issue 9), distilled presets (issue 7)
    "official480": [
        _run("bf16 eager", "official480", None, {}, {"num_inference_steps": 3}, warmup=1),
        _run("bf16 + attention slicing 4096", "official480", None, {"attention_slicing": 4096},
             {"num_inference_steps": 3}, warmup=1),
        _run("bf16 + cfg_batch", "official480", None, {"cfg_batch": True}, {"num_inference_steps": 3}, warmup=1),
        # 12 GB: the bf16 text encoder (11.4 GB) + transformer (2.8 GB) do not fit -> OOM while building;
        # 18 GB: the build fits, the report-size run (23 GB peak) does not -> OOM while generating
        _run("real OOM while building (12 GB cap)", "report", None, {}, {"num_inference_steps": 1}, warmup=0,
             kind="oom", cap_gb=12, after={"workload": "official480", "request": {"num_inference_steps": 2}}),
        _run("real OOM while generating (18 GB cap)", "report", None, {}, {"num_inference_steps": 1}, warmup=0,
             kind="oom", cap_gb=18, after={"workload": "official480", "request": {"num_inference_steps": 2}}),
        _run(f"{SF}", "official480", SF, {}, {}, warmup=2, repeats=2),
        _run(f"{CV}", "official480", CV, {}, {}, warmup=0, repeats=2),
        _run(f"{SF} + sparse", "official480", SF, STA, {}, warmup=2, repeats=2),
    ],
    # a new process on the same machine after "official480": the compile caches are warm (warm restart)
    "restart480": [_run(f"{SF} (warm restart)", "official480", SF, {}, {}, warmup=2, repeats=1)],
    # report: Low VRAM with the step savings of Fast (issue 8), distilled (issue 7)
    "report": [
        _run(f"{SF}", "report", SF, {}, {}, warmup=2, repeats=2),
        _run(f"{SF} + sparse", "report", SF, STA, {}, warmup=2, repeats=1),
        _run("Low VRAM + MagCache + CFG 0.5", "report", "Low VRAM", {"cache": "mag", "cfg_truncation": 0.5}, {},
             warmup=0, repeats=1),
    ],
    "slicing": [
        # attention slicing where it matters: the math kernel materializes the L x L scores (12 heads x 32,760^2)
        _run("math attention", "official480", None, {"attention_backend": "math"}, {"num_inference_steps": 1},
             warmup=0),
        _run("math attention + slicing 4096", "official480", None,
             {"attention_backend": "math", "attention_slicing": 4096}, {"num_inference_steps": 1}, warmup=0),
    ],
    # report: sparse attention with 4 dense steps on the bf16 kernels (the same per-forward time as FP8 at this size,
    # compiled in seconds), and Low VRAM inside an 8 GB allocator cap (proof that it fits an 8 GB budget)
    "final": [
        _run("Fast (quick start) + sparse 3,1,1, 4 dense steps", "report", "Fast (quick start)",
             {**STA, "sparse_window": "3,1,1", "sparse_dense_steps": 4}, {}, warmup=2, repeats=1),
        _run("Fast (quick start) + sparse 6,1,1, 4 dense steps", "report", "Fast (quick start)",
             {**STA, "sparse_dense_steps": 4}, {}, warmup=2, repeats=1),
        _run("Low VRAM + MagCache + CFG 0.5 (8 GB cap)", "report", "Low VRAM",
             {"cache": "mag", "cfg_truncation": 0.5}, {}, warmup=0, repeats=1, cap_gb=8),
    ],
    # issue 8: the Low VRAM preset inside allocator caps of a 6 GB and an 8 GB card less ~0.5 GB of CUDA context
    # (the cap bounds what torch reserves, not only what it allocates), and with sparse attention
    "next_lowvram": [
        _run("Low VRAM, official480 (5.5 GB cap)", "official480", "Low VRAM", {}, {}, warmup=0, repeats=1,
             cap_gb=5.5),
        _run("Low VRAM (7.5 GB cap)", "report", "Low VRAM", {}, {}, warmup=0, repeats=1, cap_gb=7.5),
        _run("Low VRAM + sparse 3,1,1, 4 dense steps (7.5 GB cap)", "report", "Low VRAM",
             {**STA, "sparse_window": "3,1,1", "sparse_dense_steps": 4}, {}, warmup=2, repeats=1, cap_gb=7.5),
    ],
    # issue 8, after the first next_lowvram call: the VAE kept on the GPU and 512 px decode tiles (the preset now)
    "lowvram_tiles": [
        _run("Low VRAM + sparse 3,1,1, 4 dense steps (7.5 GB cap)", "report", "Low VRAM",
             {**STA, "sparse_window": "3,1,1", "sparse_dense_steps": 4}, {}, warmup=2, repeats=1, cap_gb=7.5),
        _run("Low VRAM, official480 (5.5 GB cap)", "official480", "Low VRAM", {}, {}, warmup=0, repeats=1,
             cap_gb=5.5),
    ],
    # the same run after an OOM under the cap with 512 px tiles, with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    # set by the caller (fragmentation: the cap bounds reserved memory); no warm-up run (device time)
    "lowvram_expandable": [
        _run("Low VRAM + sparse 3,1,1, 4 dense steps (7.5 GB cap, expandable segments)", "report", "Low VRAM",
             {**STA, "sparse_window": "3,1,1", "sparse_dense_steps": 4}, {}, warmup=0, repeats=1, cap_gb=7.5),
    ],
    # issue 7: the distilled official480 clip with the frame conversion on the GPU, the narrow window and channels-last
    # VAE weights; two more runs of "Fast (sparse)" on report (59.9 s once: at the limit)
    "next_session": [
        _run(f"{SF} + sparse", "official480", SF, STA, {}, warmup=2, repeats=2),
        _run(f"{SF} + sparse 3,1,1 + channels-last VAE", "official480", SF,
             {**STA, "sparse_window": "3,1,1", "vae_channels_last": True}, {}, warmup=2, repeats=2),
        _run(f"{SF} + sparse 3,1,1, 0 dense steps + channels-last VAE", "official480", SF,
             {**STA, "sparse_window": "3,1,1", "sparse_dense_steps": 0, "vae_channels_last": True}, {},
             warmup=0, repeats=2),
        _run("Fast (sparse), official480 + channels-last VAE", "official480", "Fast (sparse)",
             {"vae_channels_last": True}, {}, warmup=2, repeats=1),
        _run("Fast (sparse)", "report", "Fast (sparse)", {}, {}, warmup=2, repeats=2),
    ],
    # issue 7, after next_session: "Fast (sparse)" on report twice more (one 59.9 s run so far), then with
    # channels-last VAE weights, then with MagCache K=4 (the authors' T2V-1.3B command); official480 with both
    "next_fast2": [
        _run("Fast (sparse)", "report", "Fast (sparse)", {}, {}, warmup=2, repeats=2),
        _run("Fast (sparse) + channels-last VAE", "report", "Fast (sparse)", {"vae_channels_last": True}, {},
             warmup=0, repeats=1),
        _run("Fast (sparse) + channels-last VAE + MagCache K=4", "report", "Fast (sparse)",
             {"vae_channels_last": True, "cache_max_skips": 4}, {}, warmup=0, repeats=1),
        _run("Fast (sparse), official480 + channels-last VAE + MagCache K=4", "official480", "Fast (sparse)",
             {"vae_channels_last": True, "cache_max_skips": 4}, {}, warmup=2, repeats=1),
    ],
    # issue 8: Low VRAM inside what a real 8 / 6 GB card leaves to torch (~6.5 / ~4.5 GB once ~1.5 GB outside its
    # allocator is counted), and "Low VRAM (sparse)" (the schedule of "Fast (sparse)": 53.4 s) against 1.5x; first
    # the distilled sparse preset on report with its narrower window
    "next_lowvram2": [
        _run(f"{SF} (sparse)", "report", f"{SF} (sparse)", {}, {}, warmup=2, repeats=1),
        _run("Low VRAM (sparse) (7.5 GB cap)", "report", "Low VRAM (sparse)", {}, {}, warmup=2, repeats=1,
             cap_gb=7.5),
        _run("Low VRAM (sparse) (6.5 GB cap)", "report", "Low VRAM (sparse)", {}, {}, warmup=0, repeats=1,
             cap_gb=6.5),
        _run("Low VRAM, official480 (4.5 GB cap)", "official480", "Low VRAM", {}, {}, warmup=0, repeats=1,
             cap_gb=4.5),
    ],
    # issue 8, after next_lowvram2: a sparse `report` forward took ~1.3-1.5 s under leaf-level group offload vs 0.88 s
    # at full memory; block-level groups (one block per group, prefetched on a CUDA stream) move the same bytes in
    # 30 large copies instead of ~300 small ones (it turned out to gain 2 %: the rest was eager vs compiled)
    "lowvram_block": [
        _run("Low VRAM (sparse), block-level offload (6.5 GB cap)", "report", "Low VRAM (sparse)",
             {"offload": "group_block"}, {}, warmup=2, repeats=1, cap_gb=6.5),
        _run("Low VRAM, block-level offload, official480 (4.5 GB cap)", "official480", "Low VRAM",
             {"offload": "group_block"}, {}, warmup=0, repeats=1, cap_gb=4.5),
        _run("Low VRAM (6 GB), block-level offload, official480 (4.5 GB cap)", "official480", "Low VRAM (6 GB)",
             {"offload": "group_block"}, {}, warmup=0, repeats=1, cap_gb=4.5),
    ],
    # issue 8, after lowvram_block: block-level offload alone gained 2 % (81.4 vs 83.3 s): the Low VRAM presets ran
    # eager (0.88 s per sparse forward is the compiled, full-memory figure); regional compile inside block-level
    # offload groups, and whether it works with leaf-level groups
    "lowvram_compile": [
        _run("Low VRAM (sparse), block-level offload + regional compile (6.5 GB cap)", "report", "Low VRAM (sparse)",
             {"offload": "group_block", "compile": "regional"}, {}, warmup=2, repeats=1, cap_gb=6.5),
        _run("Low VRAM, block-level offload + regional compile, official480 (4.5 GB cap)", "official480",
             "Low VRAM", {"offload": "group_block", "compile": "regional"}, {}, warmup=2, repeats=1, cap_gb=4.5),
        _run("Low VRAM (sparse), leaf-level offload + regional compile (6.5 GB cap)", "report", "Low VRAM (sparse)",
             {"compile": "regional"}, {}, warmup=2, repeats=1, cap_gb=6.5),
    ],
    # the presets after lowvram_compile (block-level offload + regional compile): the 6 GB preset, plain "Low VRAM"
    # on report inside what an 8 GB card leaves, and a second run of "Fast (sparse)" (53.4 s once)
    "presets_final": [
        _run("Low VRAM (6 GB), official480 (4.5 GB cap)", "official480", "Low VRAM (6 GB)", {}, {}, warmup=2,
             repeats=1, cap_gb=4.5),
        _run("Low VRAM (6.5 GB cap)", "report", "Low VRAM", {}, {}, warmup=2, repeats=1, cap_gb=6.5),
        _run("Fast (sparse)", "report", "Fast (sparse)", {}, {}, warmup=2, repeats=1),
    ],
    # issue 7: sparse attention at 480p, and fewer dense steps
    "next_fast": [
        _run("Fast (sparse), official480", "official480", "Fast (sparse)", {}, {}, warmup=2, repeats=1),
        _run("Fast (sparse), official480, 2 dense steps", "official480", "Fast (sparse)", {"sparse_dense_steps": 2},
             {}, warmup=0, repeats=1),
        _run("Fast (sparse), 2 dense steps", "report", "Fast (sparse)", {"sparse_dense_steps": 2}, {}, warmup=2,
             repeats=1),
    ],
    # report: the training-free Fast preset with sparse attention, fewer dense steps and a narrower window
    "report_sparse": [
        _run("Fast + sparse 3,1,1, 4 dense steps", "report", "Fast",
             {**STA, "sparse_window": "3,1,1", "sparse_dense_steps": 4}, {}, warmup=2, repeats=1),
        _run("Fast + sparse 6,1,1, 4 dense steps", "report", "Fast",
             {**STA, "sparse_dense_steps": 4}, {}, warmup=0, repeats=1),
    ],
}


def write_distilled_loras(full: bool) -> list[str]:
    """A random LoRA at each distilled preset's hub path (rank 32, Kijai's layout, attention + FFN)."""
    dims = FULL_TRANSFORMER if full else TINY_TRANSFORMER
    inner, written = dims["num_attention_heads"] * dims["attention_head_dim"], []
    for d in DISTILLED:
        src = parse_lora_spec(d.lora, lora_dir())[0]  # a hub id: the offline copy lives at this path
        path = lora_dir() / src.location / src.weight_name
        if not path.exists():
            write_random_lora(path, inner=inner, layers=dims["num_layers"], rank=32, layout="kijai",
                              ffn_dim=dims["ffn_dim"], dtype=torch.float16)
        written.append(str(path))
    return written


def request_for(spec, args):
    base = WORKLOADS[args.workload or spec["workload"]].request
    fields = {**(PRESET_REQUEST_HINTS.get(spec["preset"] or "", {})), **spec["request"]}
    if args.workload:  # dry run: keep the small workload's steps unless the run sets fewer
        fields["num_inference_steps"] = min(fields.get("num_inference_steps", 99), base.num_inference_steps)
    return dataclasses.replace(base, **fields)


def options_for(spec, args) -> OptimizationSet:
    opts = preset(spec["preset"]) if spec["preset"] else OptimizationSet()
    opts = opts.with_(**spec["set"])
    if args.model == "tiny":  # CPU dry run: the GPU kernels off
        opts = opts.with_(compile="none", attention_backend="native", quantization="none", offload="none")
    return opts


@contextlib.contextmanager
def memory_cap(gb: float | None):
    """The caching allocator may hold at most `gb` GiB (reserved, not just allocated) inside the block; no-op
    without a cap or a GPU."""
    if not gb or not torch.cuda.is_available():
        yield
        return
    torch.cuda.empty_cache()  # the cap bounds reserved memory: blocks cached by earlier runs would count
    torch.cuda.set_per_process_memory_fraction(gb * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def run_gen(manager, spec, args, rec) -> None:
    if spec.get("cap_gb"):
        rec["cap_gb"] = spec["cap_gb"]
    with memory_cap(spec.get("cap_gb")):
        _run_gen(manager, spec, args, rec)


def _run_gen(manager, spec, args, rec) -> None:
    req, opts = request_for(spec, args), options_for(spec, args)
    rec.update(options=opts.diff_from_default(), request=req.to_dict())
    if spec["warmup"]:
        t = time.perf_counter()
        warm_req = dataclasses.replace(req, num_inference_steps=min(spec["warmup"], req.num_inference_steps))
        warm_opts = opts.with_(sparse_dense_steps=1) if opts.sparse_attention != "none" else opts
        w = generate(manager, args.model, warm_req, warm_opts, out_dir=None)
        rec["warmup_run"] = {**summary(w), "wall_s": time.perf_counter() - t}
        print(f"  warm-up: {rec['warmup_run']['wall_s']:.1f} s (load {w.metrics.load_time_s}, warm-up "
              f"{w.metrics.warmup_time_s})", flush=True)
    rec["runs"] = []
    for i in range(spec["repeats"]):
        if i and time.perf_counter() - T0 > args.budget - 1.3 * rec["runs"][-1]["clip_latency_s"]:
            rec["note"] = f"{i} of {spec['repeats']} repeats (time budget)"
            break
        r = generate(manager, args.model, req, opts, out_dir=None)
        rec["runs"].append(summary(r))
        print(f"  run {i}: clip {r.metrics.clip_latency_s:.2f} s, phases "
              f"{ {k: round(v, 2) for k, v in r.metrics.phases.items()} }, peak {r.metrics.peak_vram_mb} MB, "
              f"nvml {r.metrics.nvml_peak_used_mb} MB, forwards {summary(r)['forwards']}", flush=True)


def run_oom(manager, spec, args, rec) -> None:
    req, opts = request_for(spec, args), options_for(spec, args)
    rec.update(options=opts.diff_from_default(), request=req.to_dict(), cap_gb=spec["cap_gb"])
    cuda = torch.cuda.is_available()
    with memory_cap(spec["cap_gb"]):
        try:
            generate(manager, args.model, req, opts, out_dir=None)
            rec["outcome"] = "no OOM (ran within the cap)"
        except Exception as e:  # noqa: BLE001 — the point: what the user sees
            rec["outcome"] = f"{type(e).__name__}: {e}"
    rec["allocated_after_mb"] = torch.cuda.memory_allocated() / 2**20 if cuda else None
    rec["manager_models_after"] = len(manager.resident())
    print(f"  outcome: {rec['outcome'][:300]}; allocated after {rec['allocated_after_mb']} MB", flush=True)
    after = dict(spec["after"])
    nxt = dataclasses.replace(WORKLOADS[args.workload or after["workload"]].request, **after["request"])
    r = generate(manager, args.model, nxt, opts, out_dir=None)
    rec["next_request"] = {"request": nxt.to_dict(), **summary(r)}
    print(f"  next request: clip {r.metrics.clip_latency_s:.2f} s, frames {r.frames.shape}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", choices=sorted(PLANS))
    ap.add_argument("--only", default="", help="comma-separated run names")
    ap.add_argument("--budget", type=float, default=560.0, help="seconds; later runs are skipped past it")
    ap.add_argument("--model", default="random-full")
    ap.add_argument("--workload", default="", help="dry run: every run on this workload (e.g. smoke)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--prepare", action="store_true",
                    help="only build the model and write the random distilled LoRAs, then exit (the preamble of "
                         "scripts/gpu_levers.sh and scripts/gpu_cold_path.sh)")
    args = ap.parse_args()
    if args.prepare:
        t0 = time.perf_counter()
        folder, _ = materialize(resolve_model(args.model, torch.cuda.is_available()))
        loras = write_distilled_loras(full=args.model != "tiny")
        print(f"{args.model} at {folder}, {len(loras)} random LoRAs ({time.perf_counter() - t0:.0f} s)", flush=True)
        return 0
    if args.list or not args.plan:
        for plan, runs in PLANS.items():
            print(plan + ":", "; ".join(r["name"] for r in runs))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"gpu_runs_{args.plan}.json"
    cuda = torch.cuda.is_available()
    res = {"plan": args.plan, "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
           "torch": torch.__version__, "date": time.strftime("%F %T"), "model": args.model,
           "random_weights": True, "runs": {}}
    res["distilled_loras"] = write_distilled_loras(full=args.model != "tiny")
    # a random-weight model is built on the GPU once (seconds, ~15 GB): do it before any run's memory cap, as a
    # user's checkpoint is on disk before the app loads it
    materialize(resolve_model(args.model, cuda), log=lambda m: print(f"[wan_ui] {m}", flush=True))
    if cuda:
        torch.cuda.empty_cache()
    manager = ModelManager(device="cuda" if cuda else "cpu", log=lambda m: print(f"[wan_ui] {m}", flush=True))
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    last = 0.0
    for spec in PLANS[args.plan]:
        if only and spec["name"] not in only:
            continue
        left = args.budget - (time.perf_counter() - T0)
        if left < max(45.0, 0.5 * last):
            res["runs"][spec["name"]] = {"skipped": f"time budget ({left:.0f} s left)"}
            continue
        print(f"=== {spec['name']} ({left:.0f} s left)", flush=True)
        rec, t = {}, time.perf_counter()
        try:
            (run_oom if spec["kind"] == "oom" else run_gen)(manager, spec, args, rec)
        except Exception as e:  # noqa: BLE001 — recorded; the next run still goes
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["trace"] = traceback.format_exc()[-3000:]
            print(f"  FAILED: {rec['error'][:500]}", flush=True)
            manager.clear()
        last = rec["wall_s"] = time.perf_counter() - t
        res["runs"][spec["name"]] = rec
        path.write_text(json.dumps(res, indent=1, default=str))
    manager.clear()
    res["allocated_after_clear_mb"] = torch.cuda.memory_allocated() / 2**20 if cuda else None
    res["total_s"] = time.perf_counter() - T0
    path.write_text(json.dumps(res, indent=1, default=str))
    print(f"total {res['total_s']:.0f} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
