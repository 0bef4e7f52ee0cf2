"""VAE decode memory: spatial tiling and batch slicing (diffusers AutoencoderKLWan)."""

from __future__ import annotations


def apply_vae(pipe, opts, request=None) -> None:
    if opts.vae_tiling:
        pipe.vae.enable_tiling()
    if opts.vae_slicing:
        pipe.vae.enable_slicing()


def remove_vae(pipe) -> None:
    pipe.vae.disable_tiling()
    pipe.vae.disable_slicing()
