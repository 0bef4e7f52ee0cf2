"""The optimization set: one frozen, hashable, serialisable record of every technique's knob.

Each field carries a `Spec` (family, load-time or run-time, allowed values, what hardware it needs). Load-time
fields decide which pipeline the model manager builds; run-time fields are applied to a built pipeline and
removed again without reloading weights. Presets are data (dicts of overrides), not code paths.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from wan_ui.core.distilled import DISTILLED_PRESETS
from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError, ValidationError
from wan_ui.core.fields import FieldSpec, spec_field, specs_of
from wan_ui.core.hardware import Hardware


@dataclass(frozen=True, kw_only=True)
class Spec(FieldSpec):
    """An option's FieldSpec (allowed values, checked by `FieldSpec.check`) plus its family and when it applies."""
    family: str
    load_time: bool  # True: changing it rebuilds the pipeline

    @property
    def label(self) -> str:
        return f"option {self.name}"


def _opt(default, family, load_time, help, choices=None, bounds=None, pattern=None):
    return spec_field(default, Spec(family=family, load_time=load_time, help=help, choices=choices, bounds=bounds,
                                    pattern=pattern))


PRECISIONS = ("fp32", "bf16", "fp16")
ATTENTION_BACKENDS = ("native", "cudnn", "flash", "efficient", "math", "flex", "sage", "xformers", "flash_attn")


@dataclass(frozen=True)
class OptimizationSet:
    # precision: compute dtype of transformer / text encoder; VAE separately (Wan advises fp32 VAE)
    precision: str = _opt("bf16", "precision", True, "transformer compute dtype", PRECISIONS)
    text_encoder_precision: str = _opt("bf16", "precision", True, "UMT5 text encoder dtype", PRECISIONS)
    vae_precision: str = _opt("fp32", "precision", True, "VAE dtype (fp32 as Wan advises; bf16 is 5x faster)",
                              ("fp32", "bf16"))
    # quantization (load-time, through diffusers' quantization configs)
    quantization: str = _opt("none", "quantization", True, "transformer weight quantization",
                             ("none", "bnb_nf4", "bnb_int8", "torchao_fp8", "torchao_int8wo", "fp8_storage"))
    text_encoder_quantization: str = _opt("none", "quantization", True, "text encoder quantization (bitsandbytes)",
                                          ("none", "bnb_nf4", "bnb_int8"))
    # operator fusion
    compile: str = _opt("none", "compile", True, "torch.compile: repeated blocks (regional) or whole transformer",
                        ("none", "regional", "full"))
    compile_mode: str = _opt("default", "compile", True, "torch.compile mode",
                             ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"))
    # offloading
    offload: str = _opt("none", "offload", True, "move weights to CPU between uses",
                        ("none", "model", "sequential", "group_block", "group_leaf"))
    # LoRA (run-time: load_lora_weights / unload)
    lora: str = _opt("", "lora", False, "adapters 'source[:scale]' separated by ';' (file, folder or hub id)")
    lora_fuse: bool = _opt(False, "lora", False, "fuse adapters into the weights (faster steps)", (False, True))
    # attention
    attention_backend: str = _opt("native", "attention", False, "diffusers attention backend", ATTENTION_BACKENDS)
    attention_slicing: int = _opt(0, "attention", False, "query chunk for chunked attention (0 = off); saves memory only with the math kernel",
                                  bounds=(0, 1 << 20))
    # training-free sparse self-attention (wan_ui/optim/sparse.py): a 3D sliding tile window on FlexAttention
    sparse_attention: str = _opt("none", "attention", False,
                                 "sparse self-attention: sta = sliding tile window (FlexAttention block mask)",
                                 ("none", "sta"))
    # half-widths in tiles of 1 x 8 x 16 patches. Default +-6 frames, +-1 tile in h and w: 89.5 % block-sparse at
    # the report size (5.9x faster attention than dense SDPA, ../shared/WORKLOADS.md). Ours, not published: STA
    # (arXiv 2502.04507) picks per-head windows by a mask search on real weights; check LPIPS vs dense.
    sparse_window: str = _opt("6,1,1", "attention", False,
                              "window half-widths 't,h,w' in tiles (tile = 1 frame x 8 x 16 patches)",
                              pattern=r"\s*\d+\s*,\s*\d+\s*,\s*\d+\s*")
    sparse_dense_steps: int = _opt(-1, "attention", False,
                                   "first N steps dense (-1 = STA's Wan setting, 12 of 50 steps, scaled)",
                                   bounds=(-1, 200))
    # Radial Attention keeps 1 layer dense, Sparse VideoGen 3 % of layers (1 of Wan 1.3B's 30)
    sparse_dense_layers: int = _opt(1, "attention", False, "first N transformer blocks keep dense attention",
                                    bounds=(0, 64))
    # scheduler
    scheduler: str = _opt("unipc", "scheduler", False, "sampler", ("unipc", "dpmpp", "euler"))
    flow_shift: float = _opt(0.0, "scheduler", False, "flow shift (0 = the model's own: 3.0)", bounds=(0.0, 20.0))
    # step caches (diffusers hooks)
    # FasterCache is not offered: its unconditional-batch reuse expects cond+uncond in one batch, while the
    # Wan pipeline calls the transformer once per branch (diffusers raises IndexError on Wan).
    cache: str = _opt("none", "cache", False, "step cache", ("none", "first_block", "mag", "taylorseer", "pab"))
    cache_threshold: float = _opt(0.0, "cache", False, "cache threshold (0 = the published default)",
                                  bounds=(0.0, 1.0))
    cache_max_skips: int = _opt(0, "cache", False,
                                "MagCache: most consecutive skipped steps K (0 = the published default 2; "
                                "the authors run 1.3B with 4 too)", bounds=(0, 8))
    # classifier-free guidance
    cfg_truncation: float = _opt(1.0, "cfg", False,
                                 "fraction of steps that run the unconditional pass (1 = all; CFG-trunc.)",
                                 bounds=(0.0, 1.0))
    cfg_batch: bool = _opt(False, "cfg", False, "run the cond and uncond branches as one batch-2 forward",
                           (False, True))
    # VAE decode memory
    vae_tiling: bool = _opt(False, "vae", False, "decode in spatial tiles (lower peak memory)", (False, True))
    vae_slicing: bool = _opt(False, "vae", False, "decode batch items one at a time", (False, True))
    vae_tile: int = _opt(256, "vae", False, "tiled decode: tile size in pixels (64 px overlap); 256 = diffusers' "
                         "default and least memory, 512 = 1.7x faster decode at 480p", (256, 384, 512))
    vae_channels_last: bool = _opt(False, "vae", False, "channels-last (NDHWC) VAE conv weights: 10 % faster bf16 "
                                   "decode on an H200", (False, True))

    # ---- introspection -------------------------------------------------------------------------
    @staticmethod
    def specs() -> dict[str, Spec]:
        return specs_of(OptimizationSet)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def load_key(self) -> tuple:
        """The part that decides which pipeline is built (weights, dtype, quantization, offload, compile)."""
        return tuple((k, v) for k, v in self.to_dict().items() if self.specs()[k].load_time)

    def runtime_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if not self.specs()[k].load_time}

    def family(self, name: str) -> dict[str, Any]:
        return {k: getattr(self, k) for k, s in self.specs().items() if s.family == name}

    def changed(self, other: "OptimizationSet") -> list[str]:
        return [k for k in self.specs() if getattr(self, k) != getattr(other, k)]

    def diff_from_default(self) -> dict[str, Any]:
        base = OptimizationSet()
        return {k: getattr(self, k) for k in self.changed(base)}

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "OptimizationSet | None" = None) -> "OptimizationSet":
        specs = cls.specs()
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise ValidationError(f"unknown option(s) {unknown}; valid options: {', '.join(specs)}", field=unknown[0])
        base = base or cls()
        coerced = {k: specs[k].check(v) for k, v in values.items()}
        return dataclasses.replace(base, **coerced)

    def with_(self, **values) -> "OptimizationSet":
        return OptimizationSet.from_dict(values, base=self)


def parse_set_args(pairs: list[str], base: OptimizationSet | None = None) -> OptimizationSet:
    """`["precision=bf16", "cache=mag"]` -> OptimizationSet (the CLI's `--set` and the benchmark's lists)."""
    values = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValidationError(f"--set expects key=value, got {pair!r}", field="set")
        k, v = pair.split("=", 1)
        values[k.strip()] = v.strip()
    return OptimizationSet.from_dict(values, base=base)


# ---- presets: data, not code paths -------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # The report's baseline: fp32 everywhere, UniPC, nothing else.
    "Baseline (report)": {"precision": "fp32", "text_encoder_precision": "fp32", "vae_precision": "fp32"},
    # The report's "best": bitsandbytes NF4 + fp16 compute + DPM++ (+ LoRA, + attention slicing).
    # The report's LoRA file is not named in it; add one in the LoRA field.
    "Report best": {"precision": "fp16", "text_encoder_precision": "fp16", "quantization": "bnb_nf4",
                    "text_encoder_quantization": "bnb_nf4", "scheduler": "dpmpp", "attention_slicing": 8192},
    # Ours, full memory: FP8 rowwise + regional compile + cuDNN attention + MagCache (authors' "slow" setting) +
    # CFG on the first half of the steps (musubi-tuner's late skip, apply ratio 0.5) + bf16 decode with
    # channels-last conv weights (-10 % decode, a kernel layout: rel. error 1.6e-2 vs bf16, as bf16 vs fp32).
    # H200, official480, random weights: 0.49 s per forward compiled, first call compiles for ~150 s.
    "Fast": {"precision": "bf16", "quantization": "torchao_fp8", "compile": "regional", "attention_backend": "cudnn",
             "cache": "mag", "cfg_truncation": 0.5, "vae_precision": "bf16", "vae_channels_last": True},
    # The same without FP8: 0.525 s per forward, but the first call compiles in ~12-80 s instead of ~150 s.
    "Fast (quick start)": {"precision": "bf16", "compile": "regional", "attention_backend": "cudnn", "cache": "mag",
                           "cfg_truncation": 0.5, "vae_precision": "bf16", "vae_channels_last": True},
    # The fastest training-free preset measured on `report` (H200, 2026-11-26): 53.0-53.4 s (59.5-59.9 s with MagCache
    # K=2 and the plain VAE layout, 3 runs; 152.5 s for "Fast"): the quick-start kernels (bf16 compiled per forward
    # is within 1 % of FP8 at 87,750 tokens, and compiles in seconds) + sliding-tile sparse attention, +-3 frames x
    # +-1 tile (94 % block-sparse), dense for the first 2 steps only + MagCache with K=4, the MagCache authors' own
    # command for T2V-1.3B (45 of 98 forwards instead of 51). The window and the dense-step count are ours, not a
    # published quality-preserving setting (docs/benchmarks/SPARSE.md): check LPIPS vs the dense baseline with real
    # weights (the Compare tab shows it); sparse_dense_steps=4 or more is the more careful choice.
    "Fast (sparse)": {"precision": "bf16", "compile": "regional", "attention_backend": "cudnn", "cache": "mag",
                      "cache_max_skips": 4, "cfg_truncation": 0.5, "vae_precision": "bf16", "vae_channels_last": True,
                      "sparse_attention": "sta", "sparse_window": "3,1,1", "sparse_dense_steps": 2},
    # Ours, small GPUs: the transformer streamed block by block on a CUDA stream (the next block prefetched while
    # one computes) around its regionally compiled blocks, the text encoder leaf by leaf, the VAE resident with
    # 512 px decode tiles, and the step savings of "Fast" (MagCache's published setting, CFG on the first half).
    # H200, `official480` inside a 4.5 GB allocator cap: 26.8 s, 2.80 GB torch peak, 5.58 GB NVML peak. Leaf-level
    # offload, eager (compile cannot trace its per-leaf onload hooks), was 29.5 s; on `report` 193.9 s at 5.4 GB
    # with the VAE streamed too (docs/benchmarks/README.md "Memory"). The UI sizes it to the GPU's free memory
    # (wan_ui/core/lowvram.py).
    "Low VRAM": {"precision": "bf16", "offload": "group_block", "compile": "regional", "vae_tiling": True,
                 "vae_tile": 512, "vae_precision": "bf16", "vae_channels_last": True, "cache": "mag",
                 "cfg_truncation": 0.5},
    # "Low VRAM" + the schedule and sparse attention of "Fast (sparse)" (2 dense steps, MagCache K=4), for issue 8's
    # "report in <= 8 GB within 1.5x of the fastest full-memory preset". H200, `report`, inside a 6.5 GB allocator
    # cap (what an 8 GB card leaves to torch): 57.3 s = 1.07x "Fast (sparse)" (53.4 s), 4.07 GB torch peak, 6.96 GB
    # NVML peak; with leaf-level offload, eager: 83.3 s. Lossy in the same way as "Fast (sparse)".
    "Low VRAM (sparse)": {"precision": "bf16", "offload": "group_block", "compile": "regional", "vae_tiling": True,
                          "vae_tile": 512, "vae_precision": "bf16", "vae_channels_last": True, "cache": "mag",
                          "cache_max_skips": 4, "cfg_truncation": 0.5, "sparse_attention": "sta",
                          "sparse_window": "3,1,1", "sparse_dense_steps": 2},
    # The leanest measured set, for 6 GB cards at 480p (issue 8's "6 GB" preset): "Low VRAM" with diffusers' 256 px
    # decode tiles. H200, `official480`, inside a 4.5 GB allocator cap: 27.0 s, 2.31 GB torch peak, 5.52 GB NVML
    # peak (docs/benchmarks/README.md "Memory").
    "Low VRAM (6 GB)": {"precision": "bf16", "offload": "group_block", "compile": "regional", "vae_tiling": True,
                        "vae_tile": 256, "vae_precision": "bf16", "vae_channels_last": True, "cache": "mag",
                        "cfg_truncation": 0.5},
    # Everything that runs on a CPU: bf16, a cache, no CUDA-only kernels.
    "CPU quick": {"precision": "bf16", "cache": "first_block"},
}
# Few-step distilled LoRAs (CausVid 8-step, Self-Forcing DMD 4-step): the LoRA by hub id, its shift and kernels here;
# the steps and guidance they need are request hints (wan_ui/core/distilled.py, applied by the CLI's --preset).
PRESETS.update(DISTILLED_PRESETS)


def preset(name: str) -> OptimizationSet:
    if name not in PRESETS:
        raise ValidationError(f"unknown preset {name!r}; valid presets: {list(PRESETS)}", field="preset")
    return OptimizationSet.from_dict(PRESETS[name])


# ---- availability and compatibility ------------------------------------------------------------
def value_availability(name: str, value: Any, hw: Hardware) -> str | None:
    """None if `name=value` can run on `hw`, else the reason it cannot."""
    needs_cuda = {
        ("quantization", "bnb_nf4"), ("quantization", "bnb_int8"), ("quantization", "torchao_fp8"),
        ("text_encoder_quantization", "bnb_nf4"), ("text_encoder_quantization", "bnb_int8"),
        ("offload", "model"), ("offload", "sequential"), ("offload", "group_block"), ("offload", "group_leaf"),
        ("attention_backend", "cudnn"), ("attention_backend", "flash"), ("attention_backend", "efficient"),
        ("attention_backend", "sage"), ("attention_backend", "xformers"), ("attention_backend", "flash_attn"),
    }
    if (name, value) in needs_cuda and not hw.cuda:
        return f"{name}={value} needs a CUDA GPU; this machine has none"
    package = {"bnb_nf4": "bitsandbytes", "bnb_int8": "bitsandbytes", "torchao_fp8": "torchao",
               "torchao_int8wo": "torchao", "sage": "sageattention", "xformers": "xformers",
               "flash_attn": "flash_attn"}.get(value) if name in (
        "quantization", "text_encoder_quantization", "attention_backend") else None
    if package and not hw.has(package):
        return f"{name}={value} needs the Python package {package!r}, which is not installed"
    if value in ("torchao_fp8", "fp8_storage") and name == "quantization" and hw.cuda:
        if hw.capability < (8, 9):
            return f"{name}={value} needs FP8 tensor cores (compute capability >= 8.9); {hw.device_name} has " \
                   f"{hw.capability[0]}.{hw.capability[1]}"
    if name == "quantization" and value == "torchao_fp8" and not hw.cuda:
        return f"{name}={value} needs a CUDA GPU with compute capability >= 8.9; this machine has none"
    if name == "compile" and value != "none" and hw.cuda:  # inductor's GPU kernels are Triton kernels
        if not hw.has("triton"):
            return f"{name}={value} on a GPU needs the Python package 'triton', which is not installed"
        if hw.capability is not None and hw.capability < (7, 0):
            return (f"{name}={value} needs compute capability >= 7.0 for Triton; {hw.device_name} has "
                    f"{hw.capability[0]}.{hw.capability[1]}")
    return None


def check_available(opts: OptimizationSet, hw: Hardware) -> None:
    for name, value in opts.to_dict().items():
        reason = value_availability(name, value, hw)
        if reason:
            raise UnavailableError(reason, field=name)


# (condition, message): each says what to do instead. Kept as data so the README table is generated from it.
OPTION_CONFLICTS: list[tuple[str, Any, str]] = [
    ("sequential offload + torch.compile",
     lambda o: o.offload == "sequential" and o.compile != "none",
     "use offload=group_block (streams) with compile=regional, or compile=none"),
    # H200: "Skip inlining `torch.compiler.disable()`d function ModuleGroup.onload_" (the hooks sit on every linear
    # inside the compiled block); block-level hooks wrap the compiled block from outside and work.
    ("leaf-level group offload + torch.compile",
     lambda o: o.offload == "group_leaf" and o.compile == "regional",
     "use offload=group_block with compile=regional (its hooks wrap the compiled blocks), or compile=none"),
    ("group offload + full-model compile",
     lambda o: o.offload.startswith("group") and o.compile == "full",
     "use compile=regional with group offload"),
    ("bitsandbytes quantization + torch.compile",
     lambda o: o.quantization.startswith("bnb") and o.compile != "none",
     "use quantization=torchao_fp8 with compile, or compile=none"),
    ("bitsandbytes quantization + fused LoRA",
     lambda o: (o.quantization.startswith("bnb")) and o.lora_fuse,
     "keep lora_fuse=false on bitsandbytes weights (unfused adapters work)"),
    ("fp8_storage (layerwise casting) + compile=full",
     lambda o: o.quantization == "fp8_storage" and o.compile == "full",
     "use compile=regional"),
    ("attention_slicing + an attention backend other than native or math",
     lambda o: o.attention_slicing > 0 and o.attention_backend not in ("native", "math"),
     "chunked attention runs on PyTorch SDPA; set attention_backend=native (or math)"),
    ("cfg_batch + a step cache",
     lambda o: o.cfg_batch and o.cache != "none",
     "step caches keep one state per branch; use cfg_batch=false with a cache"),
    ("offload + quantization=torchao_fp8 with group offload",
     lambda o: o.quantization in ("torchao_fp8", "torchao_int8wo") and o.offload.startswith("group"),
     "torchao tensor subclasses do not stream through group offload; use fp8_storage with group offload"),
]


def option_notes(opts: OptimizationSet, hw: Hardware) -> list[str]:
    """What a set will not do that its name suggests, on this hardware (shown with the result, never an error)."""
    notes = []
    if opts.attention_slicing and opts.attention_backend == "native" and hw.cuda:
        notes.append("attention_slicing saves no memory here: SDPA's fused kernels never hold the score matrix "
                     "(measured on an H200: same peak, same speed); it lowers memory with attention_backend=math")
    return notes


def check_compatible(opts: OptimizationSet) -> None:
    """Raise IncompatibleOptionsError for the first combination that cannot work, saying what to do instead."""
    for what, bad, instead in OPTION_CONFLICTS:
        if bad(opts):
            raise IncompatibleOptionsError(f"incompatible options: {what}; {instead}", field=_culprit(opts, bad))


def _culprit(opts: OptimizationSet, bad) -> str | None:
    """The first changed field whose default resolves the conflict: what the UI's error names."""
    base = OptimizationSet()
    return next((k for k in opts.changed(base) if not bad(dataclasses.replace(opts, **{k: getattr(base, k)}))), None)


def options_table(hw: Hardware) -> list[dict[str, Any]]:
    """One row per field for `python -m wan_ui options --json` and the UI's checkbox groups."""
    base = OptimizationSet()
    rows = []
    for name, spec in OptimizationSet.specs().items():
        values = list(spec.choices) if spec.choices else None
        unavailable = {str(v): r for v in (values or []) if (r := value_availability(name, v, hw))}
        rows.append({
            "name": name, "family": spec.family, "load_time": spec.load_time,
            "kind": "load-time" if spec.load_time else "run-time", "help": spec.help,
            "values": values, "bounds": list(spec.bounds) if spec.bounds else None,
            "default": getattr(base, name),
            "available": len(unavailable) < len(values) if values else True,
            "unavailable_values": unavailable,
        })
    return rows
