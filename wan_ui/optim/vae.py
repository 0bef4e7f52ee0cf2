"""VAE decode memory: spatial tiling and batch slicing (diffusers AutoencoderKLWan).

Tiles overlap by 64 px (diffusers' default 256 px tile, 192 px stride). Tiling trades decode time for peak
memory: larger tiles decode faster and hold more. Channels-last conv weights make the bf16 decode faster; that was
measured with the input latents converted too, and this option converts the weights only, which PyTorch's
memory-format rule follows for cuDNN convolutions. The output differs by about as much as bf16 differs from fp32.
Time, memory and error per variant: docs/benchmarks/README.md, "VAE decode".

Undo: `apply_vae` returns a `VaeUndo` saying what it turned on (and the tile sizes it replaced), or None when it
turns nothing on; `remove_vae` turns exactly that off again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wan_ui.optim.state import Undo, undo_on_error

OVERLAP_PX = 64


@dataclass
class VaeUndo(Undo):
    tile_sizes: tuple | None = None  # the VAE's (min height, min width, stride height, stride width) before tiling
    slicing: bool = False  # slicing was turned on
    channels_last: bool = False  # conv weights were converted to channels-last


def apply_vae(pipe, opts, request=None) -> VaeUndo | None:
    if not (opts.vae_tiling or opts.vae_slicing or opts.vae_channels_last):
        return None
    vae = pipe.vae
    with undo_on_error(pipe, remove_vae, VaeUndo()) as undo:
        if opts.vae_tiling:
            undo.tile_sizes = (vae.tile_sample_min_height, vae.tile_sample_min_width,
                               vae.tile_sample_stride_height, vae.tile_sample_stride_width)
            # explicit sizes every time: diffusers' enable_tiling() keeps a previous call's sizes when given none
            tile, stride = opts.vae_tile, opts.vae_tile - OVERLAP_PX
            vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                              tile_sample_stride_height=stride, tile_sample_stride_width=stride)
        if opts.vae_slicing:
            undo.slicing = True
            vae.enable_slicing()
        if opts.vae_channels_last:
            undo.channels_last = True
            conv_weights_to(vae, torch.channels_last_3d)
    return undo


def remove_vae(pipe, undo: VaeUndo) -> None:
    if undo.tile_sizes is not None:
        pipe.vae.enable_tiling(*undo.tile_sizes)  # the VAE's own sizes back, then tiling off
        pipe.vae.disable_tiling()
    if undo.slicing:
        pipe.vae.disable_slicing()
    if undo.channels_last:
        conv_weights_to(pipe.vae, torch.contiguous_format)


def conv_weights_to(vae, memory_format) -> int:
    """Every Conv3d weight in `memory_format` (values unchanged; `Module.to(memory_format=...)` refuses the VAE's
    non-5D parameters). Returns how many were converted."""
    n = 0
    for m in vae.modules():
        if isinstance(m, torch.nn.Conv3d) and not m.weight.is_contiguous(memory_format=memory_format):
            m.weight.data = m.weight.data.contiguous(memory_format=memory_format)
            n += 1
    return n
