"""The VAE decode options wire diffusers' tiling with our tile size, and channels-last weights come and go."""

from wan_ui.optim.vae import OVERLAP_PX, apply_vae, remove_vae
from wan_ui.core.options import OptimizationSet


def test_tile_size_reaches_the_vae_and_is_not_sticky(manager, smoke_request):
    pipe, _, _ = manager.get("tiny", OptimizationSet(), smoke_request)
    vae = pipe.vae
    undo = apply_vae(pipe, OptimizationSet().with_(vae_tiling=True, vae_tile=512))
    try:
        assert vae.use_tiling and vae.tile_sample_min_height == vae.tile_sample_min_width == 512
        assert vae.tile_sample_stride_height == vae.tile_sample_stride_width == 512 - OVERLAP_PX
        remove_vae(pipe, undo)
        assert not vae.use_tiling
        undo = apply_vae(pipe, OptimizationSet().with_(vae_tiling=True))  # the default again, not the last 512
        assert vae.tile_sample_min_height == 256 and vae.tile_sample_stride_height == 192
    finally:
        remove_vae(pipe, undo)


def test_channels_last_vae_weights_decode_the_same_video_and_come_back(manager, smoke_request):
    import numpy as np
    import torch

    from wan_ui.core.generate import generate

    base = OptimizationSet().with_(precision="fp32", text_encoder_precision="fp32")
    before = generate(manager, "tiny", smoke_request, base, out_dir=None).frames
    pipe, _, _ = manager.get("tiny", base, smoke_request)
    convs = [m for m in pipe.vae.modules() if isinstance(m, torch.nn.Conv3d)]
    fast = generate(manager, "tiny", smoke_request, base.with_(vae_channels_last=True), out_dir=None).frames
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    assert np.abs(fast.astype(int) - before.astype(int)).max() <= 1  # the same values, other conv kernels
    after = generate(manager, "tiny", smoke_request, base, out_dir=None).frames
    assert all(m.weight.is_contiguous() for m in convs)
    np.testing.assert_array_equal(after, before)
