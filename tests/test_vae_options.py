"""The VAE decode options wire diffusers' tiling with our tile size, and group offloading keeps the VAE resident."""

from wan_ui.optim.offload import apply_placement
from wan_ui.optim.vae import OVERLAP_PX, apply_vae, remove_vae
from wan_ui.options import OptimizationSet


def test_tile_size_reaches_the_vae_and_is_not_sticky(manager, smoke_request):
    pipe, _, _ = manager.get("tiny", OptimizationSet(), smoke_request)
    vae = pipe.vae
    try:
        apply_vae(pipe, OptimizationSet().with_(vae_tiling=True, vae_tile=512))
        assert vae.use_tiling and vae.tile_sample_min_height == vae.tile_sample_min_width == 512
        assert vae.tile_sample_stride_height == vae.tile_sample_stride_width == 512 - OVERLAP_PX
        remove_vae(pipe)
        assert not vae.use_tiling
        apply_vae(pipe, OptimizationSet().with_(vae_tiling=True))  # the default again, not the last call's 512
        assert vae.tile_sample_min_height == 256 and vae.tile_sample_stride_height == 192
    finally:
        remove_vae(pipe)


def test_group_offload_keeps_the_vae_on_the_gpu():
    calls = {}

    class Pipe:
        def enable_group_offload(self, **kwargs):
            calls.update(kwargs)

    apply_placement(Pipe(), OptimizationSet().with_(offload="group_leaf"), "cuda")
    assert calls["exclude_modules"] == ["vae"] and calls["offload_type"] == "leaf_level" and calls["use_stream"]
