"""One transformer forward per variant at a workload's size: time (median of 3) and error vs bf16 / fp32.

Relative error = ||out - ref|| / ||ref|| over the whole output (B, C, T, H, W). Random weights from the
random-full folder (materialized first). Writes $OUT/numerics_<workload>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import traceback

import torch


from wan_ui.core.models import materialize, resolve_model
from wan_ui.optim.quantization import NOT_QUANTIZED
from wan_ui.core.requests import WORKLOADS


def load(folder, dtype, quant=None):
    from diffusers import TorchAoConfig, WanTransformer3DModel

    kw = {}
    if quant == "fp8":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        kw["quantization_config"] = TorchAoConfig(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
                                                  modules_to_not_convert=NOT_QUANTIZED)
    elif quant == "fp8_all":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        kw["quantization_config"] = TorchAoConfig(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    m = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype, use_safetensors=True,
                                              **kw)
    return m.to("cuda").eval()


def timed(fn, n=3):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return out, statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="official480")
    ap.add_argument("--variants", default="fp32,bf16,cudnn,flash,fp8,fp8_all,fp8_storage,compile")
    args = ap.parse_args()
    out_dir = os.environ.get("OUT", "/tmp/out")
    folder, _ = materialize(resolve_model("random-full"))
    r = WORKLOADS[args.workload].request
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, 16, r.latent_frames, r.height // 8, r.width // 8, device="cuda", generator=g)
    ctx = torch.randn(1, 512, 4096, device="cuda", generator=g) * 0.1  # text-encoder-like scale
    t = torch.tensor([500.0], device="cuda")
    res = {"device": torch.cuda.get_device_name(0), "workload": args.workload, "tokens": r.tokens_per_forward(),
           "variants": {}}
    refs = {}
    for v in args.variants.split(","):
        try:
            dtype = torch.float32 if v == "fp32" else torch.bfloat16
            quant = v if v.startswith("fp8") and v != "fp8_storage" else None
            m = load(folder, dtype, quant)
            if v == "cudnn":
                m.set_attention_backend("_native_cudnn")
            if v == "flash":
                m.set_attention_backend("_native_flash")
            if v == "fp8_storage":
                m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
            if v == "compile":
                m.set_attention_backend("_native_cudnn")
                m.compile_repeated_blocks(fullgraph=True)
            t0 = time.perf_counter()
            with torch.inference_mode():
                first = m(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=ctx.to(dtype),
                          return_dict=False)[0]
                torch.cuda.synchronize()
                first_s = time.perf_counter() - t0
                out, sec = timed(lambda: m(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=ctx.to(dtype),
                                           return_dict=False)[0])
            out = out.float()
            if v in ("fp32", "bf16"):
                refs[v] = out
            row = {"forward_s": sec, "first_call_s": first_s, "nan": bool(torch.isnan(out).any()),
                   "peak_mb": torch.cuda.max_memory_allocated() / 2**20}
            for name, ref in refs.items():
                row[f"rel_err_vs_{name}"] = ((out - ref).norm() / ref.norm()).item()
            res["variants"][v] = row
            print(v, json.dumps(row), flush=True)
            del m, out, first
        except Exception as e:
            res["variants"][v] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
            print(v, "FAILED", type(e).__name__, str(e)[:400], flush=True)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with open(os.path.join(out_dir, f"numerics_{args.workload}.json"), "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
