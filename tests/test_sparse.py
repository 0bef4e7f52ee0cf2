"""Sparse self-attention (sliding tile window on FlexAttention): exactness against dense references, the token
layout, the reported sparsity, dense steps, and the catalogue's apply/remove contract."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wan_ui.core.errors import ValidationError
from wan_ui.optim.attention import ChunkedWanAttnProcessor
from wan_ui.core.generate import generate
from wan_ui.optim import sparse
from wan_ui.optim.sparse import (SparseContext, SparseWanAttnProcessor, TileLayout, build_block_mask,
                                 dense_steps_for, parse_window, sparse_attention, sparsity_report, window_density)
from wan_ui.core.errors import UnavailableError
from wan_ui.core.hardware import Hardware
from wan_ui.core.options import OptimizationSet, check_available, check_compatible, parse_set_args
from wan_ui.core.requests import WORKLOADS

GRID, TILE = (3, 5, 6), (1, 2, 4)  # 90 tokens; tiles (3, 3, 2) of 8 tokens = 144 padded: padding in h and w


def _qkv(grid, heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, math.prod(grid), heads, dim, generator=g) for _ in range(3)]  # (B, L, H, D)


def _sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), attn_mask=mask).transpose(1, 2)


def _dense_window_mask(grid, tile, window):
    """The same window as an explicit (L, L) boolean mask over frame-major tokens (small sizes only)."""
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    tiles = [c.flatten() // s for c, s in zip((t, h, w), tile)]
    keep = torch.ones(math.prod(grid), math.prod(grid), dtype=torch.bool)
    for c, half in zip(tiles, window):
        keep &= (c[:, None] - c[None, :]).abs() <= half
    return keep


def test_token_reorder_round_trips_and_groups_tiles():
    layout = TileLayout(GRID, TILE)
    x = torch.randn(2, 90, 3, 5)
    tiled = layout.to_tiles(x)
    assert tiled.shape == (2, layout.padded_len, 3, 5) == (2, 144, 3, 5)
    assert torch.equal(layout.from_tiles(tiled), x)
    # each run of 8 tile-major tokens is one 1 x 2 x 4 tile: coordinates of its real tokens share a tile index
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in GRID), indexing="ij")
    coords = torch.stack([t, h, w], -1).reshape(1, 90, 3) + 1  # +1: padding stays 0
    tiles = layout.to_tiles(coords).reshape(18, 8, 3)
    for i, block in enumerate(tiles):
        real = block[(block > 0).all(-1)] - 1
        assert len(real) > 0  # no tile is all padding
        idx = real // torch.tensor(TILE)
        assert (idx == idx[0]).all() and tuple(idx[0].tolist()) == (i // 6, (i // 2) % 3, i % 2)


def test_window_covering_everything_equals_dense_attention():
    q, k, v = _qkv(GRID)
    layout = TileLayout(GRID, TILE)
    out = sparse_attention(q, k, v, layout, build_block_mask(layout, (5, 5, 5), "cpu"))
    torch.testing.assert_close(out, _sdpa(q, k, v))  # padding keys are masked out


@pytest.mark.parametrize("grid,tile,window", [((3, 8, 8), (1, 2, 2), (1, 1, 0)), (GRID, TILE, (0, 1, 0)),
                                              ((4, 4, 6), (2, 2, 2), (0, 0, 1))])
def test_small_window_equals_explicit_dense_mask(grid, tile, window):
    q, k, v = _qkv(grid, seed=1)
    layout = TileLayout(grid, tile)
    out = sparse_attention(q, k, v, layout, build_block_mask(layout, window, "cpu"))
    ref = _sdpa(q, k, v, _dense_window_mask(grid, tile, window))
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, _sdpa(q, k, v), atol=1e-3)  # the window really cuts something


def test_block_sparsity_matches_a_hand_count():
    layout = TileLayout((3, 8, 8), (1, 2, 4))  # tiles (3, 4, 2)
    # window (1, 1, 0): t-neighbours 2+3+2 of 3x3, h-neighbours 2+3+3+2 of 4x4, w 1+1 of 2x2
    pairs = 7 * 10 * 2
    assert window_density(layout.tiles, (1, 1, 0)) == pytest.approx(pairs / 24**2)
    mask = build_block_mask(layout, (1, 1, 0), "cpu")
    assert mask.sparsity() == pytest.approx(100 * (1 - pairs / 24**2))
    # padded tiles still count as non-empty blocks: the hand count holds with padding too
    padded = TileLayout(GRID, TILE)  # tiles (3, 3, 2)
    assert build_block_mask(padded, (0, 1, 0), "cpu").sparsity() == pytest.approx(100 * (1 - 3 * 7 * 2 / 18**2))


def test_sparsity_report_at_the_report_size_matches_the_measured_masks():
    req = WORKLOADS["report"].request  # 25 x 45 x 78 patches, tiles 25 x 6 x 5 of 1 x 8 x 16
    rep = sparsity_report(req, OptimizationSet().with_(sparse_attention="sta"))
    assert rep["grid"] == [25, 45, 78] and rep["tokens"] == 87750 and rep["tiles"] == [25, 6, 5]
    assert rep["mask_sparsity"] == pytest.approx(0.895, abs=5e-4)  # ../shared/WORKLOADS.md: 89.5 %
    assert rep["dense_steps"] == 16 and rep["steps"] == 65  # ceil(12 / 50 * 65)
    assert rep["effective_sparsity"] == pytest.approx(rep["mask_sparsity"] * 49 / 65 * 29 / 30)
    assert "attention 90 % sparse" in rep["summary"]
    allframes = sparsity_report(req, OptimizationSet().with_(sparse_attention="sta", sparse_window="24,1,1"))
    assert allframes["mask_sparsity"] == pytest.approx(0.77, abs=5e-3)  # WORKLOADS.md: 77 %
    assert sparsity_report(req, OptimizationSet()) is None


def test_options_validate_and_conflicts_are_stated():
    assert parse_window(" 6, 1,1") == (6, 1, 1)
    for bad in ("1,2", "a,b,c", "1,2,-3", "1,2,3,4"):
        with pytest.raises(ValidationError, match="sparse_window"):
            parse_set_args([f"sparse_window={bad}"])
    with pytest.raises(ValidationError, match="sparse_attention must be one of"):
        parse_set_args(["sparse_attention=radial"])
    check_compatible(OptimizationSet().with_(sparse_attention="sta", attention_backend="flex"))
    assert [dense_steps_for(-1, n) for n in (50, 65, 8, 4, 1)] == [12, 16, 2, 1, 1]
    assert dense_steps_for(0, 50) == 0 and dense_steps_for(30, 10) == 10


def _small_tiles(monkeypatch):
    monkeypatch.setattr(sparse, "DEFAULT_TILE", (1, 2, 2))  # the smoke grid is 3 x 4 x 4 patches


def test_processor_with_full_window_matches_the_dense_transformer(manager, smoke_request, monkeypatch):
    _small_tiles(monkeypatch)
    opts = OptimizationSet().with_(precision="fp32")
    pipe, _, _ = manager.get("tiny", opts, smoke_request)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 8, 8, generator=g)  # latents (B, C, T, H, W): grid 3 x 4 x 4
    text = torch.randn(1, 7, pipe.transformer.config.text_dim, generator=g)
    ts = torch.tensor([500])

    def forward():
        with torch.no_grad():
            return pipe.transformer(x, ts, text, return_dict=False)[0]

    dense = forward()
    before = {n: p for n, p in pipe.transformer.attn_processors.items()}
    manager.get("tiny", opts.with_(sparse_attention="sta", sparse_window="9,9,9", sparse_dense_layers=0),
                smoke_request)
    procs = pipe.transformer.attn_processors
    assert all(isinstance(p, SparseWanAttnProcessor) == n.endswith("attn1.processor") for n, p in procs.items())
    sparse.prepare_sparse(pipe, 64, 64, 9)
    torch.testing.assert_close(forward(), dense, rtol=1e-5, atol=1e-5)
    manager.get("tiny", opts.with_(sparse_attention="sta", sparse_window="0,0,0", sparse_dense_layers=1),
                smoke_request)
    assert isinstance(pipe.transformer.blocks[1].attn1.processor, SparseWanAttnProcessor)
    assert pipe.transformer.blocks[0].attn1.processor is before["blocks.0.attn1.processor"]
    sparse.prepare_sparse(pipe, 64, 64, 9)
    assert not torch.allclose(forward(), dense, atol=1e-4)
    manager.get("tiny", opts, smoke_request)
    assert pipe.transformer.attn_processors == before  # the very same processor objects are back
    assert manager.builds == 1


def test_block_mask_is_cached_per_grid():
    ctx = SparseContext((1, 1, 1), (1, 2, 2))
    ctx.prepare((3, 4, 4), "cpu")
    first = ctx.block_mask
    ctx.prepare((3, 4, 6), "cpu")
    assert ctx.block_mask is not first and ctx.layout.grid == (3, 4, 6)
    ctx.prepare((3, 4, 4), "cpu")
    assert ctx.block_mask is first and len(ctx.masks) == 2


def _steps_request(smoke_request, steps):
    return smoke_request.__class__(**{**smoke_request.to_dict(), "num_inference_steps": steps, "notes": ()})


@pytest.mark.parametrize("dense_steps,sparse_steps", [(2, {2, 3}), (-1, {1, 2, 3}), (4, set())])
def test_dense_steps_really_run_dense(manager, smoke_request, monkeypatch, dense_steps, sparse_steps):
    _small_tiles(monkeypatch)
    step = [0]
    calls = Counter()
    real = sparse.sparse_attention

    def spy(*args, **kwargs):
        calls[step[0]] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(sparse, "sparse_attention", spy)
    req = _steps_request(smoke_request, 4)  # CFG 6: two forwards per step
    opts = OptimizationSet().with_(sparse_attention="sta", sparse_dense_steps=dense_steps, sparse_dense_layers=0)
    generate(manager, "tiny", req, opts, out_dir=None,
             on_progress=lambda phase, done, total: step.__setitem__(0, done) if phase == "denoising" else None)
    assert calls == {s: 2 * 2 for s in sparse_steps}  # 2 forwards x 2 layers on every sparse step


def test_toggle_on_then_off_is_bit_identical(manager, smoke_request, monkeypatch):
    _small_tiles(monkeypatch)
    req = _steps_request(smoke_request, 4)
    base = OptimizationSet()
    never = generate(manager, "tiny", req, base, out_dir=None).frames
    on = generate(manager, "tiny", req, base.with_(sparse_attention="sta", sparse_window="0,0,0",
                                                     sparse_dense_steps=1), out_dir=None).frames
    off = generate(manager, "tiny", req, base, out_dir=None).frames
    assert np.array_equal(off, never)
    assert not np.array_equal(on, never)
    assert manager.builds == 1


def test_sparse_wraps_chunked_attention_for_its_dense_steps(manager, smoke_request):
    opts = OptimizationSet().with_(sparse_attention="sta", attention_slicing=16)
    check_compatible(opts)
    pipe, _, _ = manager.get("tiny", opts, smoke_request)
    proc = pipe.transformer.blocks[1].attn1.processor
    assert isinstance(proc, SparseWanAttnProcessor) and isinstance(proc.dense_processor, ChunkedWanAttnProcessor)
    assert generate(manager, "tiny", smoke_request, opts, out_dir=None).frames.shape == (9, 64, 64, 3)


def test_flash_kernel_is_offered_only_where_it_can_run():
    """sparse_kernel=flash needs CUDA, flash-attn-4 and Hopper or newer: each missing piece is named."""
    flash = OptimizationSet().with_(sparse_attention="sta", sparse_kernel="flash")
    h100 = Hardware(True, "H100", (9, 0), 80000.0, frozenset({"triton", "flash_attn.cute"}))
    check_available(flash, h100)
    for hw, says in ((Hardware(False, "cpu", None, None, frozenset()), "needs a CUDA GPU"),
                     (Hardware(True, "H100", (9, 0), 80000.0, frozenset({"triton", "flash_attn"})), "flash-attn-4"),
                     (Hardware(True, "A100", (8, 0), 80000.0, frozenset({"triton", "flash_attn.cute"})), "8.0")):
        with pytest.raises(UnavailableError, match=says) as e:
            check_available(flash, hw)
        assert e.value.field == "sparse_kernel"
        if says == "flash-attn-4":  # the message says how to get it (the [cu13] extra: the DSL's CUDA 13 library)
            assert "pip install 'flash-attn-4[cu13]" in str(e.value)


def test_kernel_is_part_of_the_sparse_signature_and_the_cpu_has_one_kernel():
    """A kernel change re-applies the sparse family (its signature changes); on the CPU there is no FLASH kernel,
    so a tensor call with either kernel gives the same result."""
    opts = OptimizationSet().with_(sparse_attention="sta")
    assert sparse.signature(opts, None) != sparse.signature(opts.with_(sparse_kernel="flash"), None)
    layout = TileLayout((2, 4, 4), (1, 2, 2))
    mask = build_block_mask(layout, (0, 1, 1), "cpu")
    q, k, v = (torch.randn(1, 32, 2, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    assert torch.equal(sparse.sparse_attention(q, k, v, layout, mask, "triton"),
                       sparse.sparse_attention(q, k, v, layout, mask, "flash"))


def test_generate_completes_with_default_sparse_settings(manager, smoke_request):
    opts = OptimizationSet().with_(sparse_attention="sta")
    r = generate(manager, "tiny", smoke_request, opts, out_dir=None)
    assert r.frames.shape == (9, 64, 64, 3) and r.frames.std() > 0


@pytest.mark.slow
def test_regional_compile_traces_the_sparse_processor(smoke_request, tiny_folder, monkeypatch):
    """fullgraph regional compile traces the processor and FlexAttention inside the blocks (~25 s on CPU)."""
    from wan_ui.core.manager import ModelManager

    _small_tiles(monkeypatch)
    opts = OptimizationSet().with_(precision="fp32", sparse_attention="sta", sparse_window="0,0,0",
                                   sparse_dense_steps=1, sparse_dense_layers=0)
    eager = generate(ModelManager(device="cpu", log=lambda m: None), "tiny", smoke_request, opts, out_dir=None)
    compiled = generate(ModelManager(device="cpu", log=lambda m: None), "tiny", smoke_request,
                        opts.with_(compile="regional"), out_dir=None)
    assert np.abs(compiled.frames.astype(int) - eager.frames.astype(int)).max() <= 1


# ---- the packed layout: a narrow last tile column shares one block ----------------------------------------
PACKABLE = ((3, 5, 9), (1, 2, 4))  # tiles (3, 3, 3); the last column 1 patch wide: 3 tiles x 2 x 1 = 6 <= 8 tokens


def test_packed_layout_merges_the_narrow_column_and_round_trips():
    grid, tile = PACKABLE
    padded, packed = TileLayout(grid, tile), TileLayout(grid, tile, pack=True)
    assert not padded.merged and packed.merged
    # per frame: 3 x 2 regular tiles + one block for the last column, instead of 3 x 3 blocks
    assert packed.padded_len == 3 * 7 * 8 and padded.padded_len == 3 * 9 * 8
    x = torch.randn(2, math.prod(grid), 3)
    tiled = packed.to_tiles(x)
    assert tiled.shape == (2, packed.padded_len, 3) and torch.equal(packed.from_tiles(tiled), x)
    # every real token sits once, with the tile the padded layout gives it
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    coords = torch.stack([t, h, w], -1).reshape(1, -1, 3) + 1
    slots = packed.to_tiles(coords)[0]
    real = (slots > 0).all(-1)
    assert int(real.sum()) == math.prod(grid)
    bt, bh, bw, pt, ph, pw, is_real = packed.coords(torch.arange(packed.padded_len))
    assert torch.equal(is_real, real)
    assert torch.equal(torch.stack([pt, ph, pw], -1)[real], slots[real] - 1)
    assert torch.equal(torch.stack([bt, bh, bw], -1)[real], (slots[real] - 1) // torch.tensor(tile))
    # the seventh block of a frame holds the last column's three tiles
    assert set(bh[6 * 8:7 * 8][is_real[6 * 8:7 * 8]].tolist()) == {0, 1, 2}
    assert set(bw[6 * 8:7 * 8][is_real[6 * 8:7 * 8]].tolist()) == {2}


NARROW = ((3, 4, 3), (1, 2, 8))  # one tile column narrower than a tile: a frame's 2 tiles x 2 x 3 in one block


@pytest.mark.parametrize("grid,tile,window", [(*PACKABLE, (0, 1, 0)), (*PACKABLE, (1, 0, 1)), (*PACKABLE, (1, 1, 1)),
                                              (*NARROW, (1, 0, 0)), (*NARROW, (0, 0, 0))])
def test_packed_layout_computes_the_same_attention_in_fewer_blocks(grid, tile, window):
    q, k, v = _qkv(grid, seed=2)
    padded, packed = TileLayout(grid, tile), TileLayout(grid, tile, pack=True)
    ref = _sdpa(q, k, v, _dense_window_mask(grid, tile, window))
    out = sparse_attention(q, k, v, packed, build_block_mask(packed, window, "cpu"))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out, sparse_attention(q, k, v, padded, build_block_mask(padded, window, "cpu")))
    assert sparse.kept_blocks(packed, window) < sparse.kept_blocks(padded, window)


def test_kept_blocks_counts_what_the_block_mask_keeps():
    grid, tile = PACKABLE
    for layout in (TileLayout(grid, tile), TileLayout(grid, tile, pack=True)):
        mask = build_block_mask(layout, (1, 1, 0), "cpu")
        n = layout.padded_len // layout.tile_tokens
        assert sparse.kept_blocks(layout, (1, 1, 0)) == pytest.approx(n * n * (1 - mask.sparsity() / 100))


def test_packing_applies_at_832x480_only_where_the_column_fits():
    official = TileLayout((21, 30, 52), pack=True)  # last column 4 patches: 4 tiles x 8 x 4 = 128 tokens
    assert official.merged and official.padded_len == 21 * 13 * 128
    assert sparse.kept_blocks(official, (3, 1, 1)) / sparse.kept_blocks(TileLayout((21, 30, 52)), (3, 1, 1)) \
        == pytest.approx(10665 / 13500)
    report = TileLayout((25, 45, 78), pack=True)  # last column 14 patches: 6 x 8 x 14 tokens do not fit in 128
    assert not report.merged and report.padded_len == TileLayout((25, 45, 78)).padded_len
    rep = sparsity_report(WORKLOADS["official480"].request, OptimizationSet().with_(sparse_attention="sta"))
    assert rep["padded_tokens"] == 21 * 13 * 128 and rep["kept_blocks"] < rep["blocks"]


def test_packed_layout_through_the_transformer_matches_padded(manager, smoke_request, monkeypatch):
    """The tiny transformer with the packed layout (tiles 1 x 2 x 3 on its 3 x 4 x 4 grid: a last column 1 patch
    wide, 2 tiles x 2 x 1 tokens in one block) gives the padded layout's output; the context holds the indices."""
    monkeypatch.setattr(sparse, "DEFAULT_TILE", (1, 2, 3))
    opts = OptimizationSet().with_(precision="fp32", sparse_attention="sta", sparse_window="1,0,0",
                                   sparse_dense_layers=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 8, 8, generator=g)  # latents (B, C, T, H, W): grid 3 x 4 x 4
    outs = {}
    for layout in ("padded", "packed"):
        pipe, _, _ = manager.get("tiny", opts.with_(sparse_layout=layout), smoke_request)
        ctx = sparse.prepare_sparse(pipe, 64, 64, 9)
        assert ctx.layout.merged == (layout == "packed") and (ctx.indices is not None) == (layout == "packed")
        text = torch.randn(1, 7, pipe.transformer.config.text_dim, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            outs[layout] = pipe.transformer(x, torch.tensor([500]), text, return_dict=False)[0]
    torch.testing.assert_close(outs["packed"], outs["padded"], rtol=1e-5, atol=1e-5)
    assert manager.builds == 1  # the layout is a run-time option: no rebuild
