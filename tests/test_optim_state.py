"""The run-time families' typed undo records (optim/state.py): each family applied through the registry and removed
again leaves the pipeline as it was (scheduler, processors, attention backends, hooks, forwards, VAE settings,
weights) and no undo record; a failed apply leaves no record and nothing behind; the parallel layer's record."""

import pytest
import torch
from diffusers.hooks import HookRegistry

from lora_files import write_diffusers_lora
from wan_ui.core.options import OptimizationSet
from wan_ui.optim.attention import AttentionUndo
from wan_ui.optim.cache import CacheUndo
from wan_ui.optim.cfg_batch import CfgBatchUndo, prepare_cfg_batch
from wan_ui.optim.lora import LoraUndo
from wan_ui.optim.registry import RUNTIME, apply_runtime
from wan_ui.optim.scheduler import SchedulerUndo
from wan_ui.optim.sparse import SparseUndo, prepare_sparse
from wan_ui.optim.state import state_of
from wan_ui.optim.vae import VaeUndo
from wan_ui.parallel.dist import DistInfo
from wan_ui.parallel.hooks import ParallelUndo, remove_parallel
from wan_ui.parallel.plan import ParallelConfig
from wan_ui.parallel.runtime import ParallelRuntime

# (options that turn the family on, the undo record it must leave while on)
FAMILIES = {
    "lora": ({"lora": "style.safetensors"}, LoraUndo),
    "lora_fused": ({"lora": "style.safetensors:0.7", "lora_fuse": True}, LoraUndo),
    "scheduler": ({"scheduler": "dpmpp"}, SchedulerUndo),
    "scheduler_shift": ({"scheduler": "euler", "flow_shift": 5.0}, SchedulerUndo),
    "attention_backend": ({"attention_backend": "math"}, AttentionUndo),
    "attention_slicing": ({"attention_slicing": 32}, AttentionUndo),
    "sparse": ({"sparse_attention": "sta", "sparse_dense_layers": 1}, SparseUndo),
    "cache_mag": ({"cache": "mag"}, CacheUndo),
    "cache_first_block": ({"cache": "first_block"}, CacheUndo),
    "cache_pab": ({"cache": "pab"}, CacheUndo),
    "cfg_batch": ({"cfg_batch": True}, CfgBatchUndo),
    "vae": ({"vae_tiling": True, "vae_tile": 512, "vae_slicing": True, "vae_channels_last": True}, VaeUndo),
}


def _snapshot(pipe) -> dict:
    """What the run-time families may change, in comparable form (objects by identity)."""
    t, vae = pipe.transformer, pipe.vae
    procs = t.attn_processors
    return {
        "scheduler": id(pipe.scheduler),
        "processors": {k: id(p) for k, p in procs.items()},
        "backends": {k: getattr(p, "_attention_backend", None) for k, p in procs.items()},
        "hooks": {n: tuple(m._diffusers_hook._hook_order) for n, m in t.named_modules()
                  if getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook._hook_order},
        "forwards": {n: getattr(m.forward, "__func__", m.forward) for n, m in t.named_modules()},
        "cache_config": t._cache_config,
        "vae": (vae.use_tiling, vae.use_slicing, vae.tile_sample_min_height, vae.tile_sample_min_width,
                vae.tile_sample_stride_height, vae.tile_sample_stride_width),
        "vae_strides": [m.weight.stride() for m in vae.modules() if isinstance(m, torch.nn.Conv3d)],
        "adapters": sorted(getattr(t, "peft_config", None) or {}),
        "weights": {k: v.clone() for k, v in t.state_dict().items()},
    }


def _assert_same(after: dict, before: dict) -> None:
    weights_a, weights_b = after.pop("weights"), before.pop("weights")
    assert after == before
    assert set(weights_a) == set(weights_b)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_b)


@pytest.fixture
def tiny_pipe(manager, smoke_request, lora_root):
    write_diffusers_lora(lora_root / "style.safetensors")
    pipe, _, _ = manager.get("tiny", OptimizationSet().with_(precision="fp32"), smoke_request)
    return pipe


@pytest.mark.parametrize("family", list(FAMILIES))
def test_apply_then_remove_restores_the_pipeline_and_leaves_no_record(tiny_pipe, smoke_request, family):
    values, record = FAMILIES[family]
    base = OptimizationSet().with_(precision="fp32")
    st = state_of(tiny_pipe)
    assert [a.family for a in st.runtime] == list(RUNTIME) and all(a.undo is None for a in st.runtime)
    before = _snapshot(tiny_pipe)

    apply_runtime(tiny_pipe, base.with_(**values), smoke_request)
    undo = st.undo(record)
    assert isinstance(undo, record)
    assert [type(a.undo) for a in st.runtime if a.undo is not None] == [record]  # no other family holds one
    on = _snapshot(tiny_pipe)
    assert any(on[k] != before[k] for k in on if k != "weights") or \
        any(not torch.equal(on["weights"][k], before["weights"][k]) for k in before["weights"]), \
        f"{values} changed nothing"

    apply_runtime(tiny_pipe, base, smoke_request)
    assert st.undo(record) is None
    assert all(a.undo is None for a in st.runtime)
    _assert_same(_snapshot(tiny_pipe), before)


def test_live_parts_are_found_by_record_type(tiny_pipe, smoke_request):
    """generate() reaches the CFG-batch hook and the sparse context through their records."""
    base = OptimizationSet().with_(precision="fp32")
    assert prepare_sparse(tiny_pipe, 64, 64, 9) is None
    apply_runtime(tiny_pipe, base.with_(sparse_attention="sta", cfg_batch=True), smoke_request)
    st = state_of(tiny_pipe)
    ctx = prepare_sparse(tiny_pipe, 64, 64, 9)
    assert ctx is st.undo(SparseUndo).context and ctx.layout is not None
    assert all(p.ctx is ctx for p in (b.attn1.processor for b in tiny_pipe.transformer.blocks[1:]))
    negative = torch.zeros(1, 512, 8)
    prepare_cfg_batch(tiny_pipe, negative)
    hook = st.undo(CfgBatchUndo).hook
    assert hook.negative is negative
    assert HookRegistry.check_if_exists_or_initialize(tiny_pipe.transformer).get_hook("wan_ui_cfg_batch") is hook


def test_a_failed_apply_leaves_no_record_and_nothing_behind(tiny_pipe, smoke_request, lora_root):
    (lora_root / "broken.safetensors").write_bytes(b"garbage")
    base = OptimizationSet().with_(precision="fp32")
    before = _snapshot(tiny_pipe)
    with pytest.raises(Exception, match="could not load LoRA"):
        apply_runtime(tiny_pipe, base.with_(lora="style.safetensors;broken.safetensors"), smoke_request)
    st = state_of(tiny_pipe)
    assert st.runtime == [] and st.undo(LoraUndo) is None  # LoRA is first: every family after it was removed
    assert apply_runtime(tiny_pipe, base, smoke_request) == [f.name for f in RUNTIME]
    _assert_same(_snapshot(tiny_pipe), before)


def test_parallel_layer_keeps_its_record_in_the_same_state(tiny_pipe, smoke_request):
    runtime = ParallelRuntime(ParallelConfig("none"), DistInfo(0, 1, 0, "cpu", "cpu:gloo"))
    opts = OptimizationSet().with_(precision="fp32")
    st = state_of(tiny_pipe)
    assert st.undo(ParallelUndo) is None
    info = runtime.sync(tiny_pipe, opts, smoke_request)
    assert st.undo(ParallelUndo) == ParallelUndo(runtime.plan(tiny_pipe.transformer, smoke_request), "native")
    assert info["mode"] == "none"
    remove_parallel(tiny_pipe)
    assert st.undo(ParallelUndo) is None and st.parallel is None
