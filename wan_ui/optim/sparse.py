"""Training-free sparse self-attention: a 3D sliding tile window (Sliding Tile Attention style) on FlexAttention.

Wan's self-attention (`attn1`) sees every token of the video: 87,750 tokens at the `report` size, where it takes
most of a dense forward's time (docs/benchmarks/README.md, "Where the time goes"). Sliding Tile Attention (Zhang et
al., arXiv 2502.04507) keeps, for each query tile, only the key tiles within a 3D window. Here:
  1. tokens (B, L, H, D), laid out frame-major over the patch grid (T, Hp, Wp), are padded to whole tiles and
     reordered tile-major, so one tile of `tile` = (1, 8, 16) patches = 128 tokens is one FlexAttention block;
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
    grid: tuple[int, int, int]  # (T, Hp, Wp) patches, frame-major token order
    tile: tuple[int, int, int] = DEFAULT_TILE  # patches per tile in (t, h, w)

    @property
    def tiles(self) -> tuple[int, int, int]:
        return tuple(-(-g // t) for g, t in zip(self.grid, self.tile))

    @property
    def tile_tokens(self) -> int:
        return math.prod(self.tile)

    @property
    def padded_len(self) -> int:
        return math.prod(self.tiles) * self.tile_tokens

    def to_tiles(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) frame-major -> (B, Lp, ...) tile-major, zero-padded to whole tiles."""
        (T, H, W), (nt, nh, nw), (tt, th, tw) = self.grid, self.tiles, self.tile
        b, rest = x.shape[0], x.shape[2:]
        x = x.reshape(b, T, H, W, -1)
        x = torch.nn.functional.pad(x, (0, 0, 0, nw * tw - W, 0, nh * th - H, 0, nt * tt - T))
        x = x.reshape(b, nt, tt, nh, th, nw, tw, -1).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return x.reshape(b, self.padded_len, *rest)

    def from_tiles(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_tiles`: (B, Lp, ...) tile-major -> (B, L, ...) frame-major, padding dropped."""
        (T, H, W), (nt, nh, nw), (tt, th, tw) = self.grid, self.tiles, self.tile
        b, rest = x.shape[0], x.shape[2:]
        x = x.reshape(b, nt, nh, nw, tt, th, tw, -1).permute(0, 1, 4, 2, 5, 3, 6, 7)
        x = x.reshape(b, nt * tt, nh * th, nw * tw, -1)[:, :T, :H, :W]
        return x.reshape(b, T * H * W, *rest)


def tile_window_mask_mod(layout: TileLayout, window: tuple[int, int, int]):
    """mask_mod(b, h, q_idx, kv_idx) over tile-major indices: key tile within `window` tiles and not padding."""
    (T, H, W), (_, nh, nw), (tt, th, tw) = layout.grid, layout.tiles, layout.tile
    n, wt, wh, ww = layout.tile_tokens, *window

    def coords(idx):
        tile, off = idx // n, idx % n
        return tile // (nh * nw), (tile // nw) % nh, tile % nw, off // (th * tw), (off // tw) % th, off % tw

    def mask_mod(b, h, q_idx, kv_idx):
        qt, qh, qw, _, _, _ = coords(q_idx)
        kt, kh, kw, dt, dh, dw = coords(kv_idx)
        near = ((qt - kt).abs() <= wt) & ((qh - kh).abs() <= wh) & ((qw - kw).abs() <= ww)
        real = (kt * tt + dt < T) & (kh * th + dh < H) & (kw * tw + dw < W)
        return near & real

    return mask_mod


def build_block_mask(layout: TileLayout, window: tuple[int, int, int], device):
    device = torch.device(device)
    # The eager path evaluates the full L x L mask (out of memory at 87,750 tokens): compile it on CUDA.
    return create_block_mask(tile_window_mask_mod(layout, window), None, None, layout.padded_len,
                             layout.padded_len, device=device, BLOCK_SIZE=layout.tile_tokens,
                             _compile=device.type == "cuda")


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


def sparse_attention(q, k, v, layout: TileLayout, block_mask, kernel: str = "triton") -> torch.Tensor:
    """q, k, v (B, L, H, D) frame-major -> (B, L, H, D), attention restricted to the tile window."""
    # (B, H, Lp, D), contiguous: inductor's CPU flex lowering fails on these views otherwise (torch 2.14); in a
    # compiled block the pad, reorder and transpose fuse into one copy
    q, k, v = (layout.to_tiles(t).transpose(1, 2).contiguous() for t in (q, k, v))
    out = _flex(q, k, v, block_mask, kernel).transpose(1, 2)  # (B, Lp, H, D)
    return layout.from_tiles(out)


# ---- the processor and its shared schedule ------------------------------------------------------------
@dataclass
class SparseContext:
    """Shared by every sparse processor of one pipeline: the window, the current step's mode, the mask."""

    window: tuple[int, int, int]
    tile: tuple[int, int, int] = DEFAULT_TILE
    kernel: str = "triton"  # `sparse_kernel`: FlexAttention's backend
    dense: bool = False  # flipped per step by the step hook
    layout: TileLayout | None = None
    block_mask: object = None
    masks: dict = field(default_factory=dict)  # (grid, window, tile, device) -> BlockMask

    def prepare(self, grid: tuple[int, int, int], device) -> None:
        """Select (build once) the BlockMask for a patch grid; called outside the compiled blocks."""
        key = (tuple(grid), self.window, self.tile, str(torch.device(device)))
        if key not in self.masks:
            self.masks[key] = build_block_mask(TileLayout(tuple(grid), self.tile), self.window, device)
        self.layout, self.block_mask = TileLayout(tuple(grid), self.tile), self.masks[key]


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
        out = sparse_attention(q, k, v, layout, self.ctx.block_mask, self.ctx.kernel).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


# ---- the catalogue verbs --------------------------------------------------------------------------------
@dataclass
class SparseUndo(Undo):
    context: SparseContext  # shared by the installed processors; generate.py prepares it per request
    processors: dict[int, object] = field(default_factory=dict)  # block index -> the attn1 processor replaced


def apply_sparse(pipe, opts, request=None) -> SparseUndo | None:
    if opts.sparse_attention == "none":
        return None
    ctx = SparseContext(parse_window(opts.sparse_window), DEFAULT_TILE, kernel=opts.sparse_kernel)
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
    return (opts.sparse_attention, opts.sparse_window, opts.sparse_dense_layers, opts.sparse_kernel)


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
    layout = TileLayout(grid, tile)
    mask_sparsity = 1.0 - window_density(layout.tiles, window)
    steps = request.num_inference_steps
    dense_steps = dense_steps_for(opts.sparse_dense_steps, steps)
    sparse_layers = max(0, num_layers - opts.sparse_dense_layers)
    effective = mask_sparsity * (steps - dense_steps) / steps * sparse_layers / num_layers
    return {"grid": list(grid), "tiles": list(layout.tiles), "tile": list(tile), "window": list(window),
            "tokens": math.prod(grid), "padded_tokens": layout.padded_len, "mask_sparsity": mask_sparsity,
            "dense_steps": dense_steps, "steps": steps, "dense_layers": min(num_layers, opts.sparse_dense_layers),
            "layers": num_layers, "effective_sparsity": effective,
            "summary": f"attention {100 * mask_sparsity:.0f} % sparse on {steps - dense_steps} of {steps} steps, "
                       f"{sparse_layers} of {num_layers} layers ({100 * effective:.0f} % of self-attention "
                       f"blocks skipped)"}
