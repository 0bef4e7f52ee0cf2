import json

import pytest

from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError, ValidationError
from wan_ui.core.hardware import Hardware
from wan_ui.core.options import (OPTION_CONFLICTS, PRESETS, OptimizationSet, check_available, check_compatible,
                            options_table, parse_set_args, preset)

CPU = Hardware(False, "cpu", None, None, frozenset())
ADA = Hardware(True, "NVIDIA L4", (8, 9), 24000.0, frozenset({"torchao", "bitsandbytes", "triton"}))
AMPERE = Hardware(True, "NVIDIA A100", (8, 0), 80000.0, frozenset({"torchao", "bitsandbytes", "triton"}))


def test_set_is_frozen_hashable_and_round_trips():
    a = OptimizationSet().with_(cache="mag", precision="fp16")
    assert hash(a) == hash(OptimizationSet.from_dict(json.loads(a.to_json())))
    assert a == OptimizationSet.from_dict(a.to_dict())
    with pytest.raises(Exception):
        a.precision = "fp32"


def test_every_field_declares_family_and_kind():
    specs = OptimizationSet.specs()
    load = {k for k, s in specs.items() if s.load_time}
    assert {"precision", "quantization", "compile", "offload"} <= load
    assert {"scheduler", "cache", "attention_backend", "lora", "cfg_truncation", "vae_tiling"}.isdisjoint(load)
    a, b = OptimizationSet(), OptimizationSet().with_(cache="mag", scheduler="dpmpp")
    assert a.load_key() == b.load_key() and a.runtime_dict() != b.runtime_dict()
    assert a.load_key() != a.with_(precision="fp32").load_key()


def test_parse_set_args_coerces_and_rejects():
    o = parse_set_args(["vae_tiling=true", "cache_threshold=0.1", "attention_slicing=64"])
    assert o.vae_tiling is True and o.cache_threshold == 0.1 and o.attention_slicing == 64
    with pytest.raises(ValidationError, match="unknown option.*valid options: precision"):
        parse_set_args(["precison=bf16"])
    with pytest.raises(ValidationError, match=r"must be one of \['fp32', 'bf16', 'fp16'\]"):
        parse_set_args(["precision=fp8"])
    with pytest.raises(ValidationError, match=r"cfg_truncation must be in \[0.0, 1.0\]"):
        parse_set_args(["cfg_truncation=1.5"])
    with pytest.raises(ValidationError, match="key=value"):
        parse_set_args(["cache"])
    with pytest.raises(ValidationError, match="vae_tiling must be bool"):
        parse_set_args(["vae_tiling=maybe"])


def test_presets_are_valid_data():
    for name in PRESETS:
        assert isinstance(preset(name), OptimizationSet)
        check_compatible(preset(name))
    assert preset("Baseline (report)").precision == "fp32"
    assert preset("Report best").quantization == "bnb_nf4" and preset("Report best").scheduler == "dpmpp"
    with pytest.raises(ValidationError, match="unknown preset"):
        preset("Fastest")


def test_fp8_needs_cc_89_and_says_so():
    fp8 = OptimizationSet().with_(quantization="torchao_fp8")
    with pytest.raises(UnavailableError, match="needs a CUDA GPU"):
        check_available(fp8, CPU)
    with pytest.raises(UnavailableError, match=r"compute capability >= 8.9.*A100 has 8.0"):
        check_available(fp8, AMPERE)
    check_available(fp8, ADA)


def test_compile_on_a_gpu_needs_triton_and_a_card_triton_supports():
    compiled = OptimizationSet(compile="regional")
    check_available(compiled, ADA)
    check_available(compiled, CPU)  # inductor's CPU backend needs no Triton
    with pytest.raises(UnavailableError, match="'triton', which is not installed"):
        check_available(compiled, Hardware(True, "NVIDIA L4", (8, 9), 24000.0, frozenset()))
    with pytest.raises(UnavailableError, match=r"compute capability >= 7.0 for Triton; GTX 1080 has 6.1"):
        check_available(compiled, Hardware(True, "GTX 1080", (6, 1), 8000.0, frozenset({"triton"})))
    check_available(OptimizationSet(), Hardware(True, "GTX 1080", (6, 1), 8000.0, frozenset()))


def test_cuda_only_values_are_unavailable_on_cpu_with_reason():
    rows = {r["name"]: r for r in options_table(CPU)}
    assert "needs a CUDA GPU" in rows["offload"]["unavailable_values"]["group_leaf"]
    assert "needs a CUDA GPU" in rows["quantization"]["unavailable_values"]["bnb_nf4"]
    gpu_no_bnb = Hardware(True, "NVIDIA H100", (9, 0), 80000.0, frozenset())
    gpu_rows = {r["name"]: r for r in options_table(gpu_no_bnb)}
    assert "'bitsandbytes', which is not installed" in gpu_rows["quantization"]["unavailable_values"]["bnb_nf4"]
    assert "none" not in rows["offload"]["unavailable_values"]
    assert set(rows) == set(OptimizationSet.specs())
    families = {r["family"] for r in rows.values()}
    assert families == {"precision", "quantization", "compile", "offload", "lora", "attention", "scheduler",
                        "cache", "cfg", "vae"}


@pytest.mark.parametrize("values,fragment", [
    ({"offload": "sequential", "compile": "regional"}, "sequential offload + torch.compile"),
    ({"offload": "group_leaf", "compile": "full"}, "use compile=regional"),
    ({"offload": "group_leaf", "compile": "regional"}, "use offload=group_block with compile=regional"),
    ({"quantization": "bnb_nf4", "compile": "regional"}, "bitsandbytes quantization + torch.compile"),
    ({"quantization": "bnb_int8", "lora_fuse": True}, "fused LoRA"),
    ({"attention_slicing": 1024, "attention_backend": "cudnn"}, "attention_backend=native (or math)"),
    ({"quantization": "torchao_fp8", "offload": "group_block"}, "fp8_storage with group offload"),
])
def test_incompatible_combinations_say_what_to_do(values, fragment):
    with pytest.raises(IncompatibleOptionsError, match="incompatible options") as e:
        check_compatible(OptimizationSet.from_dict(values))
    assert fragment in str(e.value)


def test_every_documented_conflict_is_reachable():
    # each row of the table must trigger for some set (no dead rules)
    samples = [OptimizationSet.from_dict(v) for v in (
        {"offload": "sequential", "compile": "regional"}, {"offload": "group_leaf", "compile": "full"},
        {"offload": "group_leaf", "compile": "regional"},
        {"quantization": "bnb_nf4", "compile": "regional"}, {"quantization": "bnb_int8", "lora_fuse": True},
        {"quantization": "fp8_storage", "compile": "full"}, {"attention_slicing": 8, "attention_backend": "flex"},
        {"quantization": "torchao_int8wo", "offload": "group_leaf"}, {"cfg_batch": True, "cache": "mag"},
        {"compile": "regional", "compile_mode": "reduce-overhead"})]
    for what, bad, _ in OPTION_CONFLICTS:
        assert any(bad(s) for s in samples), what


def test_regional_compile_refuses_cuda_graph_modes_before_any_build():
    # on an H200 this combination compiled for the whole warm-up, then failed with "accessing tensor output of
    # CUDAGraphs that has been overwritten" (the 30 blocks replay one graph); it is refused up front, naming a fix
    for mode in ("reduce-overhead", "max-autotune"):
        with pytest.raises(IncompatibleOptionsError, match="CUDA-graph compile mode") as e:
            check_compatible(OptimizationSet.from_dict({"compile": "regional", "compile_mode": mode}))
        assert "max-autotune-no-cudagraphs" in str(e.value)
        assert e.value.field in ("compile", "compile_mode")
    for ok in ({"compile": "regional", "compile_mode": "max-autotune-no-cudagraphs"},
               {"compile": "full", "compile_mode": "reduce-overhead"}, {"compile_mode": "reduce-overhead"}):
        check_compatible(OptimizationSet.from_dict(ok))
