"""The sparse presets' attention with each `sparse_layout`: padded (one block per tile) vs packed (a narrow last tile
column in one block), alone on the GPU, so its effect is seen apart from the rest of a forward.

Times `wan_ui.optim.sparse.sparse_attention` — the reorder into blocks, FlexAttention and the reorder back, compiled
together as inside a regional-compiled block — at the `official480` and `report` grids, window 3,1,1 (the presets'),
bf16, B=1, 12 heads x 128 (Wan 1.3B), with FlexAttention's Triton kernel and, when flash-attn-4 imports, its
FlashAttention-4 kernel. Each packed output is compared with the padded one (max abs difference: the same mask, so
rounding only). Writes $OUT/sparse_layout.json.

Usage (wheels on PYTHONPATH as scripts/gpu_levers.sh sets them): python scripts/time_sparse_layout.py
CPU dry run (eager flex, a small grid): OUT=/tmp/sl python scripts/time_sparse_layout.py --grids tiny --iters 1
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
from pathlib import Path

import torch
from gpu_timing import timed  # scripts/gpu_timing.py (scripts/ is on sys.path when run as a script)

from wan_ui.optim.sparse import TileLayout, build_block_mask, kept_blocks, sparse_attention

OUT = Path(os.environ.get("OUT", "/tmp/out"))
# (T, Hp, Wp) patch grids of the workloads (wan_ui.core.requests.WORKLOADS through sparse.patch_grid); "tiny" is
# a CPU dry run's grid with a narrow last column (4 patches: 2 tiles x 8 x 4 = 64 <= 128 tokens share a block)
GRIDS = {"official480": (21, 30, 52), "report": (25, 45, 78), "tiny": (2, 16, 36)}
WINDOW = (3, 1, 1)


def has_flash_attn_4() -> bool:
    try:  # find_spec of a submodule imports its parent, which raises when flash_attn is not installed at all
        return importlib.util.find_spec("flash_attn.cute") is not None
    except ModuleNotFoundError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="official480,report")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    kernels = ["triton"] + (["flash"] if cuda and has_flash_attn_4() else [])
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "window": list(WINDOW), "dtype": str(dtype), "grids": {}}
    for name in args.grids.split(","):
        grid = GRIDS[name]
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(1, math.prod(grid), 12, 128, generator=g, device=device, dtype=dtype)
                   for _ in range(3))
        rows, outs = {}, {}
        for pack in (False, True):
            layout = TileLayout(grid, pack=pack)
            mask = build_block_mask(layout, WINDOW, device)
            indices = (layout.gather_index().to(device), layout.scatter_index().to(device)) if layout.merged else None
            for kernel in kernels:
                label = f"{'packed' if pack else 'padded'}/{kernel}"
                torch._dynamo.reset()
                fn = torch.compile(sparse_attention, dynamic=False) if cuda else sparse_attention
                try:
                    median, first, out = timed(functools.partial(fn, q, k, v, layout, mask, kernel, indices),
                                              args.iters, cuda)
                except Exception as e:  # noqa: BLE001 — a kernel that cannot run this layout is a result too
                    rows[label] = {"error": f"{type(e).__name__}: {str(e)[:600]}"}
                    print(f"[{name}] {label}: {rows[label]['error']}", flush=True)
                    continue
                outs[label] = out.float()
                rows[label] = {"median_s": median, "first_call_s": first, "merged": layout.merged,
                               "slots": layout.padded_len, "kept_blocks": kept_blocks(layout, WINDOW),
                               "blocks": (layout.padded_len // layout.tile_tokens) ** 2}
                print(f"[{name}] {label}: {1000 * median:.2f} ms (first call {first:.1f} s), "
                      f"{rows[label]['kept_blocks']} kept blocks", flush=True)
        for kernel in kernels:
            a, b = outs.get(f"padded/{kernel}"), outs.get(f"packed/{kernel}")
            if a is not None and b is not None:
                rows[f"packed/{kernel}"]["max_abs_diff_vs_padded"] = float((a - b).abs().max())
                rows[f"packed/{kernel}"]["speedup_vs_padded"] = \
                    rows[f"padded/{kernel}"]["median_s"] / rows[f"packed/{kernel}"]["median_s"]
        result["grids"][name] = {"grid": list(grid), "tokens": math.prod(grid), "variants": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sparse_layout.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({n: {k: {f: r.get(f) for f in ("median_s", "speedup_vs_padded", "max_abs_diff_vs_padded",
                                                     "error")} for k, r in g["variants"].items()}
                      for n, g in result["grids"].items()}, indent=1))


if __name__ == "__main__":
    main()
