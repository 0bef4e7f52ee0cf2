"""Training-free sparse self-attention: a 3D sliding tile window (Sliding Tile Attention style) on FlexAttention.

Wan's self-attention (`attn1`) sees every token of the video: 87,750 tokens at the `report` size, where it takes
most of a dense forward's time (docs/benchmarks/README.md, "Where the time goes"). Sliding Tile Attention (Zhang et
al., arXiv 2502.04507) keeps, for each query tile, only the key tiles within a 3D window. Here:
  1. tokens (B, L, H, D), laid out frame-major over the patch grid (T, Hp, Wp), are padded to whole tiles and
     reordered tile-major, so one tile of `tile` = (1, 8, 16) patches = 128 tokens is one FlexAttention block
     (`sparse_layout=packed`: a last tile column too narrow to fill blocks shares one block, `TileLayout`);
  2. a `mask_mod` over tile coordinates keeps key tile k for query tile q when |q - k| <= window in each of
     (t, h, w) — and masks the padding tokens out as keys; `create_block_mask` turns it into a BlockMask
     (never a dense L x L mask: diffusers' flex backend with a dense mask asks for 344 GiB at this size). The
     BlockMask is cached per (grid, window, tile, device) on the pipeline's `SparseContext`;
  3. `flex_attention` skips the empty blocks; the output is reordered back and cropped.
Unlike STA's kernel, windows are not shifted inward at the borders (border tiles see fewer tiles): at the `report`
size the mask is 77 % block-sparse for all frames +-1 tile and 89.5 % for +-6 frames (`sparsity_report`); the
attention's speed with this layout: docs/benchmarks/SPARSE.md, "Results".

The first steps and the first layers run dense, as the papers do (STA keeps 12 of 50 steps dense in its Wan
mask search; Sparse VideoGen the first 20 % of steps and 3 % of layers; Radial Attention 12 steps and 1 layer).
Dense steps are switched by a per-step hook (`make_sparse_step_hook`, composed by generate.py like CFG
truncation) that flips `SparseContext.dense`; a dense step calls the processor that was installed before, so
it is exactly the dense model. Cross-attention (`attn2`) is never touched.

Undo: `apply_sparse` returns a `SparseUndo` (the shared context and the self-attention processors it replaced),
which `remove_sparse` puts back; `prepare_sparse` finds the context through the pipeline's state.

On CUDA, flex_attention is compiled once, lazily (eager flex materialises the scores); inside a compiled
block it is traced with the block. On CPU it runs eagerly (unfused; fine at test sizes).

Kernel (`sparse_kernel`): "triton", FlexAttention's default inductor template, or "flash", its FlashAttention-4
backend (`kernel_options={"BACKEND": "FLASH"}`: CuTe DSL kernels for Hopper and Blackwell from the `flash-attn-4`
package, the same BlockMask). PyTorch's FlexAttention + FlashAttention-4 announcement reports 1.2-3.2x over the
Triton backend; ours: docs/benchmarks/README.md, "FlashAttention-4 backend". Same mask, same math: the two differ by
accumulation order (bf16 rounding) only. On CPU "flash" has no kernel and runs as "triton" does (eagerly).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from wan_ui.core.errors import ValidationError
from wan_ui.optim.attention import _rope
from wan_ui.optim.state import Undo, state_of, undo_on_error

DEFAULT_TILE = (1, 8, 16)  # (frames, rows, cols) in patches: 128 tokens, one FlexAttention block on GPU
# Sliding Tile Attention's Wan mask search keeps the first 12 of 50 steps dense (arXiv 2502.04507, sec. 4);
# other step counts get the same fraction, rounded up.
STA_DENSE_STEP_FRACTION = 12 / 50


# The widest half-width a window may ask for, in tiles: the largest video's grid is 65 x 16 x 8 tiles (257 frames,
# 2048 x 2048), so a wider window is dense already; a number of many digits would overflow the mask's int64 indices.
MAX_HALF_WIDTH = 999


def parse_window(text: str) -> tuple[int, int, int]:
    """"t,h,w" half-widths in tiles -> (t, h, w); each in [0, MAX_HALF_WIDTH]."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= MAX_HALF_WIDTH for p in parts):
        raise ValidationError(f"sparse_window must be three whole numbers 't,h,w' (half-widths in tiles), each in "
                              f"[0, {MAX_HALF_WIDTH}], got {str(text)[:40]!r}", field="sparse_window")
    return tuple(int(p) for p in parts)


def dense_steps_for(setting: int, steps: int) -> int:
    """`sparse_dense_steps` (-1 = STA's published fraction) -> the number of leading dense steps."""
    if setting < 0:
        return min(steps, math.ceil(STA_DENSE_STEP_FRACTION * steps))
    return min(steps, setting)


def latent_grid(pipe, height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """The transformer's patch grid (T, Hp, Wp) for a video size, as Wan's pipeline shapes its latents."""
    return patch_grid(pipe.transformer.config.patch_size, height, width, num_frames,
                      pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial)


def patch_grid(patch_size, height: int, width: int, num_frames: int, temporal: int = 4,
               spatial: int = 8) -> tuple[int, int, int]:
    """(T, Hp, Wp) patches of a video: the VAE's strides (Wan's 4 in time, 8 in space), then the patch size."""
    pt, ph, pw = patch_size
    return ((num_frames - 1) // temporal + 1) // pt, height // spatial // ph, width // spatial // pw


# ---- layout: frame-major <-> tile-major ------------------------------------------------------------------
@dataclass(frozen=True)
class TileLayout:
    """Where each token of a (T, Hp, Wp) patch grid sits in FlexAttention's token order ("slots").

    Padded (`pack=False`): every tile of `tile` patches is one block of `tile_tokens` slots, the grid's border tiles
    zero-padded. Packed (`pack=True`): when the last tile column is narrow enough that all its tiles of one tile row
    in time fit in one block together (832x480: a 30 x 52 patch grid, tiles of 8 x 16, a last column 4 patches wide:
    4 tiles x 8 x 4 = 128 tokens), they share one block instead of filling four blocks a quarter each. Each token
    keeps its tile, so the mask and the attention's math are the same; only the blocks FlexAttention visits change
    (21 % fewer kept block pairs at 832x480 with window 3,1,1: `kept_blocks`). Other sizes lay out as padded."""

    grid: tuple[int, int, int]  # (T, Hp, Wp) patches, frame-major token order
    tile: tuple[int, int, int] = DEFAULT_TILE  # patches per tile in (t, h, w)
    pack: bool = False

    @property
    def tiles(self) -> tuple[int, int, int]:
        return tuple(-(-g // t) for g, t in zip(self.grid, self.tile))

    @property
    def tile_tokens(self) -> int:
        return math.prod(self.tile)

    @property
    def last_col_width(self) -> int:
        """Patches in the last tile column (the whole tile width when the grid divides evenly)."""
        return self.grid[2] - (self.tiles[2] - 1) * self.tile[2]

    @property
    def merged(self) -> bool:
        """True when the last tile column's tiles of one time-tile share one block (see the class docstring)."""
        (tt, th, _), nh = self.tile, self.tiles[1]
        return self.pack and self.last_col_width < self.tile[2] and nh * tt * th * self.last_col_width <= self.tile_tokens

    @property
    def blocks_per_time_tile(self) -> int:
        _, nh, nw = self.tiles
        return nh * (nw - 1) + 1 if self.merged else nh * nw

    @property
    def padded_len(self) -> int:
        """Slots: the token count FlexAttention sees (a whole number of blocks)."""
        return self.tiles[0] * self.blocks_per_time_tile * self.tile_tokens

    def coords(self, idx):
        """Slot indices -> (tile t, tile h, tile w, patch t, patch h, patch w, real): a slot's tile, the patch it holds
        and whether it holds one (False = padding). Works on ints or integer tensors alike (the mask_mod's too)."""
        (tt, th, tw), (_, nh, nw), n = self.tile, self.tiles, self.tile_tokens
        per_row = self.blocks_per_time_tile * n
        a, s = idx // per_row, idx % per_row
        block, off = s // n, s % n
        if not self.merged:
            b, c = block // nw, block % nw
            dt, dh, dw = off // (th * tw), (off // tw) % th, off % tw
        else:
            # regular blocks: tiles (b, c < nw - 1) row-major; then one block of the last column's nh tiles, each
            # taking tt * th * wl slots (a short last tile row's missing rows stay padding)
            wl, regular = self.last_col_width, block < nh * (nw - 1)
            m = tt * th * wl
            b = _where(regular, block // max(nw - 1, 1), off // m)
            c = _where(regular, block % max(nw - 1, 1), nw - 1)
            width = _where(regular, tw, wl)
            r = _where(regular, off, off % m)
            dt, dh, dw = r // (th * width), (r // width) % th, r % width
            b = _where(regular | (off < nh * m), b, nh)  # past the last column's tiles: padding, no tile row
        t, h, w = a * tt + dt, b * th + dh, c * tw + dw
        real = (t < self.grid[0]) & (h < self.grid[1]) & (w < self.grid[2]) & (b < nh)
        return a, b, c, t, h, w, real

    def gather_index(self) -> torch.Tensor:
        """(padded_len,) int64: for each slot, its token's frame-major index, or L (a zero row) for padding."""
        T, H, W = self.grid
        _, _, _, t, h, w, real = self.coords(torch.arange(self.padded_len))
        return torch.where(real, (t * H + h) * W + w, T * H * W)

    def scatter_index(self) -> torch.Tensor:
        """(L,) int64: for each frame-major token, its slot (the inverse of `gather_index` on real tokens)."""
        index = self.gather_index()
        slots = torch.empty(math.prod(self.grid), dtype=torch.long)
        real = index < slots.numel()
        slots[index[real]] = torch.arange(self.padded_len)[real]
        return slots

    def to_tiles(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, ...) frame-major -> (B, Lp, ...) tile-major, zero-padded to whole blocks. A merged layout gathers
        through `index` (`gather_index` on x's device); a padded one is a reshape, pad and permute."""
        if self.merged:
            x = torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], dim=1)
            return x.index_select(1, index if index is not None else self.gather_index().to(x.device))
        (T, H, W), (nt, nh, nw), (tt, th, tw) = self.grid, self.tiles, self.tile
        b, rest = x.shape[0], x.shape[2:]
        x = x.reshape(b, T, H, W, -1)
        x = torch.nn.functional.pad(x, (0, 0, 0, nw * tw - W, 0, nh * th - H, 0, nt * tt - T))
        x = x.reshape(b, nt, tt, nh, th, nw, tw, -1).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return x.reshape(b, self.padded_len, *rest)

    def from_tiles(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of `to_tiles`: (B, Lp, ...) tile-major -> (B, L, ...) frame-major, padding dropped (a merged
        layout through `index`, `scatter_index` on x's device)."""
        if self.merged:
            return x.index_select(1, index if index is not None else self.scatter_index().to(x.device))
        (T, H, W), (nt, nh, nw), (tt, th, tw) = self.grid, self.tiles, self.tile
        b, rest = x.shape[0], x.shape[2:]
        x = x.reshape(b, nt, nh, nw, tt, th, tw, -1).permute(0, 1, 4, 2, 5, 3, 6, 7)
        x = x.reshape(b, nt * tt, nh * th, nw * tw, -1)[:, :T, :H, :W]
        return x.reshape(b, T * H * W, *rest)


def _where(cond, a, b):
    """torch.where for tensors, a conditional for plain ints (TileLayout.coords takes both)."""
    if isinstance(cond, torch.Tensor):
        return torch.where(cond, a, b)
    return a if cond else b


def tile_window_mask_mod(layout: TileLayout, window: tuple[int, int, int]):
    """mask_mod(b, h, q_idx, kv_idx) over slot indices: key tile within `window` tiles and not padding."""
    wt, wh, ww = window

    def mask_mod(b, h, q_idx, kv_idx):
        qt, qh, qw, *_ = layout.coords(q_idx)
        kt, kh, kw, *_, real = layout.coords(kv_idx)
        return ((qt - kt).abs() <= wt) & ((qh - kh).abs() <= wh) & ((qw - kw).abs() <= ww) & real

    return mask_mod


def build_block_mask(layout: TileLayout, window: tuple[int, int, int], device):
    device = torch.device(device)
    # The eager path evaluates the full L x L mask (out of memory at 87,750 tokens): compile it on CUDA.
    return create_block_mask(tile_window_mask_mod(layout, window), None, None, layout.padded_len,
                             layout.padded_len, device=device, BLOCK_SIZE=layout.tile_tokens,
                             _compile=device.type == "cuda")


def kept_blocks(layout: TileLayout, window: tuple[int, int, int]) -> int:
    """(query block, key block) pairs the window keeps: what FlexAttention computes, per head and layer. Counted
    from which block holds each tile and each tile's window neighbours (tiles x window-box pairs, never a blocks x
    blocks or tiles x tiles matrix), so it runs at any size on the CPU."""
    bt, bh, bw, *_, real = layout.coords(torch.arange(layout.padded_len))
    nt, nh, nw = layout.tiles
    tile_of = ((bt * nh + bh) * nw + bw)[real]
    block_of_token = (torch.arange(layout.padded_len) // layout.tile_tokens)[real]
    block_of_tile = torch.full((nt * nh * nw,), -1, dtype=torch.long)
    block_of_tile[tile_of] = block_of_token
    # a tile's tokens share one block in both layouts (a block is one tile, or several narrow tiles whole)
    assert bool((block_of_tile[tile_of] == block_of_token).all()), "a tile spans two blocks"
    t, h, w = (a.flatten() for a in torch.meshgrid(torch.arange(nt), torch.arange(nh), torch.arange(nw),
                                                   indexing="ij"))
    dt, dh, dw = (a.flatten() for a in torch.meshgrid(*(torch.arange(-r, r + 1) for r in window), indexing="ij"))
    kt, kh, kw = t[:, None] + dt, h[:, None] + dh, w[:, None] + dw  # (tiles, window box): key tile coordinates
    inside = (kt >= 0) & (kt < nt) & (kh >= 0) & (kh < nh) & (kw >= 0) & (kw < nw)
    query_tile = torch.arange(nt * nh * nw)[:, None].expand_as(kt)[inside]
    key_tile = ((kt * nh + kh) * nw + kw)[inside]
    n_blocks = layout.padded_len // layout.tile_tokens
    pairs = block_of_tile[query_tile] * n_blocks + block_of_tile[key_tile]
    return int(torch.unique(pairs).numel())


def window_density(tiles: tuple[int, int, int], window: tuple[int, int, int]) -> float:
    """Fraction of (query tile, key tile) pairs inside the window; the mask is separable over (t, h, w)."""
    density = 1.0
    for n, w in zip(tiles, window):
        density *= sum(min(n - 1, i + w) - max(0, i - w) + 1 for i in range(n)) / (n * n)
    return density


# ---- the kernel -----------------------------------------------------------------------------------------
KERNELS = ("triton", "flash")
# FlexAttention's kernel_options per `sparse_kernel`: None = the default (Triton) template
KERNEL_OPTIONS = {"triton": None, "flash": {"BACKEND": "FLASH"}}


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def _flex(q, k, v, block_mask, kernel: str = "triton"):
    options = KERNEL_OPTIONS[kernel] if q.is_cuda else None  # no FLASH kernel on the CPU
    if torch.compiler.is_compiling():  # traced and fused with the compiled block
        return flex_attention(q, k, v, block_mask=block_mask, kernel_options=options)
    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=block_mask, kernel_options=options)
    with warnings.catch_warnings():  # CPU: the unfused path is what we want at test sizes
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask)


def sparse_attention(q, k, v, layout: TileLayout, block_mask, kernel: str = "triton",
                     indices: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """q, k, v (B, L, H, D) frame-major -> (B, L, H, D), attention restricted to the tile window. `indices`: the
    layout's (gather, scatter) index on q's device for a merged layout (made here when not given)."""
    gather, scatter = indices or (None, None)
    # (B, H, Lp, D), contiguous: inductor's CPU flex lowering fails on these views otherwise (torch 2.14); in a
    # compiled block the pad, reorder and transpose fuse into one copy
    q, k, v = (layout.to_tiles(t, gather).transpose(1, 2).contiguous() for t in (q, k, v))
    out = _flex(q, k, v, block_mask, kernel).transpose(1, 2)  # (B, Lp, H, D)
    return layout.from_tiles(out, scatter)


# ---- the processor and its shared schedule ------------------------------------------------------------
@dataclass
class SparseContext:
    """Shared by every sparse processor of one pipeline: the window, the current step's mode, the mask."""

    window: tuple[int, int, int]
    tile: tuple[int, int, int] = DEFAULT_TILE
    kernel: str = "triton"  # `sparse_kernel`: FlexAttention's backend
    pack: bool = False  # `sparse_layout` == "packed": TileLayout.pack
    dense: bool = False  # flipped per step by the step hook
    layout: TileLayout | None = None
    block_mask: object = None
    indices: tuple | None = None  # a merged layout's (gather, scatter) index on the device, else None
    masks: dict = field(default_factory=dict)  # (grid, window, tile, pack, device) -> (BlockMask, indices)

    def prepare(self, grid: tuple[int, int, int], device) -> None:
        """Select (build once) the BlockMask and index for a patch grid; called outside the compiled blocks."""
        layout = TileLayout(tuple(grid), self.tile, self.pack)
        key = (tuple(grid), self.window, self.tile, self.pack, str(torch.device(device)))
        if key not in self.masks:
            indices = (layout.gather_index().to(device), layout.scatter_index().to(device)) if layout.merged else None
            self.masks[key] = (build_block_mask(layout, self.window, device), indices)
        self.layout, (self.block_mask, self.indices) = layout, self.masks[key]


class SparseWanAttnProcessor:
    """Wan self-attention with a sliding tile window; dense steps call the processor it replaced."""

    def __init__(self, dense_processor, ctx: SparseContext):
        self.dense_processor, self.ctx = dense_processor, ctx

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if self.ctx.dense or encoder_hidden_states is not None:
            return self.dense_processor(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        layout = self.ctx.layout
        if layout is None or math.prod(layout.grid) != hidden_states.shape[1]:
            raise RuntimeError(f"sparse attention was prepared for grid {layout and layout.grid}, got "
                               f"{hidden_states.shape[1]} tokens; call prepare_sparse(pipe, height, width, frames)")
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))  # (B, L, H, D)
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            q, k = _rope(q, *rotary_emb), _rope(k, *rotary_emb)
        out = sparse_attention(q, k, v, layout, self.ctx.block_mask, self.ctx.kernel,
                               self.ctx.indices).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


# ---- the catalogue verbs --------------------------------------------------------------------------------
@dataclass
class SparseUndo(Undo):
    context: SparseContext  # shared by the installed processors; generate.py prepares it per request
    processors: dict[int, object] = field(default_factory=dict)  # block index -> the attn1 processor replaced


def apply_sparse(pipe, opts, request=None) -> SparseUndo | None:
    if opts.sparse_attention == "none":
        return None
    ctx = SparseContext(parse_window(opts.sparse_window), DEFAULT_TILE, kernel=opts.sparse_kernel,
                        pack=opts.sparse_layout == "packed")
    with undo_on_error(pipe, remove_sparse, SparseUndo(ctx)) as undo:
        for i, block in enumerate(pipe.transformer.blocks):
            if i >= opts.sparse_dense_layers:
                undo.processors[i] = block.attn1.processor
                block.attn1.set_processor(SparseWanAttnProcessor(block.attn1.processor, ctx))
        if request is not None:
            ctx.prepare(latent_grid(pipe, request.height, request.width, request.num_frames),
                        pipe._execution_device)
    return undo


def remove_sparse(pipe, undo: SparseUndo) -> None:
    for i, proc in undo.processors.items():
        pipe.transformer.blocks[i].attn1.set_processor(proc)


def signature(opts, request) -> tuple:
    # dense steps are read per run by the step hook; they need no re-apply
    return (opts.sparse_attention, opts.sparse_window, opts.sparse_dense_layers, opts.sparse_kernel,
            opts.sparse_layout)


def prepare_sparse(pipe, height: int, width: int, num_frames: int) -> SparseContext | None:
    undo = state_of(pipe).undo(SparseUndo)
    if undo is None:
        return None
    undo.context.prepare(latent_grid(pipe, height, width, num_frames), pipe._execution_device)
    return undo.context


def make_sparse_step_hook(pipe, request, opts):
    """Prepare the mask for this request and return `hook(pipe, step_index)`, or None when nothing switches.

    The first `dense_steps_for(opts.sparse_dense_steps, steps)` steps run dense."""
    ctx = prepare_sparse(pipe, request.height, request.width, request.num_frames)
    if ctx is None:
        return None
    keep = dense_steps_for(opts.sparse_dense_steps, request.num_inference_steps)
    ctx.dense = keep > 0
    if keep in (0, request.num_inference_steps):
        return None

    def hook(pipe, i: int) -> None:
        ctx.dense = i + 1 < keep  # read by every sparse processor from the next step on

    return hook


# ---- reporting --------------------------------------------------------------------------------------------
def sparsity_report(request, opts, patch=(1, 2, 2), vae_stride=(4, 8), num_layers: int = 30,
                    tile=DEFAULT_TILE) -> dict | None:
    """What the window skips for a request: block sparsity of the mask and the share of all self-attention
    work skipped once dense steps and dense layers are counted. None when sparse attention is off."""
    if opts.sparse_attention == "none":
        return None
    window = parse_window(opts.sparse_window)
    t = (request.num_frames - 1) // vae_stride[0] + 1
    grid = (t // patch[0], request.height // vae_stride[1] // patch[1], request.width // vae_stride[1] // patch[2])
    layout = TileLayout(grid, tile, opts.sparse_layout == "packed")
    mask_sparsity = 1.0 - window_density(layout.tiles, window)
    blocks = (layout.padded_len // layout.tile_tokens) ** 2
    steps = request.num_inference_steps
    dense_steps = dense_steps_for(opts.sparse_dense_steps, steps)
    sparse_layers = max(0, num_layers - opts.sparse_dense_layers)
    effective = mask_sparsity * (steps - dense_steps) / steps * sparse_layers / num_layers
    return {"grid": list(grid), "tiles": list(layout.tiles), "tile": list(tile), "window": list(window),
            "tokens": math.prod(grid), "padded_tokens": layout.padded_len, "mask_sparsity": mask_sparsity,
            "kept_blocks": kept_blocks(layout, window), "blocks": blocks,
            "dense_steps": dense_steps, "steps": steps, "dense_layers": min(num_layers, opts.sparse_dense_layers),
            "layers": num_layers, "effective_sparsity": effective,
            "summary": f"attention {100 * mask_sparsity:.0f} % sparse on {steps - dense_steps} of {steps} steps, "
                       f"{sparse_layers} of {num_layers} layers ({100 * effective:.0f} % of self-attention "
                       f"blocks skipped)"}
