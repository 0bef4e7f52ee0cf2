import dataclasses

from wan_ui.core.lowvram import plan_low_vram
from wan_ui.core.options import check_compatible
from wan_ui.core.requests import WORKLOADS

R480 = WORKLOADS["official480"].request
REPORT = WORKLOADS["report"].request


def test_plan_follows_free_memory():
    big = plan_low_vram(80_000, R480)
    assert big.options.offload == "none" and "fits" in big.reason
    mid = plan_low_vram(16_000, R480)
    assert mid.options.offload == "model" and mid.options.vae_tiling
    small = plan_low_vram(6_000, R480)
    assert small.options.offload == "group_block" and "group offload" in small.reason
    for p in (big, mid, small):
        check_compatible(p.options)
        assert p.options.precision == "bf16"


def test_larger_videos_need_leaner_plans():
    assert plan_low_vram(16_000, R480).options.offload == "model"
    assert plan_low_vram(16_000, REPORT).options.offload == "group_block"
    assert plan_low_vram(4_000, REPORT).estimated_peak_mb > plan_low_vram(4_000, R480).estimated_peak_mb
    tiny = dataclasses.replace(R480, width=64, height=64, num_frames=9)
    assert plan_low_vram(16_000, tiny).estimated_peak_mb > 0


def test_too_little_or_unknown_memory_says_so():
    low = plan_low_vram(1_000, REPORT)
    assert low.options.offload == "group_block" and "below the leanest plan" in low.reason
    unknown = plan_low_vram(None, R480)
    assert unknown.options.offload == "group_block" and "no GPU reading" in unknown.reason


def test_smallest_cards_get_the_smaller_decode_tiles():
    roomy = plan_low_vram(6_000, R480)  # 512 px tiles fit (decode phase 2.8 GB x 1.15 + 2 GiB)
    assert roomy.options.offload == "group_block" and roomy.options.vae_tile == 512 and "512 px" in roomy.reason
    assert "fits" in roomy.reason
    tight = plan_low_vram(4_800, R480)  # only 256 px tiles fit (text encode phase 2.31 GB x 1.15 + 2 GiB)
    assert tight.options.offload == "group_block" and tight.options.vae_tile == 256 and "256 px" in tight.reason
    assert "fits" in tight.reason and tight.estimated_peak_mb < roomy.estimated_peak_mb


def test_bigger_tiles_never_look_leaner_at_any_size():
    from wan_ui.core.lowvram import PLANS, estimate_peak_mb

    (_, _, tiles512), (_, _, tiles256) = PLANS[-2], PLANS[-1]
    for tokens in (8_000, 32_760, 87_750, 200_000):
        assert estimate_peak_mb(tiles512, tokens) >= estimate_peak_mb(tiles256, tokens)


def test_the_sparse_low_vram_preset_keeps_its_sparse_attention_whatever_the_plan():
    for free in (80_000, 16_000, 6_000, None):
        plan = plan_low_vram(free, REPORT, "Low VRAM (sparse)")
        assert plan.options.sparse_attention == "sta" and plan.options.sparse_dense_steps == 2
        assert plan.options.cache_max_skips == 4  # the schedule of "Fast (sparse)", its 1.5x reference
        check_compatible(plan.options)
    assert plan_low_vram(6_000, REPORT).options.sparse_attention == "none"


def test_a_gpu_that_cannot_compile_gets_the_plan_eager_and_is_told():
    """The Low VRAM presets compile their blocks (57.3 s vs 81.4 s eager, `report`, H200); a GPU without Triton or
    older than compute capability 7.0 (GTX 10-series) would fail on first use, so the plan drops compile and says why."""
    from wan_ui.core.hardware import Hardware

    h100 = Hardware(True, "H100", (9, 0), 80_000.0, frozenset({"triton"}))
    pascal = Hardware(True, "GTX 1080", (6, 1), 8_000.0, frozenset({"triton"}))
    no_triton = Hardware(True, "RTX 3060", (8, 6), 12_000.0, frozenset())
    assert plan_low_vram(7_500, REPORT, "Low VRAM (sparse)", h100).options.compile == "regional"
    for hw, words in ((pascal, "compute capability >= 7.0"), (no_triton, "'triton'")):
        plan = plan_low_vram(7_500, REPORT, "Low VRAM (sparse)", hw)
        assert plan.options.compile == "none" and plan.options.offload == "group_block"
        assert "compile off" in plan.reason and words in plan.reason
        check_compatible(plan.options)
