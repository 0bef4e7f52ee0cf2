"""Sparse attention on one H100/H200 in one call (< 9 min): attention-only speed and error, then end to end.

  1. attention alone at the `report` size (87,750 tokens = 25 x 45 x 78 patches, 12 heads, d 128, bf16):
     dense SDPA vs the sliding-tile-window path (`wan_ui.optim.sparse.sparse_attention`: token reorder +
     compiled FlexAttention) at 3 windows, and FlexAttention alone on pre-tiled tokens; BlockMask build time;
  2. relative error of the attention output vs dense SDPA on structured inputs: q, k, v low-frequency random
     fields over (t, h, w) with Wan's RoPE applied to q and k, at two logit temperatures (x1, x4 on q) —
     random weights say nothing about real attention maps, smooth fields with RoPE are the stand-in;
  3. end to end: the `report` workload on random-full with a preset (default Fast) + sparse_attention=sta,
     through `wan_ui.core.generate` (a 2-step warm-up compiles the dense and the sparse graphs, then the timed run);
     optionally the same preset dense (--with-dense) when time is left.
Each part is isolated (an error is recorded, the rest goes on). Writes $OUT/sparse_bench.json and .md.

Usage (repository root, wheels on PYTHONPATH as in scripts/gpu_bench.sh):
    python scripts/gpu_sparse_bench.py [--windows 24,1,1 6,1,1 3,1,1] [--preset Fast] [--e2e-steps N]
                                       [--skip-e2e] [--with-dense] [--budget 500]
CPU dry run:  OUT=/tmp/sb python scripts/gpu_sparse_bench.py --grid 3,16,32 --windows 1,1,1 0,0,0 \
                  --e2e-model tiny --e2e-workload smoke --preset "CPU quick" --with-dense
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F
from gpu_timing import timed  # scripts/gpu_timing.py (scripts/ is on sys.path when run as a script)

from wan_ui.optim.attention import _rope
from wan_ui.optim.sparse import (
    DEFAULT_TILE,
    TileLayout,
    _flex,
    build_block_mask,
    sparse_attention,
    sparsity_report,
    window_density,
)

OUT = os.environ.get("OUT", "/tmp/out")
GRID = (25, 45, 78)  # report: 97 frames -> 25 latent frames; 720 x 1248 px -> 45 x 78 patches
HEADS, DIM = 12, 128
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a dry run of the script at a small --grid
T0 = time.perf_counter()


def _time(fn, warmup=3, repeats=10) -> float:
    """Median seconds of fn() after `warmup` calls (the first of them timed apart by gpu_timing.timed); on the CPU
    (a dry run) one call."""
    for _ in range(warmup - 1):
        fn()
    return timed(fn, repeats if DEVICE == "cuda" else 1, DEVICE == "cuda")[0]


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _smooth_field(channels: int, seed: int, coarse=(4, 6, 8)) -> torch.Tensor:
    """(1, L, HEADS, DIM) low-frequency random field over (t, h, w): trilinear upsampling of a coarse grid."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(1, channels, *coarse, device=DEVICE, generator=g)
    x = F.interpolate(x, size=GRID, mode="trilinear", align_corners=True)  # (1, C, T, H, W)
    x = (x - x.mean((2, 3, 4), keepdim=True)) / x.std((2, 3, 4), keepdim=True)
    x = x + 0.1 * torch.randn(x.shape, device=DEVICE, generator=g)  # a little fine detail
    # contiguous: a head dim with stride L would push SDPA to its math kernel (an L x L matrix: 344 GiB here)
    return x.flatten(2).transpose(1, 2).unflatten(2, (HEADS, DIM)).contiguous()


def _wan_rope():
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    rope = WanRotaryPosEmbed(DIM, (1, 2, 2), 1024).to(DEVICE)
    latents = torch.empty(1, 16, GRID[0], GRID[1] * 2, GRID[2] * 2, device=DEVICE)
    return rope(latents)  # (cos, sin), each (1, L, 1, DIM)


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def attention_only(windows, res) -> None:
    q, k, v = (torch.randn(1, math.prod(GRID), HEADS, DIM, device=DEVICE, dtype=torch.bfloat16) for _ in range(3))
    res["dense_sdpa_s"] = _time(lambda: _sdpa(q, k, v))
    res["windows"] = {}
    for text in windows:
        window = tuple(int(x) for x in text.split(","))
        layout = TileLayout(GRID, DEFAULT_TILE)
        _sync()
        t = time.perf_counter()
        mask = build_block_mask(layout, window, DEVICE)
        _sync()
        row = {"mask_build_s": time.perf_counter() - t, "block_sparsity": mask.sparsity() / 100,
               "analytic_sparsity": 1 - window_density(layout.tiles, window)}
        qt, kt, vt = (layout.to_tiles(x).transpose(1, 2).contiguous() for x in (q, k, v))
        row["flex_only_s"] = _time(lambda: _flex(qt, kt, vt, mask))
        row["sta_processor_s"] = _time(lambda: sparse_attention(q, k, v, layout, mask))
        row["speedup_vs_sdpa"] = res["dense_sdpa_s"] / row["sta_processor_s"]
        res["windows"][text] = row
        print(f"[attention] window {text}: {row}", flush=True)


def attention_error(windows, res) -> None:
    """q = t * X, k = X + noise for one smooth field X: q_i . k_j falls with the distance of i and j (as in a model
    whose attention is local), RoPE adds Wan's relative-position phase; t sets how peaked the softmax is."""
    cos, sin = _wan_rope()
    x, noise, v = _smooth_field(HEADS * DIM, 1), _smooth_field(HEADS * DIM, 2), _smooth_field(HEADS * DIM, 3)
    k = _rope(x + 0.3 * noise, cos, sin).to(torch.bfloat16)
    v = v.to(torch.bfloat16)
    res["error"] = {}
    for temp in (0.5, 1.0):
        q = _rope(temp * x, cos, sin).to(torch.bfloat16)
        ref = _sdpa(q, k, v).float()
        row = {}
        for text in ["99,99,99", *windows]:  # the first: the full window, i.e. the numerical floor
            window = tuple(int(w) for w in text.split(","))
            layout = TileLayout(GRID, DEFAULT_TILE)
            out = sparse_attention(q, k, v, layout, build_block_mask(layout, window, DEVICE)).float()
            row[text] = ((out - ref).norm() / ref.norm()).item()
        res["error"][f"temperature_x{temp:g}"] = row
        print(f"[error] q x{temp:g}: {row}", flush=True)


def end_to_end(args, res) -> None:
    from wan_ui.core.generate import generate
    from wan_ui.core.manager import ModelManager
    from wan_ui.core.options import preset
    from wan_ui.core.requests import WORKLOADS

    manager = ModelManager(device=DEVICE, log=lambda m: print(f"[wan_ui] {m}", flush=True))
    req = WORKLOADS[args.e2e_workload].request
    req = dataclasses.replace(req, num_inference_steps=args.e2e_steps or req.num_inference_steps)
    sets = [(f"sparse {w}", preset(args.preset).with_(sparse_attention="sta", sparse_window=w))
            for w in args.e2e_window.split(";")]
    if args.with_dense:
        sets.append(("dense", preset(args.preset)))
    res["e2e"] = {"preset": args.preset, "workload": args.e2e_workload, "model": args.e2e_model,
                  "request": req.to_dict(), "runs": {}}
    last = 0.0  # seconds the previous set took (warm-up + timed): a later set needs about as long
    for label, opts in sets:
        if time.perf_counter() - T0 > args.budget - max(60.0, 0.8 * last):
            res["e2e"]["runs"][label] = {"skipped": "time budget"}
            continue
        try:
            # warm-up: 2 steps, the first dense, so both graphs compile (and the model loads) outside the timed run
            t_set = time.perf_counter()
            warm = generate(manager, args.e2e_model, dataclasses.replace(req, num_inference_steps=2),
                            opts.with_(sparse_dense_steps=1) if label.startswith("sparse") else opts, out_dir=None)
            timed = generate(manager, args.e2e_model, req, opts, out_dir=None)
            m = timed.metrics
            res["e2e"]["runs"][label] = {
                "options": opts.diff_from_default(), "warmup_run_s": warm.metrics.clip_latency_s,
                "load_s": warm.metrics.load_time_s, "clip_latency_s": m.clip_latency_s, "phases": m.phases,
                "step_latencies_s": m.step_latencies_s, "peak_vram_mb": m.peak_vram_mb,
                "sparsity": sparsity_report(req, opts), "forwards": [m.forwards_planned, m.forwards_computed],
                "forwards_skipped": m.forwards_skipped}
            last = time.perf_counter() - t_set
            print(f"[e2e] {label}: clip {m.clip_latency_s:.1f} s, phases {m.phases}", flush=True)
        except Exception as e:  # noqa: BLE001 — recorded, the next set still runs
            res["e2e"]["runs"][label] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
            print(f"[e2e] {label} failed: {e}", flush=True)


def write_markdown(res, path) -> None:
    lines = [f"# Sparse attention on {res.get('device')} ({res.get('date')})", "",
             f"## Attention alone ({math.prod(GRID):,} tokens = {GRID} patches, 12 heads, d 128, bf16)", "",
             f"Dense SDPA: {1000 * res.get('dense_sdpa_s', float('nan')):.1f} ms", "",
             "| window (t,h,w tiles) | block-sparse | STA path ms | flex only ms | speed-up vs SDPA | mask build s |",
             "|---|---|---|---|---|---|"]
    for w, r in res.get("windows", {}).items():
        lines.append(f"| {w} | {100 * r['block_sparsity']:.1f} % | {1000 * r['sta_processor_s']:.1f} | "
                     f"{1000 * r['flex_only_s']:.1f} | {r['speedup_vs_sdpa']:.2f}x | {r['mask_build_s']:.2f} |")
    lines += ["", "## Relative error of the attention output vs dense SDPA (smooth q/k/v fields + Wan RoPE)", ""]
    for temp, row in res.get("error", {}).items():
        lines.append(f"- {temp}: " + ", ".join(f"{w}: {e:.4f}" for w, e in row.items()) + " (99,99,99 = full window)")
    e2e = res.get("e2e", {})
    lines += ["", f"## End to end (`{e2e.get('workload', 'report')}`, preset {e2e.get('preset')} + sparse)", ""]
    for label, r in res.get("e2e", {}).get("runs", {}).items():
        if "clip_latency_s" in r:
            s = r.get("sparsity") or {}
            lines.append(f"- {label}: clip {r['clip_latency_s']:.1f} s, phases "
                         f"{ {k: round(v, 1) for k, v in r['phases'].items()} }, peak {r['peak_vram_mb']} MB"
                         f"{'; ' + s['summary'] if s else ''}")
        else:
            lines.append(f"- {label}: {r.get('error') or r.get('skipped')}")
    for part, err in res.get("errors", {}).items():
        lines.append(f"\nError in {part}: {err}")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    from pathlib import Path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", nargs="+", default=["24,1,1", "6,1,1", "3,1,1"])
    p.add_argument("--preset", default="Fast")
    p.add_argument("--e2e-steps", type=int, default=0, help="0 = the workload's (report: 65)")
    p.add_argument("--e2e-workload", default="report")
    p.add_argument("--e2e-model", default="random-full", help="CPU dry run: tiny with --e2e-workload smoke")
    p.add_argument("--e2e-window", default="6,1,1", help="';'-separated windows, one timed run each (same pipeline)")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--with-dense", action="store_true", help="also time the preset without sparse attention")
    p.add_argument("--budget", type=float, default=500.0, help="seconds; later parts are skipped past it")
    p.add_argument("--grid", default="25,45,78", help="patch grid T,H,W of the attention parts (CPU dry run: 3,16,32)")
    args = p.parse_args()
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    global GRID
    GRID = tuple(int(x) for x in args.grid.split(","))
    res = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (dry run)", "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "grid": GRID, "tile": DEFAULT_TILE, "errors": {}}
    parts = [("attention_only", lambda: attention_only(args.windows, res)),
             ("attention_error", lambda: attention_error(args.windows, res))]
    if not args.skip_e2e:
        parts.append(("end_to_end", lambda: end_to_end(args, res)))
    for name, fn in parts:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            res["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
            print(f"[{name}] failed: {e}", flush=True)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        (out / "sparse_bench.json").write_text(json.dumps(res, indent=1, default=str))
        write_markdown(res, out / "sparse_bench.md")
    res["total_s"] = time.perf_counter() - T0
    (out / "sparse_bench.json").write_text(json.dumps(res, indent=1, default=str))
    write_markdown(res, out / "sparse_bench.md")
    print((out / "sparse_bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
