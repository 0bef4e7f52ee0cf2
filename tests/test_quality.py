"""Quality metrics against synthetic truth, on local random-weight metric models (never the network)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wan_ui.core import quality
from wan_ui.core.quality import (PSNR_CAP_DB, BaselineCache, MetricUnavailable, QualityConfig, QualityScorer,
                            baseline_frames, psnr_vs_baseline, sample_indices, score_result, ssim_vs_baseline)

PROMPT = "a red ball on a green lawn"


def _video(frames: int = 4, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth moving pattern (F, H, W, 3) uint8 in [40, 215], so small noise is never clipped."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * np.pi, 3)
    out = np.empty((frames, h, w, 3), np.uint8)
    for f in range(frames):
        for c in range(3):
            wave = np.sin(2 * np.pi * (3 * xx + 2 * yy) + phase[c] + 0.4 * f)
            out[f, :, :, c] = np.round(127.5 + 87.5 * wave)
    return out


def _noisy(video: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(video + rng.normal(0, sigma, video.shape), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def scorer():
    return QualityScorer(QualityConfig.random_weights(clip_frames=3))  # 3 frames: CLIP on 2 CPU cores is slow


def _failing(cfg, device):
    raise OSError("no route to host\nsecond line of a long hub error")


# ---- LPIPS ----------------------------------------------------------------------------------------

def test_lpips_identical_is_zero_and_grows_with_noise(scorer):
    video = _video()
    assert scorer.lpips_vs_baseline(video, PROMPT, video) == pytest.approx(0.0, abs=1e-7)
    scores = [scorer.lpips_vs_baseline(_noisy(video, s), PROMPT, video) for s in (4, 16, 48)]
    assert 0 < scores[0] < scores[1] < scores[2], scores


def test_lpips_handles_frames_smaller_than_alexnet_needs(scorer):
    small = _video(2, 16, 32)  # AlexNet alone fails under 31 px; frames are upscaled first
    assert scorer.lpips_vs_baseline(small, PROMPT, small) == pytest.approx(0.0, abs=1e-7)
    assert scorer.lpips_vs_baseline(_noisy(small, 30), PROMPT, small) > 0


def test_lpips_temporal_zero_for_still_video_and_grows_with_change(scorer):
    still = np.repeat(_video(1), 4, axis=0)
    assert scorer.lpips_temporal(still, PROMPT, None) == pytest.approx(0.0, abs=1e-7)
    frame = _video(1)[0]
    calm = np.stack([frame, _noisy(frame[None], 8, 2)[0], frame])
    wild = np.stack([frame, _noisy(frame[None], 60, 2)[0], frame])
    assert 0 < scorer.lpips_temporal(calm, PROMPT, None) < scorer.lpips_temporal(wild, PROMPT, None)
    assert scorer.lpips_temporal(still[:1], PROMPT, None) is None  # one frame: no pairs


def test_reference_of_another_shape_is_an_error(scorer):
    with pytest.raises(ValueError, match="same request"):
        scorer.lpips_vs_baseline(_video(4), PROMPT, _video(5))
    with pytest.raises(ValueError):
        psnr_vs_baseline(_video(4, 64, 64), PROMPT, _video(4, 32, 64))


# ---- PSNR / SSIM ----------------------------------------------------------------------------------

def test_psnr_identical_is_the_documented_cap_and_known_mse_matches_formula():
    video = _video()
    assert psnr_vs_baseline(video, PROMPT, video) == PSNR_CAP_DB
    shifted = video + np.uint8(10)  # values <= 215: no wrap; MSE = 100 exactly
    assert psnr_vs_baseline(shifted, PROMPT, video) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-9)
    # mean over frames, not PSNR of the pooled MSE: one identical frame (capped) + one at MSE 100
    half = video[:2].copy()
    half[1] += np.uint8(10)
    expected = (PSNR_CAP_DB + 10 * math.log10(255**2 / 100)) / 2
    assert psnr_vs_baseline(half, PROMPT, video[:2]) == pytest.approx(expected, abs=1e-9)


def test_psnr_and_ssim_of_a_long_video_are_the_mean_of_its_frames(monkeypatch):
    """Videos over METRIC_PIXELS are scored piecewise: every frame counts once, with equal weight, as if whole."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    monkeypatch.setattr(quality, "METRIC_PIXELS", 3 * 32 * 48)  # pieces of 3 frames
    frames = 3 * 2 + 2  # two whole pieces and a short one
    video = _video(frames, 32, 48)
    noisy = np.concatenate([_noisy(video[:frames // 2], 4), _noisy(video[frames // 2:], 24)])
    per_psnr = [psnr_vs_baseline(noisy[i:i + 1], PROMPT, video[i:i + 1]) for i in range(frames)]
    assert psnr_vs_baseline(noisy, PROMPT, video) == pytest.approx(np.mean(per_psnr), abs=1e-9)
    as64 = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).double()  # noqa: E731
    whole = structural_similarity_index_measure(as64(noisy), as64(video), gaussian_kernel=True, sigma=1.5,
                                                kernel_size=11, data_range=255.0, k1=0.01, k2=0.03)
    assert ssim_vs_baseline(noisy, PROMPT, video) == pytest.approx(float(whole), abs=1e-9)


def test_psnr_and_ssim_decrease_with_noise():
    video = _video()
    psnr = [psnr_vs_baseline(_noisy(video, s), PROMPT, video) for s in (2, 8, 32)]
    ssim = [ssim_vs_baseline(_noisy(video, s), PROMPT, video) for s in (2, 8, 32)]
    assert PSNR_CAP_DB > psnr[0] > psnr[1] > psnr[2] > 0, psnr
    assert 1.0 > ssim[0] > ssim[1] > ssim[2], ssim


def test_ssim_identical_is_one_and_flat_images_match_the_closed_form():
    video = _video()
    assert ssim_vs_baseline(video, PROMPT, video) == pytest.approx(1.0, abs=1e-9)
    # flat images: variances and covariance are 0, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    a, b = np.full((2, 32, 32, 3), 100, np.uint8), np.full((2, 32, 32, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim_vs_baseline(a, PROMPT, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-9)


def test_no_reference_leaves_baseline_metrics_none(scorer):
    video = _video()
    assert psnr_vs_baseline(video, PROMPT, None) is None
    assert ssim_vs_baseline(video, PROMPT, None) is None
    assert scorer.lpips_vs_baseline(video, PROMPT, None) is None


# ---- CLIP -----------------------------------------------------------------------------------------

def test_sample_indices_even_and_bounded():
    assert sample_indices(9, 8) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert sample_indices(81, 8) == [0, 11, 23, 34, 46, 57, 69, 80]
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(1, 8) == [0]


def test_clip_score_is_a_cosine_and_deterministic(scorer):
    video = _video(3)
    score = scorer.clip_score(video, PROMPT, None)
    assert -1.0 <= score <= 1.0
    assert scorer.clip_score(video.copy(), PROMPT, None) == score  # equal inputs, equal score


class _FakeClip:
    """Image embedding = (mean R, mean G, mean B) of the preprocessed image; text embedding = (1, 0, 0) * 7."""

    def encode_image(self, images):  # (K, 3, h, w) -> (K, 3)
        return images.mean(dim=(2, 3))

    def encode_text(self, tokens):  # (1, T) -> (1, 3)
        return torch.tensor([[7.0, 0.0, 0.0]]).expand(tokens.shape[0], 3)


def test_clip_score_definition_with_a_fake_model():
    """Mean over the sampled frames of the raw cosine between L2-normalised embeddings."""
    fake = (_FakeClip(), lambda img: torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1),
            lambda texts: torch.zeros(len(texts), 5, dtype=torch.long))
    s = QualityScorer(QualityConfig.random_weights(clip_frames=2), clip_loader=lambda cfg, device: fake)
    video = np.zeros((5, 4, 4, 3), np.uint8)
    video[0] = (3, 4, 0)  # cos to (1, 0, 0) = 0.6; frame 4 is sampled too
    video[4] = (0, 0, 9)  # cos = 0; frames 1-3 (not sampled with clip_frames=2) would pull it to 1/sqrt(3)
    video[1:4] = (1, 1, 1)
    assert s.clip_score(video, PROMPT, None) == pytest.approx(0.3, abs=1e-6)
    video[4] = (200, 0, 0)  # cos = 1; no clamping, no x100
    assert s.clip_score(video, PROMPT, None) == pytest.approx(0.8, abs=1e-6)


def test_lpips_inputs_are_scaled_to_minus_one_one_and_upscaled():
    seen = []

    def fake_lpips(x, y):  # records what LPIPS is fed; returns mean |x - y| per pair, (N, 1, 1, 1)
        seen.extend((tuple(v.shape), float(v.min()), float(v.max())) for v in (x, y))
        return (x - y).abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)

    s = QualityScorer(QualityConfig.random_weights(), lpips_loader=lambda cfg, device: fake_lpips)
    black, white = np.zeros((1, 16, 32, 3), np.uint8), np.full((1, 16, 32, 3), 255, np.uint8)
    assert s.lpips_vs_baseline(black, PROMPT, white) == pytest.approx(2.0)  # |-1 - 1|
    assert seen == [((1, 3, 64, 128), -1.0, -1.0), ((1, 3, 64, 128), 1.0, 1.0)]  # short side 16 -> 64


# ---- unavailable weights --------------------------------------------------------------------------

def test_failing_loader_gives_none_and_note_and_the_rest_still_works(scorer):
    calls = []

    def failing(cfg, device):
        calls.append(1)
        _failing(cfg, device)

    broken = QualityScorer(QualityConfig.random_weights(), clip_loader=failing,
                           lpips_loader=lambda cfg, device: scorer._model("lpips"))
    assert calls == []  # lazy: nothing loads at construction
    video = _video()
    for _ in range(2):
        values, notes = broken.score(video, PROMPT, video)
        assert values["clip_score"] is None
        assert values["psnr_vs_baseline"] == PSNR_CAP_DB and values["lpips_vs_baseline"] == pytest.approx(0, abs=1e-7)
        assert notes == ["clip_score unavailable: OSError: no route to host"]
    assert calls == [1]  # the failure is remembered, not retried per video
    with pytest.raises(MetricUnavailable, match="no route to host"):
        broken.clip_score(video, PROMPT, None)


def test_offline_pretrained_weights_are_unavailable_not_fetched(tmp_path, monkeypatch):
    """The real loaders, offline with empty caches: open_clip's hub download and torchvision's AlexNet fail."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    offline = QualityScorer(QualityConfig(cache_dir=str(tmp_path / "clip")))
    values, notes = offline.score(_video(2), PROMPT, _video(2))
    assert values["clip_score"] is None and values["lpips_vs_baseline"] is None and values["lpips_temporal"] is None
    assert values["psnr_vs_baseline"] == PSNR_CAP_DB and values["ssim_vs_baseline"] == pytest.approx(1.0)
    assert len(notes) == 2 and all("unavailable:" in n for n in notes), notes
    assert any(n.startswith("lpips_vs_baseline, lpips_temporal unavailable:") and "HF_HUB_OFFLINE" in n
               for n in notes), notes
    assert not (tmp_path / "torch" / "hub" / "checkpoints").exists()  # no download was attempted


# ---- score_result on a real generation, baseline cache ---------------------------------------------

def test_score_result_on_tiny_generation(manager, smoke_request, scorer):
    from wan_ui.core.generate import generate
    from wan_ui.core.options import OptimizationSet

    result = generate(manager, "tiny", smoke_request, OptimizationSet(), out_dir=None)
    latency = result.metrics.clip_latency_s
    m = score_result(result, scorer, reference=result.frames.copy())
    assert m is result.metrics and m.clip_latency_s == latency  # quality scoring is off the timed path
    assert m.psnr_vs_baseline == PSNR_CAP_DB and m.ssim_vs_baseline == pytest.approx(1.0)
    assert m.lpips_vs_baseline == pytest.approx(0.0, abs=1e-7)
    assert -1.0 <= m.clip_score <= 1.0 and m.lpips_temporal >= 0.0
    assert "random-weight model" in m.quality_note and "metric models have random weights" in m.quality_note
    json.dumps(result.to_json(), allow_nan=False)  # the --json output stays valid JSON

    noisy = _noisy(result.frames, 20)
    m = score_result(result, scorer, reference=noisy)
    assert m.psnr_vs_baseline < PSNR_CAP_DB and m.ssim_vs_baseline < 1.0 and m.lpips_vs_baseline > 0
    m = score_result(result, scorer)
    assert m.psnr_vs_baseline is None and m.ssim_vs_baseline is None and m.lpips_vs_baseline is None


def test_baseline_cache_keys_bound_and_read_only(smoke_request):
    from dataclasses import replace

    cache = BaselineCache(max_entries=2)
    runs = []

    def run(value):
        return lambda: runs.append(value) or np.full((1, 4, 4, 3), value, np.uint8)

    first = cache.get_or_run("tiny", smoke_request, run(1))
    # fps and notes do not define the video; 8 frames snaps to the same 9 as the request
    same = replace(smoke_request, fps=24, num_frames=8)
    assert cache.get_or_run("tiny", same, run(2)) is first and runs == [1]
    assert not first.flags.writeable
    cache.get_or_run("tiny", replace(smoke_request, seed=1), run(3))
    assert cache.get("tiny", smoke_request) is first  # seed 0 is now the most recently used
    cache.get_or_run("other", smoke_request, run(4))  # evicts the least recently used: seed 1
    assert runs == [1, 3, 4] and len(cache) == 2
    assert cache.get("tiny", replace(smoke_request, seed=1)) is None
    assert cache.get("tiny", smoke_request)[0, 0, 0, 0] == 1


def test_baseline_frames_generates_once(manager, smoke_request):
    cache = BaselineCache()
    a = baseline_frames(manager, "tiny", smoke_request, cache)
    builds = manager.builds
    b = baseline_frames(manager, "tiny", smoke_request, cache)
    assert a is b and manager.builds == builds and len(cache) == 1
    assert a.shape == (smoke_request.num_frames, smoke_request.height, smoke_request.width, 3)


def test_score_result_records_which_request_the_reference_ran(scorer, smoke_request):
    """A distilled run (4 steps, CFG 1) scored against the video of the user's request records that request's
    steps and CFG; without a reference both stay null."""
    from dataclasses import replace
    from types import SimpleNamespace

    from wan_ui.core.metrics import Metrics

    video = _noisy(np.full((3, 64, 64, 3), 128, np.uint8), 30)
    run = SimpleNamespace(frames=video, request=replace(smoke_request, num_inference_steps=4, guidance_scale=1.0),
                          metrics=Metrics(), build=SimpleNamespace(random_weights=True))
    m = score_result(run, scorer, reference=_noisy(video, 10), reference_request=smoke_request)
    assert (m.reference_steps, m.reference_guidance) == (smoke_request.num_inference_steps,
                                                        smoke_request.guidance_scale) == (2, 6.0)
    m = score_result(run, scorer, reference=video)  # the run's own request by default
    assert (m.reference_steps, m.reference_guidance) == (4, 1.0) and m.psnr_vs_baseline == PSNR_CAP_DB
    m = score_result(run, scorer)
    assert m.reference_steps is None and m.reference_guidance is None and m.psnr_vs_baseline is None
