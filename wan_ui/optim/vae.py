"""VAE decode memory: spatial tiling and batch slicing (diffusers AutoencoderKLWan).

Tiles overlap by 64 px (diffusers' default 256 px tile, 192 px stride). Measured on an H200 (2026-11-26, bf16,
random weights, docs/benchmarks/README.md): at `official480` untiled 1.83 s / 5.2 GB, 256 px tiles 4.30 s /
1.6 GB, 512 px tiles 2.47 s / 3.5 GB.
"""

from __future__ import annotations

OVERLAP_PX = 64


def apply_vae(pipe, opts, request=None) -> None:
    if opts.vae_tiling:
        # explicit sizes every time: diffusers' enable_tiling() keeps a previous call's sizes when given none
        tile, stride = opts.vae_tile, opts.vae_tile - OVERLAP_PX
        pipe.vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                               tile_sample_stride_height=stride, tile_sample_stride_width=stride)
    if opts.vae_slicing:
        pipe.vae.enable_slicing()


def remove_vae(pipe) -> None:
    pipe.vae.disable_tiling()
    pipe.vae.disable_slicing()
