"""Issue 3 on CPU: every CPU-capable technique runs; run-time options toggle off to bit-identical output."""

import numpy as np
import pytest
import torch

from lora_files import write_diffusers_lora, write_kijai_lora
from wan_ui.core.errors import ValidationError
from wan_ui.core.generate import generate
from wan_ui.optim.attention import ChunkedWanAttnProcessor
from wan_ui.optim.lora import parse_lora_spec
from wan_ui.core.options import OptimizationSet

CPU_SETS = [
    {"precision": "fp32", "text_encoder_precision": "fp32"}, {"precision": "fp16"}, {"vae_precision": "bf16"},
    {"quantization": "fp8_storage"}, {"scheduler": "dpmpp"}, {"scheduler": "euler", "flow_shift": 5.0},
    {"attention_backend": "math"}, {"attention_backend": "flex"}, {"attention_slicing": 64},
    {"cache": "first_block"}, {"cache": "mag"}, {"cache": "taylorseer"}, {"cache": "pab"},
    {"cfg_truncation": 0.5}, {"vae_tiling": True, "vae_slicing": True},
]


def _ids(values: dict) -> str:
    return ",".join(f"{k}={x}" for k, x in values.items())


def _frames(manager, req, opts):
    return generate(manager, "tiny", req, opts, out_dir=None)


@pytest.mark.parametrize("values", CPU_SETS, ids=_ids)
def test_technique_runs(manager, smoke_request, values):
    r = _frames(manager, smoke_request, OptimizationSet.from_dict(values))
    assert r.frames.shape == (9, 64, 64, 3)
    assert np.isfinite(r.frames).all() and r.frames.std() > 0


# one per run-time option family: toggled on, then off again
TOGGLED = [{"cache": "mag"}, {"cache": "first_block"}, {"cache": "taylorseer"}, {"scheduler": "dpmpp"},
           {"attention_backend": "math"}, {"attention_slicing": 32}, {"cfg_truncation": 0.5},
           {"vae_tiling": True}, {"lora": "style.safetensors"},
           {"lora": "style.safetensors:0.7", "lora_fuse": True}]


@pytest.mark.parametrize("values", TOGGLED, ids=_ids)
def test_runtime_toggle_on_then_off_is_bit_identical(manager, smoke_request, lora_root, values):
    write_diffusers_lora(lora_root / "style.safetensors")
    req = smoke_request.__class__(**{**smoke_request.to_dict(), "num_inference_steps": 6, "notes": ()})
    base = OptimizationSet()
    never = _frames(manager, req, base).frames
    on = _frames(manager, req, base.with_(**values)).frames
    off = _frames(manager, req, base).frames
    assert np.array_equal(off, never), f"{values} left a trace"
    if "vae_tiling" not in values and "attention_slicing" not in values:  # these are exact at 64 px
        assert not np.array_equal(on, never), f"{values} changed nothing"
    assert manager.builds == 1


def test_caches_skip_forwards_and_report_it(manager, smoke_request):
    req = smoke_request.__class__(**{**smoke_request.to_dict(), "num_inference_steps": 10, "notes": ()})
    dense = _frames(manager, req, OptimizationSet()).metrics
    assert dense.forwards_planned == dense.forwards_computed == 20
    mag = _frames(manager, req, OptimizationSet().with_(cache="mag")).metrics
    assert mag.forwards_computed < mag.forwards_planned == 20
    cfg = _frames(manager, req, OptimizationSet().with_(cfg_truncation=0.5)).metrics
    assert cfg.forwards_planned == cfg.forwards_computed == 15  # 10 cond + first 5 uncond


def test_chunked_attention_matches_sdpa_and_restores(manager, smoke_request):
    pipe, _, _ = manager.get("tiny", OptimizationSet().with_(precision="fp32"), smoke_request)
    attn = pipe.transformer.blocks[0].attn1
    x = torch.randn(1, 40, attn.to_q.in_features)
    ref = attn(x)
    proc = attn.processor
    attn.set_processor(ChunkedWanAttnProcessor(7))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)
    attn.set_processor(proc)
    manager.get("tiny", OptimizationSet().with_(precision="fp32", attention_slicing=16), smoke_request)
    assert all(isinstance(p, ChunkedWanAttnProcessor) for k, p in pipe.transformer.attn_processors.items())
    manager.get("tiny", OptimizationSet().with_(precision="fp32"), smoke_request)
    assert not any(isinstance(p, ChunkedWanAttnProcessor) for p in pipe.transformer.attn_processors.values())


def test_fp8_storage_really_stores_fp8(manager, smoke_request):
    pipe, _, _ = manager.get("tiny", OptimizationSet().with_(quantization="fp8_storage"), smoke_request)
    dtypes = {p.dtype for n, p in pipe.transformer.named_parameters() if "blocks" in n and n.endswith("weight")}
    assert torch.float8_e4m3fn in dtypes


def test_lora_fuse_then_remove_restores_weights_exactly(manager, smoke_request, lora_root):
    write_diffusers_lora(lora_root / "a.safetensors")
    write_kijai_lora(lora_root / "kijai" / "causvid_like.safetensors")
    pipe, _, _ = manager.get("tiny", OptimizationSet(), smoke_request)
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    opts = OptimizationSet().with_(lora="a.safetensors:0.5;kijai/causvid_like.safetensors", lora_fuse=True)
    manager.get("tiny", opts, smoke_request)
    assert pipe.get_active_adapters() == ["wan_ui_0", "wan_ui_1"]
    manager.get("tiny", OptimizationSet(), smoke_request)
    after = pipe.transformer.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lora_paths_are_confined(lora_root, tmp_path):
    outside = write_diffusers_lora(tmp_path / "outside.safetensors")
    (lora_root / "link.safetensors").symlink_to(outside)
    (lora_root / "notes.txt").write_text("x")
    for spec, fragment in [("../outside.safetensors", "may not contain '..'"),
                           (str(outside), "outside the LoRA folder"),
                           ("link.safetensors", "outside the LoRA folder"),
                           ("notes.txt", "must be .safetensors"),
                           ("./missing.safetensors", "not found"),
                           ("owner/repo/weights.bin", "must be .safetensors"),
                           ("justaname", "neither a file/folder")]:
        with pytest.raises(ValidationError, match=fragment):
            parse_lora_spec(spec, lora_root)
    hub = parse_lora_spec("Kijai/WanVideo_comfy/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors:0.8",
                          lora_root)[0]
    assert hub.is_hub and hub.location == "Kijai/WanVideo_comfy" and hub.scale == 0.8
    assert hub.weight_name == "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"


def test_bad_lora_leaves_pipeline_usable(manager, smoke_request, lora_root):
    (lora_root / "broken.safetensors").write_bytes(b"garbage")
    good = _frames(manager, smoke_request, OptimizationSet()).frames
    with pytest.raises(Exception):
        _frames(manager, smoke_request, OptimizationSet().with_(lora="broken.safetensors"))
    assert np.array_equal(_frames(manager, smoke_request, OptimizationSet()).frames, good)


@pytest.mark.slow
def test_regional_compile_counts_as_warmup(manager, smoke_request):
    opts = OptimizationSet().with_(compile="regional")
    first = _frames(manager, smoke_request, opts).metrics
    second = _frames(manager, smoke_request, opts).metrics
    assert first.warmup_time_s > 0.2 and second.warmup_time_s == 0.0
    assert second.clip_latency_s < first.clip_latency_s


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["model", "sequential", "group_block", "group_leaf"])
def test_offload_really_moves_weights(mode, smoke_request, tiny_folder):
    from wan_ui.core.manager import ModelManager

    m = ModelManager(device="cuda", log=lambda _: None)
    pipe, _, _ = m.get("tiny", OptimizationSet().with_(offload=mode), smoke_request)
    devices = {p.device.type for p in pipe.transformer.parameters()}
    # weights stay off the GPU until used: on the CPU (model, group) or as meta stubs whose data accelerate's
    # hooks keep on the CPU (sequential)
    assert "cuda" not in devices and devices <= {"cpu", "meta"}
    if mode.startswith("group"):  # the VAE stays resident: its decoder runs once per latent frame and tile
        assert {p.device.type for p in pipe.vae.parameters()} == {"cuda"}
    r = generate(m, "tiny", smoke_request, OptimizationSet().with_(offload=mode), out_dir=None)
    assert r.frames.shape[0] == 9


def test_block_level_offload_groups_the_transformer_only(monkeypatch):
    """group_block: the transformer in block groups; the text encoder (no top-level block list: one 11 GB group at
    block level, an OOM under a 4.5 GB cap on an H200) leaf by leaf; the VAE resident; non-modules untouched."""
    from types import SimpleNamespace

    import wan_ui.optim.offload as offload
    from wan_ui.optim.offload import apply_placement

    calls, moved = [], []

    class Vae(torch.nn.Linear):
        def to(self, *args, **kwargs):
            moved.append(args)
            return self

    monkeypatch.setattr(offload, "apply_group_offloading",
                        lambda module, **kw: calls.append((module, kw["offload_type"], kw.get("num_blocks_per_group"))))
    transformer, text_encoder, vae = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), Vae(1, 1)
    components = {"transformer": transformer, "text_encoder": text_encoder, "vae": vae, "tokenizer": object()}
    pipe = SimpleNamespace(components=components)
    apply_placement(pipe, OptimizationSet(offload="group_block"), "cuda")
    assert calls == [(transformer, "block_level", 1), (text_encoder, "leaf_level", None)] and moved == [("cuda",)]
    calls.clear()
    apply_placement(pipe, OptimizationSet(offload="group_leaf"), "cuda")
    assert calls == [(transformer, "leaf_level", None), (text_encoder, "leaf_level", None)]


def test_cfg_batch_matches_separate_branches_with_half_the_calls(manager, smoke_request):
    opts = OptimizationSet().with_(precision="fp32", text_encoder_precision="fp32")
    req = smoke_request.__class__(**{**smoke_request.to_dict(), "num_inference_steps": 4, "notes": ()})
    separate = _frames(manager, req, opts)
    pipe, _, _ = manager.get("tiny", opts, req)
    batch_sizes = []
    handle = pipe.transformer.blocks[0].register_forward_pre_hook(lambda m, a: batch_sizes.append(a[0].shape[0]))
    try:
        batched = _frames(manager, req, opts.with_(cfg_batch=True))
    finally:
        handle.remove()
    assert batch_sizes == [2] * 4  # one batch-2 pass per step instead of two batch-1 passes
    assert np.abs(batched.frames.astype(int) - separate.frames.astype(int)).max() <= 1
    assert batched.metrics.forwards_computed == separate.metrics.forwards_computed == 8
    # with CFG truncation the uncond branch stops: no batched pass is wasted
    batch_sizes.clear()
    handle = pipe.transformer.blocks[0].register_forward_pre_hook(lambda m, a: batch_sizes.append(a[0].shape[0]))
    try:
        _frames(manager, req, opts.with_(cfg_batch=True, cfg_truncation=0.5))
    finally:
        handle.remove()
    assert batch_sizes == [2, 2, 1, 1]
    off = _frames(manager, req, opts)
    assert np.array_equal(off.frames, separate.frames)


def test_chunked_attention_on_the_math_kernel_is_exact_and_runs_in_chunks(monkeypatch):
    """attention_backend=math + attention_slicing: the chunks run on SDPA's math kernel (where slicing saves memory:
    the scores are N x L instead of L x L); same output as unchunked math attention."""
    from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    attn = WanAttention(dim=24, heads=2, dim_head=12, eps=1e-6, cross_attention_dim_head=None,
                        processor=WanAttnProcessor()).eval()
    x = torch.randn(1, 50, 24)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        ref = attn(x)
    seen, real = [], torch.nn.functional.scaled_dot_product_attention

    def spy(q, *a, **kw):
        seen.append((q.shape[2], torch._C._get_math_sdp_enabled(), torch._C._get_flash_sdp_enabled()))
        return real(q, *a, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    attn.set_processor(ChunkedWanAttnProcessor(16, math=True))
    with torch.no_grad():
        out = attn(x)
    assert torch.allclose(out, ref, atol=1e-6)
    assert [n for n, _, _ in seen] == [16, 16, 16, 2] and all(m and not f for _, m, f in seen)


def test_option_notes_say_when_slicing_saves_nothing():
    import dataclasses

    from wan_ui.core.hardware import probe_hardware
    from wan_ui.core.options import option_notes

    cpu = probe_hardware()
    gpu = dataclasses.replace(cpu, cuda=True)
    assert "saves no memory" in option_notes(OptimizationSet(attention_slicing=4096), gpu)[0]
    assert option_notes(OptimizationSet(attention_slicing=4096, attention_backend="math"), gpu) == []
    assert option_notes(OptimizationSet(attention_slicing=4096), cpu) == [] == option_notes(OptimizationSet(), gpu)


def test_compile_keeps_its_cache_in_the_model_cache_unless_told(monkeypatch, tmp_path):
    """Torch's compile cache defaults to /tmp (gone after a reboot): we point it into $WAN_UI_CACHE, never over a
    folder the user chose."""
    import os
    from types import SimpleNamespace

    from wan_ui.optim.compile import apply_compile

    block = torch.nn.Linear(2, 2)
    pipe = SimpleNamespace(transformer=SimpleNamespace(_repeated_blocks=["Linear"], modules=lambda: [block]))
    monkeypatch.setenv("WAN_UI_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    apply_compile(pipe, OptimizationSet(compile="none"), "cpu")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    apply_compile(pipe, OptimizationSet(compile="regional"), "cpu")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torch_compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    apply_compile(pipe, OptimizationSet(compile="regional"), "cpu")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_compile_serves_more_variants_than_torchs_recompile_limit():
    """With fullgraph=True, torch's default of 8 compiled variants per code object made the ninth size/window a hard
    FailOnRecompileLimitHit (seen on an H200 after four 480p presets, then the report size): apply_compile raises the
    limit, keeping a larger one the user set. Here the limit starts at 1 and a block serves three input ranks."""
    from types import SimpleNamespace

    import torch._dynamo.config as dynamo

    from wan_ui.optim.compile import RECOMPILE_LIMIT, apply_compile

    torch._dynamo.reset()
    block = torch.nn.Linear(2, 2)
    pipe = SimpleNamespace(transformer=SimpleNamespace(_repeated_blocks=["Linear"], modules=lambda: [block]))
    # config.patch restores torch's values afterwards (monkeypatch's undo would delete, and so hide, them)
    with dynamo.patch(recompile_limit=1, accumulated_recompile_limit=dynamo.accumulated_recompile_limit):
        apply_compile(pipe, OptimizationSet(compile="regional"), "cpu")
        assert dynamo.recompile_limit == RECOMPILE_LIMIT
        for shape in [(2,), (3, 2), (4, 3, 2)]:  # a new rank is a new graph, whatever dynamic shapes do
            x = torch.randn(shape)
            torch.testing.assert_close(block.forward(x), torch.nn.functional.linear(x, block.weight, block.bias))
    with dynamo.patch(recompile_limit=1000):
        apply_compile(pipe, OptimizationSet(compile="regional"), "cpu")
        assert dynamo.recompile_limit == 1000
    torch._dynamo.reset()


def test_uint8_frames_match_diffusers_postprocess():
    """Our on-device conversion against diffusers' own video postprocess: fp32 input, the same arithmetic, the same
    bytes (with a bf16 VAE diffusers halves and shifts in bf16 and differs by up to one level)."""
    import torch
    from diffusers.video_processor import VideoProcessor

    from wan_ui.core.generate import to_uint8_frames

    video = torch.rand(1, 3, 21, 16, 24, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2  # beyond [-1, 1]
    ref = VideoProcessor(vae_scale_factor=8).postprocess_video(video, output_type="np")[0]
    ref = (np.clip(ref, 0.0, 1.0) * 255).round().astype(np.uint8)
    kept = video.clone()
    ours = to_uint8_frames(video[0], chunk=4)  # several chunks, the last one short
    assert ours.shape == ref.shape == (21, 16, 24, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, ref)
    assert ours.min() == 0 and ours.max() == 255  # clamped, not wrapped
    assert torch.equal(video, kept)  # the caller's (fp32) video is not modified in place
    # a bf16 VAE's output: diffusers halves and shifts in bf16, we in fp32 -> at most one level apart
    half = video.to(torch.bfloat16)
    ref16 = VideoProcessor(vae_scale_factor=8).postprocess_video(half, output_type="np")[0]
    ref16 = (np.clip(ref16, 0.0, 1.0) * 255).round().astype(np.uint8)
    assert np.abs(to_uint8_frames(half[0]).astype(int) - ref16.astype(int)).max() <= 1
