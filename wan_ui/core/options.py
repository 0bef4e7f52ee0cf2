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

from wan_ui.core.distilled import DISTILLED, DISTILLED_PRESETS
from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError, ValidationError
from wan_ui.core.fidelity import LOSSY, TAGS, ByValue, Case, Cases, Fidelity, always, worst
from wan_ui.core.fields import FieldSpec, spec_field, specs_of
from wan_ui.core.hardware import Hardware
from wan_ui.core.user_presets import user_preset_names, user_preset_options
from wan_ui.optim.lora import split_lora_spec


@dataclass(frozen=True, kw_only=True)
class Spec(FieldSpec):
    """An option's FieldSpec (allowed values, checked by `FieldSpec.check`) plus its family and when it applies."""
    family: str
    load_time: bool  # True: changing it rebuilds the pipeline
    fidelity: ByValue | Cases  # each value's fidelity class (wan_ui/core/fidelity.py, docs/FIDELITY.md)
    fidelity_part_of: str | None = None  # the lever this field refines (counted only while that one is not exact)

    @property
    def label(self) -> str:
        return f"option {self.name}"


def _opt(default, family, load_time, help, choices=None, bounds=None, pattern=None, *, fidelity, part_of=None):
    return spec_field(default, Spec(family=family, load_time=load_time, help=help, choices=choices, bounds=bounds,
                                    pattern=pattern, fidelity=fidelity, fidelity_part_of=part_of))


PRECISIONS = ("fp32", "bf16", "fp16")
ATTENTION_BACKENDS = ("native", "cudnn", "flash", "efficient", "math", "flex", "sage", "xformers", "flash_attn")


# ---- fidelity of each value: data for wan_ui/core/fidelity.py (docs/FIDELITY.md) ---------------------------------
# Where the bounds of `close` values were measured (random weights, official480 size; the card and date are
# recorded there): one transformer forward per variant vs fp32 / bf16 eager, and the VAE decoding seeded random
# latents.
_NUMERICS = "docs/benchmarks/README.md, one-forward rel. error (raw/h200-20261126-numerics-official480.json)"
_VAE_BENCH = 'docs/benchmarks/README.md "VAE decode" (raw/h200-20261126-vae-decode.json)'
# Who published the lossy settings we offer
_QLORA = "QLoRA, arXiv 2305.14314"
_LLM_INT8 = "LLM.int8(), arXiv 2208.07339"
_MAGCACHE = "MagCache, arXiv 2506.09045"
_MAGCACHE_K4 = "Zehong-Ma/MagCache README (T2V-1.3B, E012K4R02)"
_STA = "Sliding Tile Attention, arXiv 2502.04507"
_RADIAL = "Radial Attention, arXiv 2506.19852"
# MagCache's "slow" setting as wan_ui/optim/cache.py applies it (DEFAULT_THRESHOLDS["mag"], DEFAULT_MAG_SKIPS;
# tests/test_fidelity.py checks they agree). Not imported: that module imports diffusers.
_MAG_THRESHOLD, _MAG_SKIPS = 0.12, 2
_EXACT_UNUSED = "not read with this setting of the lever it refines"


def _exact(what: str, note: str = "", source: str = "") -> Fidelity:
    return Fidelity("exact", what, note, source)


def _close(what: str, note: str, source: str) -> Fidelity:
    return Fidelity("close", what, note, source)


def _published(what: str, note: str, source: str) -> Fidelity:
    return Fidelity("lossy-published", what, note, source)


def _ours(what: str, note: str, source: str = "") -> Fidelity:
    return Fidelity("lossy-ours", what, note, source)


def _by_value(*pairs) -> ByValue:
    return ByValue(tuple(pairs))


def _precision(part: str, bf16: tuple[str, str], fp16: tuple[str, str]) -> ByValue:
    """fp32 is the reference; bf16 and fp16 are (note, source) pairs."""
    return _by_value(("fp32", _exact(f"fp32 {part}", "the reference")),
                     ("bf16", _close(f"bf16 {part}", *bf16)), ("fp16", _close(f"fp16 {part}", *fp16)))


_FP16_NOTE = ("rounding 2^-11 (finer than bf16's 2^-8) but a range of +-65504; not measured here",
              "IEEE 754 binary16")
_PRECISION = _precision("transformer", ("one transformer forward 1.5e-2 from fp32 (measured)", _NUMERICS), _FP16_NOTE)
_TEXT_PRECISION = _precision(
    "text encoder", ("rounding 2^-8; Wan's own code runs its T5 in bf16 (Wan-Video/Wan2.1 t5_dtype); not measured "
                     "here", "Wan-Video/Wan2.1 configs"),
    ("transformers clamps UMT5 activations to fp16's range where they would overflow; not measured here",
     _FP16_NOTE[1]))
_VAE_PRECISION = _by_value(("fp32", _exact("fp32 VAE decode", "the reference; Wan's advice")),
                           ("bf16", _close("bf16 VAE decode", "decode 1.7e-2 from fp32 (measured)", _VAE_BENCH)))


def _quantization(part: str) -> tuple:
    return (("none", _exact(f"{part} weights unquantized")),
            ("bnb_nf4", _published(f"NF4 {part} weights", "4-bit NormalFloat weights with blockwise scales, compute "
                                   "in the chosen precision; QLoRA reports 16-bit quality for LLMs; not measured on "
                                   "Wan here", _QLORA)),
            ("bnb_int8", _published(f"int8 {part} weights", "8-bit weights, outlier columns kept in fp16; reported "
                                    "without degradation for LLMs; not measured on Wan here", _LLM_INT8)))


_QUANTIZATION = ByValue(_quantization("transformer") + (
    ("torchao_fp8", _published(
        "FP8 rowwise", "FP8 e4m3 weights and dynamically quantized activations with per-row scales on the 30 "
        "blocks' linears; one forward 1.4e-2 from bf16 (measured, " + _NUMERICS + ")",
        "torchao docs, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())")),
    ("torchao_int8wo", _published("int8 weight-only", "per-channel int8 weights, bf16 activations; not measured "
                                  "here", "torchao docs, Int8WeightOnlyConfig")),
    ("fp8_storage", _published(
        "FP8 weight storage", "weights stored as float8_e4m3fn without scales, upcast layer by layer (norms and "
        "embeddings kept); one forward 1.9e-2 from bf16 (measured, " + _NUMERICS + ")",
        "diffusers docs, enable_layerwise_casting")),
))
_TEXT_QUANTIZATION = ByValue(_quantization("text encoder"))
_COMPILE = _by_value(
    ("none", _exact("eager")),
    ("regional", _close("regional compile", "fused kernels for the 30 blocks; one forward 1.5e-2 from bf16 eager "
                        "(measured)", _NUMERICS)),
    ("full", _close("full compile", "the same fusions over the whole transformer; not measured apart from regional "
                    "(1.5e-2)", _NUMERICS)))
_AUTOTUNE = ("autotuned matmul kernels: rounding-level differences beyond compile's own; not measured here",
             "PyTorch torch.compile docs")
_COMPILE_MODE = _by_value(
    ("default", _exact("compile mode default")),
    ("max-autotune-no-cudagraphs", _close("max-autotune (no CUDA graphs)", *_AUTOTUNE)),
    ("max-autotune", _close("max-autotune", *_AUTOTUNE)),
    ("reduce-overhead", _exact("reduce-overhead", "CUDA graphs replay the same kernels")))
_MOVES_ONLY = "moves weights between CPU and GPU only: the same kernels on the same values, the same frames"
# the tiny model on a GPU, fp32 and bf16: every offload mode and the sliced decode give the frames without them
_SAME_FRAMES = "tests/test_fidelity.py::test_exact_levers_give_bit_identical_frames_on_a_gpu"
_OFFLOAD = _by_value(("none", _exact("no offload")),
                     *((v, _exact(f"{v} offload", _MOVES_ONLY, _SAME_FRAMES))
                       for v in ("model", "sequential", "group_block", "group_leaf")))
_KERNEL = "exact attention in another kernel (another summation order)"
_ATTENTION = _by_value(
    ("native", _exact("SDPA attention", "the reference: PyTorch's own choice of kernel")),
    ("cudnn", _close("cuDNN attention", f"{_KERNEL}; one forward identical to native (measured)",
                     _NUMERICS)),
    ("flash", _close("flash attention (SDPA)", f"{_KERNEL}; one forward 3.9e-3 from native (measured)", _NUMERICS)),
    ("efficient", _close("memory-efficient attention", f"{_KERNEL}; not measured here", "FlashAttention, arXiv "
                         "2205.14135 (exact attention)")),
    ("math", _close("math attention", "the unfused formula in the compute dtype; not measured here",
                    "PyTorch SDPA docs")),
    ("flex", _close("FlexAttention", f"{_KERNEL}, no mask; not measured here", "PyTorch FlexAttention docs")),
    ("sage", _published("SageAttention", "Q·K in INT8 and P·V in FP16 with smoothing; its authors report no "
                        "end-to-end metric loss on video models; not measured here",
                        "SageAttention, arXiv 2410.02367")),
    ("xformers", _close("xformers attention", f"{_KERNEL}; not measured here", "xFormers docs (exact attention)")),
    ("flash_attn", _close("FlashAttention-2", f"{_KERNEL}; not measured here", "FlashAttention, arXiv 2205.14135")))
_SLICING = Cases((
    Case("0", lambda v, o: v == 0, _exact("no attention slicing")),
    Case("above 0", always, _close("attention in query chunks of {value}", "each chunk attends to every key: "
                                   "within 1e-5 of SDPA in fp32", "tests/test_catalogue.py::"
                                   "test_chunked_attention_matches_sdpa_and_restores")),
))
_SPARSE = _by_value(
    ("none", _exact("dense attention")),
    ("sta", _ours("sliding-tile sparse attention", "one 3D window for every head; STA searches per-head windows on "
                  "real weights, so no published window fits this layout (docs/benchmarks/SPARSE.md)", _STA)))
_SPARSE_WINDOW = Cases((Case("any window", always, _ours(
    "window {value}", "keys within +-t frames and +-h, +-w tiles of the query's tile: a window we chose; compare "
    "LPIPS with the dense run", "docs/benchmarks/SPARSE.md")),))
_SPARSE_STEPS = Cases((
    Case("-1", lambda v, o: v == -1, _published("STA's dense steps", "the first 12 of 50 steps dense, scaled to "
                                                "the step count, as STA's Wan mask search", _STA)),
    Case("any other count", always, _ours("{value} dense steps", "STA keeps 12 of 50 steps dense")),
))
_SPARSE_LAYERS = Cases((
    Case("1", lambda v, o: v == 1, _published("first block dense", "Radial Attention keeps 1 layer dense", _RADIAL)),
    Case("any other count", always, _ours("{value} dense blocks", "Radial Attention keeps 1 layer dense, Sparse "
                                          "VideoGen 3 % of layers")),
))
_SPARSE_KERNEL = _by_value(
    ("triton", _exact("FlexAttention's Triton kernel", "the sparse attention's default kernel")),
    ("flash", _close("FlexAttention's FlashAttention-4 kernel", "the same block mask in another kernel: bf16 "
                     "accumulation order only", "docs/benchmarks/README.md, \"FlashAttention-4 backend\"")))
_SPARSE_LAYOUT = _by_value(
    ("packed", _close("border tiles packed", "a narrow last tile column's tiles share one attention block: the "
                      "same mask over the same tiles in fewer blocks, accumulation order only (fp32: 1e-5, "
                      "tests/test_sparse.py)", "wan_ui/optim/sparse.py, TileLayout")),
    ("padded", _exact("one block per tile", "each tile its own attention block, border tiles zero-padded")))
_SCHEDULER = _by_value(
    ("unipc", _exact("UniPC", "the model's own scheduler")),
    ("dpmpp", _published("DPM++ sampler", "another multistep solver: a different video of the same quality class",
                         "Wan-Video/Wan2.1 generate.py --sample_solver dpm++")),
    ("euler", _ours("Euler sampler", "first-order flow-matching Euler: less accurate per step than multistep UniPC; "
                    "no published setting for Wan 1.3B at these steps")))


def _one_distilled(lora: str):
    """The DISTILLED entry `lora` (the `lora` option) loads alone at its published strength, else None."""
    adapters = split_lora_spec(lora)
    if len(adapters) != 1:
        return None
    src, scale = adapters[0]
    name = src.replace("\\", "/").rsplit("/", 1)[-1]  # by hub id or a local copy, as distilled.hints_for_lora
    return next((d for d in DISTILLED if d.lora.rsplit("/", 1)[-1] == name and scale == d.strength), None)


# the distillation papers behind the community LoRAs (wan_ui/core/distilled.py)
_DISTILLED_PAPERS = {"CausVid 8-step": "CausVid, arXiv 2412.07772", "Self-Forcing DMD 4-step": "Self-Forcing, "
                     "arXiv 2506.08009"}
# one entry per LoRA file, the first (the sparse variant loads the same LoRA as its dense preset)
_DISTINCT = [d for i, d in enumerate(DISTILLED) if all(e.lora != d.lora for e in DISTILLED[:i])]


def _card(d) -> str:
    """The paper behind a distilled LoRA and the model card of the repository it is loaded from."""
    repo = "/".join(d.lora.split("/")[:2])
    return "; ".join(filter(None, (_DISTILLED_PAPERS.get(d.name), f"model card huggingface.co/{repo}")))


_LORA = Cases((
    Case("empty", lambda v, o: not v.strip(), _exact("no LoRA")),
    *(Case(f"{d.name}'s LoRA alone at strength {d.strength:g}",
           lambda v, o, d=d: _one_distilled(v) is not None and _one_distilled(v).lora == d.lora,
           _published(f"{d.name.split(' ')[0]} distilled LoRA", f"a {d.steps}-step, CFG-{d.guidance:g} student of "
                      f"the model at shift {d.shift:g}: differs from the 50-step model by design ({d.source})",
                      _card(d)))
      for d in _DISTINCT),
    Case("any other adapter or strength", always, _ours("LoRA {value}", "an adapter changes the model; nobody "
                                                        "published its quality against the base model here")),
))
_LORA_FUSE = _by_value(
    (False, _exact("unfused LoRA")),
    (True, _close("fused LoRA", "W + scale·BA rounded once to the weight dtype (bf16: 2^-8)", "IEEE 754 bfloat16")))
_FLOW_SHIFT = Cases((
    Case("0 or 3", lambda v, o: v in (0.0, 3.0), _exact("flow shift 3", "the model's own")),
    *(Case(f"{d.shift:g} with {d.name}'s LoRA", lambda v, o, d=d: v == d.shift and _one_distilled(o.lora) is not None
           and _one_distilled(o.lora).lora == d.lora,
           _published("flow shift {value}", f"{d.name}'s setting", _card(d))) for d in _DISTINCT),
    Case("5", lambda v, o: v == 5.0, _published("flow shift 5", "a different noise schedule: a different video",
                                                "Wan-Video/Wan2.1 generate.py (T2V default --sample_shift 5.0)")),
    Case("8 to 12", lambda v, o: 8.0 <= v <= 12.0, _published(
        "flow shift {value}", "a different noise schedule: a different video", "Wan-Video/Wan2.1 README (T2V-1.3B: "
        "--sample_shift 8 to 12)")),
    Case("any other shift", always, _ours("flow shift {value}", "a different noise schedule, published by nobody "
                                          "for this model")),
))
_CACHE = _by_value(
    ("none", _exact("no step cache")),
    ("first_block", _ours("FirstBlockCache", "skips a step's blocks 2-30 when block 1's residual changed less than "
                          "the threshold; no published quality result for Wan 1.3B",
                          "diffusers FirstBlockCacheConfig")),
    ("mag", _published("MagCache", "skips steps by the authors' calibrated magnitude ratios for Wan2.1-T2V-1.3B, "
                       "retention 0.2; paper at K=2, threshold 0.12: LPIPS 0.121, PSNR 23.4 vs dense", _MAGCACHE)),
    ("taylorseer", _ours("TaylorSeer", "diffusers' defaults (refresh every 5 steps, first 3 dense), not the authors' "
                         "setting for Wan", "TaylorSeer, arXiv 2503.06923")),
    ("pab", _ours("Pyramid Attention Broadcast", "spatial attention reused for 2 steps in [100, 800]: diffusers' "
                  "example, no published Wan 1.3B setting", "PAB, arXiv 2408.12588")))
_CACHE_THRESHOLD = Cases((
    Case("with cache none, taylorseer or pab", lambda v, o: o.cache not in ("mag", "first_block"),
         _exact("cache threshold", _EXACT_UNUSED)),
    Case(f"0 or {_MAG_THRESHOLD:g} with mag", lambda v, o: o.cache == "mag" and v in (0.0, _MAG_THRESHOLD),
         _published(f"threshold {_MAG_THRESHOLD:g}", "MagCache's published threshold", _MAGCACHE)),
    Case("another value with mag", lambda v, o: o.cache == "mag", _ours("threshold {value}", "MagCache publishes "
                                                                        f"{_MAG_THRESHOLD:g}")),
    Case("0 or 0.05 with first_block", lambda v, o: v in (0.0, 0.05), _ours("threshold 0.05", "diffusers' default")),
    Case("another value with first_block", always, _ours("threshold {value}", "diffusers' default is 0.05")),
))
_CACHE_SKIPS = Cases((
    Case("with a cache other than mag", lambda v, o: o.cache != "mag", _exact("most skipped steps", _EXACT_UNUSED)),
    Case(f"0 or {_MAG_SKIPS}", lambda v, o: v in (0, _MAG_SKIPS), _published(
        f"K={_MAG_SKIPS}", "the paper's 'slow' setting", _MAGCACHE)),
    Case("4", lambda v, o: v == 4, _published("K=4", "the authors' T2V-1.3B command: 'without much visual quality "
                                              "degradation' (PSNR 18.9 vs 20.5 for K=2 in their comparison)",
                                              _MAGCACHE_K4)),
    Case("any other K", always, _ours("K={value}", f"MagCache publishes K={_MAG_SKIPS} and K=4")),
))
_CFG_TRUNCATION = Cases((
    Case("1", lambda v, o: v >= 1.0, _exact("CFG on every step")),
    Case("below 1", always, _ours(
        "CFG on the first {value} of the steps", "the unconditional pass stops after that fraction of the steps; "
        "musubi-tuner suggests trying 0.3-0.5 (cfg_skip_mode late) but calls the right ratio unknown and warns of "
        "quality loss: no published quality-preserving value", "kohya-ss/musubi-tuner/docs/wan.md")),
))
_CFG_BATCH = _by_value(
    (False, _exact("separate CFG branches")),
    (True, _close("batched CFG branches", "the same forwards as one batch of 2: within 1 level of 255 in fp32",
                  "tests/test_catalogue.py::test_cfg_batch_matches_separate_branches_with_half_the_calls")))
_VAE_TILING = _by_value(
    (False, _exact("untiled VAE decode")),
    (True, _close("tiled VAE decode", "tiles blended over 64 px overlaps: 5.7e-2 (512 px) to 7.6e-2 (256 px) from "
                  "the untiled bf16 decode (measured)", _VAE_BENCH)))
_VAE_TILE = _by_value(
    (256, _close("256 px tiles", "7.6e-2 from the untiled bf16 decode (measured)", _VAE_BENCH)),
    (384, _close("384 px tiles", "between the 256 and 512 px figures; not measured", _VAE_BENCH)),
    (512, _close("512 px tiles", "5.7e-2 from the untiled bf16 decode (measured)", _VAE_BENCH)))
_VAE_SLICING = _by_value(
    (False, _exact("VAE decode in one batch")),
    (True, _exact("sliced VAE decode", "one video per request: diffusers slices only batches of 2 or more",
                  _SAME_FRAMES)))
_CHANNELS_LAST = _by_value(
    (False, _exact("VAE weights contiguous")),
    (True, _close("channels-last VAE", "other conv kernels: 1.6e-2 from the bf16 decode (measured); within 1 level "
                  "of 255 in fp32 (tests/test_vae_options.py)", _VAE_BENCH)))
# TAEHV (wan_ui/core/tiny_vae.py): its author publishes the quality cost with the weights
_VAE_DECODER = _by_value(
    ("full", _exact("full VAE decode", "Wan's own VAE")),
    ("tiny", _published("tiny decoder (TAEHV)", "TAEHV's decoder for Wan 2.1 (taew2_1) in place of Wan's VAE: "
                        "'slightly lower quality' than the full VAE, by its author, who compares them on the MoViRec "
                        "benchmark (huggingface.co/datasets/madebyollin/movirec); random weights on the random-weight "
                        "models; not measured here", "madebyollin/taehv README (TAEHV: Tiny AutoEncoder for Hunyuan "
                        "Video)")))


@dataclass(frozen=True)
class OptimizationSet:
    # precision: compute dtype of transformer / text encoder; VAE separately (Wan advises fp32 VAE)
    precision: str = _opt("bf16", "precision", True, "transformer compute dtype", PRECISIONS,
                          fidelity=_PRECISION)
    text_encoder_precision: str = _opt("bf16", "precision", True, "UMT5 text encoder dtype", PRECISIONS,
                                       fidelity=_TEXT_PRECISION)
    vae_precision: str = _opt("fp32", "precision", True, "VAE dtype (fp32 as Wan advises; bf16 is 5x faster)",
                              ("fp32", "bf16"), fidelity=_VAE_PRECISION)
    # quantization (load-time, through diffusers' quantization configs)
    quantization: str = _opt("none", "quantization", True, "transformer weight quantization",
                             ("none", "bnb_nf4", "bnb_int8", "torchao_fp8", "torchao_int8wo", "fp8_storage"),
                             fidelity=_QUANTIZATION)
    text_encoder_quantization: str = _opt("none", "quantization", True, "text encoder quantization (bitsandbytes)",
                                          ("none", "bnb_nf4", "bnb_int8"), fidelity=_TEXT_QUANTIZATION)
    # operator fusion
    compile: str = _opt("none", "compile", True, "torch.compile: repeated blocks (regional) or whole transformer",
                        ("none", "regional", "full"), fidelity=_COMPILE)
    compile_mode: str = _opt("default", "compile", True, "torch.compile mode",
                             ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"),
                             fidelity=_COMPILE_MODE, part_of="compile")
    # offloading
    offload: str = _opt("none", "offload", True, "move weights to CPU between uses",
                        ("none", "model", "sequential", "group_block", "group_leaf"), fidelity=_OFFLOAD)
    # LoRA (run-time: load_lora_weights / unload)
    lora: str = _opt("", "lora", False, "adapters 'source[:scale]' separated by ';' (file, folder or hub id)",
                     fidelity=_LORA)
    lora_fuse: bool = _opt(False, "lora", False, "fuse adapters into the weights (faster steps)", (False, True),
                           fidelity=_LORA_FUSE, part_of="lora")
    # attention
    attention_backend: str = _opt("native", "attention", False, "diffusers attention backend", ATTENTION_BACKENDS,
                                  fidelity=_ATTENTION)
    attention_slicing: int = _opt(0, "attention", False, "query chunk for chunked attention (0 = off); saves memory only with the math kernel",
                                  bounds=(0, 1 << 20), fidelity=_SLICING)
    # training-free sparse self-attention (wan_ui/optim/sparse.py): a 3D sliding tile window on FlexAttention
    sparse_attention: str = _opt("none", "attention", False,
                                 "sparse self-attention: sta = sliding tile window (FlexAttention block mask)",
                                 ("none", "sta"), fidelity=_SPARSE)
    # half-widths in tiles of 1 x 8 x 16 patches. Default +-6 frames, +-1 tile in h and w: 89.5 % block-sparse at
    # the report size (`sparse.sparsity_report`; the attention's speed: docs/benchmarks/SPARSE.md, "Results"). Ours,
    # not published: STA (arXiv 2502.04507) picks per-head windows by a mask search on real weights; check LPIPS vs
    # dense.
    # each at most 999 tiles (sparse.MAX_HALF_WIDTH; wider than any video's grid means dense)
    sparse_window: str = _opt("6,1,1", "attention", False,
                              "window half-widths 't,h,w' in tiles, each 0-999 (tile = 1 frame x 8 x 16 patches)",
                              pattern=r"\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*", fidelity=_SPARSE_WINDOW,
                              part_of="sparse_attention")
    sparse_dense_steps: int = _opt(-1, "attention", False,
                                   "first N steps dense (-1 = STA's Wan setting, 12 of 50 steps, scaled)",
                                   bounds=(-1, 200), fidelity=_SPARSE_STEPS, part_of="sparse_attention")
    # Radial Attention keeps 1 layer dense, Sparse VideoGen 3 % of layers (1 of Wan 1.3B's 30)
    sparse_dense_layers: int = _opt(1, "attention", False, "first N transformer blocks keep dense attention",
                                    bounds=(0, 64), fidelity=_SPARSE_LAYERS, part_of="sparse_attention")
    # FlexAttention's FlashAttention-4 backend (wan_ui/optim/sparse.py, "Kernel"): Hopper/Blackwell, flash-attn-4
    sparse_kernel: str = _opt("triton", "attention", False,
                              "sparse attention kernel: triton (FlexAttention's default) or flash (its "
                              "FlashAttention-4 backend; Hopper or Blackwell GPU, package flash-attn-4)",
                              ("triton", "flash"), fidelity=_SPARSE_KERNEL, part_of="sparse_attention")
    # how tiles fill FlexAttention's blocks (wan_ui/optim/sparse.py, TileLayout): packed puts a narrow last tile
    # column in one block (832x480: 21 % fewer kept blocks, `sparse.kept_blocks`); sizes it cannot pack are padded
    sparse_layout: str = _opt("packed", "attention", False,
                              "tiles into attention blocks: packed (a narrow border column shares one block) or "
                              "padded (every tile its own block)",
                              ("packed", "padded"), fidelity=_SPARSE_LAYOUT, part_of="sparse_attention")
    # scheduler
    scheduler: str = _opt("unipc", "scheduler", False, "sampler", ("unipc", "dpmpp", "euler"),
                          fidelity=_SCHEDULER)
    flow_shift: float = _opt(0.0, "scheduler", False, "flow shift (0 = the model's own: 3.0)", bounds=(0.0, 20.0),
                             fidelity=_FLOW_SHIFT)
    # step caches (diffusers hooks)
    # FasterCache is not offered: its unconditional-batch reuse expects cond+uncond in one batch, while the
    # Wan pipeline calls the transformer once per branch (diffusers raises IndexError on Wan).
    cache: str = _opt("none", "cache", False, "step cache", ("none", "first_block", "mag", "taylorseer", "pab"),
                      fidelity=_CACHE)
    cache_threshold: float = _opt(0.0, "cache", False, "cache threshold (0 = the published default)",
                                  bounds=(0.0, 1.0), fidelity=_CACHE_THRESHOLD, part_of="cache")
    cache_max_skips: int = _opt(0, "cache", False,
                                "MagCache: most consecutive skipped steps K (0 = the published default 2; "
                                "the authors run 1.3B with 4 too)", bounds=(0, 8), fidelity=_CACHE_SKIPS,
                                part_of="cache")
    # classifier-free guidance
    cfg_truncation: float = _opt(1.0, "cfg", False,
                                 "fraction of steps that run the unconditional pass (1 = all; CFG-trunc.)",
                                 bounds=(0.0, 1.0), fidelity=_CFG_TRUNCATION)
    cfg_batch: bool = _opt(False, "cfg", False, "run the cond and uncond branches as one batch-2 forward",
                           (False, True), fidelity=_CFG_BATCH)
    # VAE decode memory
    vae_tiling: bool = _opt(False, "vae", False, "decode in spatial tiles (lower peak memory)", (False, True),
                            fidelity=_VAE_TILING)
    vae_slicing: bool = _opt(False, "vae", False, "decode batch items one at a time", (False, True),
                             fidelity=_VAE_SLICING)
    vae_tile: int = _opt(256, "vae", False, "tiled decode: tile size in pixels (64 px overlap); 256 = diffusers' "
                         "default and least memory, 512 = 1.7x faster decode at 480p", (256, 384, 512),
                         fidelity=_VAE_TILE, part_of="vae_tiling")
    vae_channels_last: bool = _opt(False, "vae", False, "channels-last (NDHWC) VAE conv weights: 10 % faster bf16 "
                                   "decode (docs/benchmarks/README.md)", (False, True), fidelity=_CHANNELS_LAST)
    # a tiny TAEHV-class decoder instead of the VAE's (wan_ui/optim/tiny_decoder.py): weights by hub id
    # (madebyollin/taehv/taew2_1.pth, or $WAN_UI_TINY_VAE), random ones on the random-weight models
    vae_decoder: str = _opt("full", "vae", False, "decoder of the final video: full = Wan's VAE, tiny = TAEHV's tiny "
                            "decoder (a few MB: a faster decode, lower quality)", ("full", "tiny"), fidelity=_VAE_DECODER)

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
    # channels-last conv weights (a kernel layout: a faster decode, differing from bf16's by as much as bf16 from
    # fp32). FP8 needs compute capability >= 8.9 (Ada, Hopper, Blackwell).
    "Fast": {"precision": "bf16", "quantization": "torchao_fp8", "compile": "regional", "attention_backend": "cudnn",
             "cache": "mag", "cfg_truncation": 0.5, "vae_precision": "bf16", "vae_channels_last": True},
    # The same without FP8, for every CUDA card (FP8 needs compute capability >= 8.9): a few % slower per forward at
    # 480p (docs/benchmarks/README.md, "Seconds per transformer forward against the floors").
    "Fast (quick start)": {"precision": "bf16", "compile": "regional", "attention_backend": "cudnn", "cache": "mag",
                           "cfg_truncation": 0.5, "vae_precision": "bf16", "vae_channels_last": True},
    # The fastest training-free preset on `report` (measured: docs/benchmarks/README.md, "The presets at full step
    # counts"): the quick-start kernels (bf16, so it runs on every CUDA card; quantization=torchao_fp8 takes 6-11 % off
    # its clip on cards with compute capability >= 8.9: "FP8 compiles in seconds" there) + sliding-tile sparse attention, +-3 frames x +-1 tile (94 % block-sparse), dense for the
    # first 2 steps only + MagCache with K=4, the MagCache authors' own command for T2V-1.3B (45 of 98 forwards
    # computed instead of 51 with K=2). The window and the dense-step count are ours, not a
    # published quality-preserving setting (docs/benchmarks/SPARSE.md): check LPIPS vs the dense baseline with real
    # weights (the Compare tab shows it); sparse_dense_steps=4 or more is the more careful choice.
    "Fast (sparse)": {"precision": "bf16", "compile": "regional", "attention_backend": "cudnn", "cache": "mag",
                      "cache_max_skips": 4, "cfg_truncation": 0.5, "vae_precision": "bf16", "vae_channels_last": True,
                      "sparse_attention": "sta", "sparse_window": "3,1,1", "sparse_dense_steps": 2},
    # Ours, small GPUs: the transformer streamed block by block on a CUDA stream (the next block prefetched while
    # one computes) around its regionally compiled blocks, the text encoder leaf by leaf, the VAE resident with
    # 512 px decode tiles, and the step savings of "Fast" (MagCache's published setting, CFG on the first half).
    # Block-level offload rather than leaf-level: compile cannot trace leaf-level onload hooks, so only block level
    # keeps the blocks compiled, and it is the faster of the two. Time and memory inside what a 6 GB card leaves to
    # torch: docs/benchmarks/README.md, "Memory". The UI sizes it to the GPU's free memory (wan_ui/core/lowvram.py).
    "Low VRAM": {"precision": "bf16", "offload": "group_block", "compile": "regional", "vae_tiling": True,
                 "vae_tile": 512, "vae_precision": "bf16", "vae_channels_last": True, "cache": "mag",
                 "cfg_truncation": 0.5},
    # "Low VRAM" + the schedule and sparse attention of "Fast (sparse)" (2 dense steps, MagCache K=4), for `report`
    # within 8 GB at close to the speed of the fastest full-memory preset (measured inside a 6.5 GB allocator cap,
    # what an 8 GB card leaves to torch: docs/benchmarks/README.md, "Memory"). Lossy in the same way as
    # "Fast (sparse)".
    "Low VRAM (sparse)": {"precision": "bf16", "offload": "group_block", "compile": "regional", "vae_tiling": True,
                          "vae_tile": 512, "vae_precision": "bf16", "vae_channels_last": True, "cache": "mag",
                          "cache_max_skips": 4, "cfg_truncation": 0.5, "sparse_attention": "sta",
                          "sparse_window": "3,1,1", "sparse_dense_steps": 2},
    # The leanest measured set, for 6 GB cards at 480p: "Low VRAM" with diffusers' 256 px decode tiles, the lowest
    # decode peak (measured inside a 4.5 GB allocator cap: docs/benchmarks/README.md, "Memory").
    "Low VRAM (6 GB)": {"precision": "bf16", "offload": "group_block", "compile": "regional", "vae_tiling": True,
                        "vae_tile": 256, "vae_precision": "bf16", "vae_channels_last": True, "cache": "mag",
                        "cfg_truncation": 0.5},
    # Everything that runs on a CPU: bf16, a cache, no CUDA-only kernels.
    "CPU quick": {"precision": "bf16", "cache": "first_block"},
}
# Few-step distilled LoRAs (CausVid 8-step, Self-Forcing DMD 4-step): the LoRA by hub id, its shift and kernels here;
# the steps and guidance they need are request hints (wan_ui/core/distilled.py, applied by the CLI's --preset).
PRESETS.update(DISTILLED_PRESETS)


def preset_names() -> list[str]:
    """The built-in presets, then the user's own (core/user_presets.py; none when its file is broken)."""
    return list(PRESETS) + [n for n in user_preset_names() if n not in PRESETS]


def preset(name: str) -> OptimizationSet:
    """A built-in preset, else a user preset by that name (built-in names win)."""
    values = PRESETS[name] if name in PRESETS else user_preset_options(name)
    if values is None:
        raise ValidationError(f"unknown preset {name!r}; valid presets: {preset_names()}", field="preset")
    return OptimizationSet.from_dict(values)


# ---- fidelity of a set: every lever that is not exact -------------------------------------------
@dataclass(frozen=True)
class Lever:
    """One option of a set whose value is not exact, with its class."""
    name: str  # the option
    value: Any
    fidelity: Fidelity
    part_of: str | None  # the lever it refines (MagCache's K refines `cache`)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, **self.fidelity.to_dict(), "part_of": self.part_of}


def fidelity_of_value(name: str, value: Any, opts: OptimizationSet | None = None) -> Fidelity:
    """The class of `name=value` within `opts` (the defaults otherwise): a threshold's depends on the cache."""
    opts = opts or OptimizationSet()
    return OptimizationSet.specs()[name].fidelity.of(value, opts)


def fidelity_of(opts: OptimizationSet) -> list[Lever]:
    """Every option of `opts` that is not exact, in field order; a refining option (a cache's threshold) only while
    the lever it refines is not exact itself."""
    specs = OptimizationSet.specs()
    levers = []
    for name, spec in specs.items():
        f = fidelity_of_value(name, getattr(opts, name), opts)
        parent = spec.fidelity_part_of
        if f.cls == "exact" or (parent and fidelity_of_value(parent, getattr(opts, parent), opts).cls == "exact"):
            continue
        levers.append(Lever(name, getattr(opts, name), f, parent))
    return levers


def worst_fidelity(opts: OptimizationSet) -> str:
    """The class of the set: its lever furthest from the reference ("exact" when none)."""
    return worst(lever.fidelity.cls for lever in fidelity_of(opts))


def fidelity_summary(opts: OptimizationSet) -> str:
    """'lossy: MagCache, threshold 0.12, K=2 (published: arXiv ...), CFG on the first 0.5 of the steps (ours); close:
    bf16 transformer, ...': each lossy lever with the lossy options refining it, then the close ones (a close
    refinement of a lossy lever, e.g. the sparse attention's kernel, is listed as close, not under the lever's tag)."""
    groups: dict[str, list[Lever]] = {}
    for lever in fidelity_of(opts):
        groups.setdefault(lever.part_of or lever.name, []).append(lever)
    lossy, close, close_refinements, cited = [], [], [], set()
    for levers in groups.values():
        if levers[0].fidelity.cls in LOSSY:  # a lossy lever: its close refinements go with the close levers
            close_refinements += [lv.fidelity.what for lv in levers if lv.fidelity.cls not in LOSSY]
            levers = [lv for lv in levers if lv.fidelity.cls in LOSSY]
        cls = worst(lever.fidelity.cls for lever in levers)
        text = ", ".join(lever.fidelity.what for lever in levers)
        if cls == "lossy-published":  # each source cited once per line
            sources = [s for s in dict.fromkeys(lv.fidelity.source for lv in levers if lv.fidelity.cls == cls)
                       if s not in cited]
            cited.update(sources)
            lossy.append(f"{text} (published: {'; '.join(sources)})" if sources else f"{text} (published, as cited)")
        elif cls in LOSSY:
            lossy.append(f"{text} ({TAGS[cls]})")
        else:
            close.append(text)
    close += close_refinements
    parts = [f"lossy: {', '.join(lossy)}" if lossy else "", f"close: {', '.join(close)}" if close else ""]
    return "; ".join(filter(None, parts)) or "exact: the reference computation"


def preset_description(name: str) -> str:
    """'Low VRAM: lossy: MagCache ... (published: ...), CFG on the first 0.5 of the steps (ours); close: ...',
    computed from the preset's values."""
    return f"{name}: {fidelity_summary(preset(name))}"


def fidelity_rows(name: str) -> dict[str, dict[str, str]]:
    """{value or case: class, what, note, source} for one option: the options table's `fidelity`."""
    return {key: f.to_dict() for key, f in OptimizationSet.specs()[name].fidelity.rows()}


def fidelity_info(name: str) -> str:
    """One line for a widget's info and the options table: the values grouped by class, e.g. 'exact: none ·
    lossy (published: QLoRA, arXiv 2305.14314): bnb_nf4 · ...'."""
    by_label: dict[str, list[str]] = {}
    for key, f in OptimizationSet.specs()[name].fidelity.rows():
        by_label.setdefault(f.label(), []).append(key)
    return " · ".join(f"{label}: {', '.join(keys)}" for label, keys in by_label.items())


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
    if name == "sparse_kernel" and value == "flash":
        if not hw.cuda:
            return f"{name}={value} needs a CUDA GPU (Hopper or Blackwell); this machine has none"
        if not hw.has("flash_attn.cute"):
            # the [cu13] extra brings the CUTLASS DSL's CUDA 13 library, which torch's cu130 builds need
            return f"{name}={value} needs the Python package 'flash-attn-4' (module flash_attn.cute), which is not " \
                   "installed: pip install 'flash-attn-4[cu13]==4.0.0b36' (README, \"Optional packages\")"
        if hw.capability < (9, 0):
            return f"{name}={value} needs a Hopper or Blackwell GPU (compute capability >= 9.0); " \
                   f"{hw.device_name} has {hw.capability[0]}.{hw.capability[1]}"
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


# torch.compile modes that capture CUDA graphs (torch.compile's docstring: "reduce-overhead" uses CUDA graphs,
# "max-autotune" too; "max-autotune-no-cudagraphs" is the same search without them)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")

# (condition, message): each says what to do instead. Kept as data so the README table is generated from it.
OPTION_CONFLICTS: list[tuple[str, Any, str]] = [
    ("sequential offload + torch.compile",
     lambda o: o.offload == "sequential" and o.compile != "none",
     "use offload=group_block (streams) with compile=regional, or compile=none"),
    # Compile fails at the first forward: "Skip inlining `torch.compiler.disable()`d function ModuleGroup.onload_"
    # (the hooks sit on every linear inside the compiled block; docs/RELIABILITY.md); block-level hooks wrap the
    # compiled block from outside and work.
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
    # Measured on an H200 (docs/benchmarks/README.md, "CUDA graphs"): the 30 blocks share one compiled graph, and
    # with CUDA graphs each replay overwrites the output the next block still reads ("accessing tensor output of
    # CUDAGraphs that has been overwritten by a subsequent run"), after the whole warm-up's compile.
    ("regional compile + a CUDA-graph compile mode",
     lambda o: o.compile == "regional" and o.compile_mode in CUDA_GRAPH_MODES,
     "use compile_mode=default or max-autotune-no-cudagraphs with compile=regional"),
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
                     "(measured: same peak, same speed); it lowers memory with attention_backend=math")
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
            "fidelity": fidelity_rows(name), "fidelity_part_of": spec.fidelity_part_of,
        })
    return rows
