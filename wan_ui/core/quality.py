"""Quality metrics of a generated video, each defined once here (docs/METRICS.md repeats the definitions).

Every metric has one signature, `compute(frames, prompt, reference) -> float | None`:
  frames    (F, H, W, 3) uint8, the video to score;
  prompt    the text it was generated from;
  reference (F, H, W, 3) uint8 baseline video of the same model and the user's request (no optimizations),
            or None. The user's request is the one asked for: a set that loads a few-step distilled LoRA runs
            with its own steps and guidance (`distilled.request_for_set`), and is still compared with the
            unoptimized video of the steps and guidance the user asked for ("how far is this from what I would
            have got"); `Metrics.reference_steps` / `reference_guidance` record which request that was.
A metric returns None when it does not apply (no reference, one frame) and raises `MetricUnavailable` when its
model's weights cannot be had (offline); `QualityScorer.score` turns that into a null and an
"unavailable: <reason>" note, and every other metric still runs.

Metric models (open_clip, LPIPS) load lazily on first use, after generation, so they never touch the
generation's timed path. `BaselineCache` keeps baseline frames per (model, request) so comparing many
optimization sets runs the baseline once.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wan_ui.core.errors import first_line
from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import validate_request

QUALITY_FIELDS = ("clip_score", "lpips_vs_baseline", "psnr_vs_baseline", "ssim_vs_baseline", "lpips_temporal")

# PSNR of identical frames is +inf, which JSON cannot carry. Per-frame PSNR is capped at 100 dB (MSE below
# 255**2 * 1e-10): the mean of identical videos is exactly 100.0, and any real difference of 8-bit frames up to
# 832x480 scores far lower (one pixel off by one level is ~109 dB, one level everywhere is 48 dB).
PSNR_CAP_DB = 100.0
LPIPS_MIN_SIDE = 64  # px; AlexNet's strides need >= 31 px, and the LPIPS paper scored 64x64 patches
LPIPS_BATCH = 8  # frame pairs per LPIPS forward: bounds CPU/GPU memory on 81-frame 832x480 videos
REASON_CHARS = 240  # hub errors run to paragraphs; the note keeps the first line's gist

RANDOM_MODEL_NOTE = "random-weight model: quality metrics describe noise, not video quality"
RANDOM_METRIC_NOTE = "metric models have random weights (test setup): scores are not real CLIP/LPIPS values"


class MetricUnavailable(RuntimeError):
    """A metric's model weights cannot be loaded (offline, download failed); the message says why."""


@dataclass(frozen=True)
class QualityConfig:
    clip_model: str = "ViT-B-32"  # open_clip architecture
    clip_pretrained: str | None = "laion2b_s34b_b79k"  # open_clip pretrained tag; None = random weights (tests)
    clip_frames: int = 8  # frames sampled evenly (first and last included) for the CLIP score
    lpips_net: str = "alex"  # LPIPS trunk: alex | vgg | squeeze
    lpips_trunk_pretrained: bool = True  # False = random trunk (lpips pnet_rand=True): nothing is downloaded
    cache_dir: str | None = None  # open_clip download cache; None = huggingface_hub's default

    def __post_init__(self):
        if self.clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {self.clip_frames}")
        if self.lpips_net not in _TRUNK_WEIGHTS:
            raise ValueError(f"lpips_net must be one of {sorted(_TRUNK_WEIGHTS)}, got {self.lpips_net!r}")

    @classmethod
    def random_weights(cls, **overrides) -> "QualityConfig":
        """Local random-weight metric models: open_clip `pretrained=None`, LPIPS `pnet_rand=True` (no network)."""
        return replace(cls(clip_pretrained=None, lpips_trunk_pretrained=False), **overrides)

    @property
    def random(self) -> bool:
        return self.clip_pretrained is None or not self.lpips_trunk_pretrained


# torchvision weights that lpips' `tv.alexnet(pretrained=True)` etc. fetch into torch.hub's checkpoint folder
_TRUNK_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def load_clip(cfg: QualityConfig, device: str):
    """(model, preprocess, tokenizer) from open_clip; downloads `cfg.clip_pretrained` unless cached."""
    import open_clip  # heavy, optional: loaded only when quality metrics run

    model, _, preprocess = open_clip.create_model_and_transforms(
        cfg.clip_model, pretrained=cfg.clip_pretrained, device=device, cache_dir=cfg.cache_dir)
    return model.eval(), preprocess, open_clip.get_tokenizer(cfg.clip_model)


def load_lpips(cfg: QualityConfig, device: str) -> torch.nn.Module:
    """lpips.LPIPS with its packaged linear layers (v0.1). The ImageNet trunk comes from torchvision's download
    cache; offline (HF_HUB_OFFLINE=1) and not cached, this fails at once instead of trying the network."""
    import lpips  # heavy, optional: loaded only when quality metrics run
    import torchvision.models as tvm  # LPIPS' backbone, loaded only with it

    if cfg.lpips_trunk_pretrained:
        url = getattr(tvm, _TRUNK_WEIGHTS[cfg.lpips_net]).IMAGENET1K_V1.url
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        if _offline() and not os.path.exists(path):
            raise MetricUnavailable(f"offline (HF_HUB_OFFLINE=1) and the {cfg.lpips_net} ImageNet weights are "
                                    f"not in {os.path.dirname(path)}")
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net=cfg.lpips_net, pnet_rand=not cfg.lpips_trunk_pretrained,
                            verbose=False)
    return model.to(device).eval()


def sample_indices(n_frames: int, k: int) -> list[int]:
    """Up to k evenly spaced frame indices, first and last included: (9, 8) -> [0, 1, 2, 3, 5, 6, 7, 8]."""
    return sorted({int(i) for i in np.linspace(0, n_frames - 1, min(k, n_frames)).round()})


def _check_reference(frames: np.ndarray, reference: np.ndarray) -> None:
    if reference.shape != frames.shape:
        raise ValueError(f"reference video is {reference.shape}, scored video is {frames.shape}: a baseline must "
                         "come from the same request (size, frames)")


def _as_float(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float64 in [0, 255]."""
    return torch.from_numpy(_writable(frames)).permute(0, 3, 1, 2).to(torch.float64)


def _writable(frames: np.ndarray) -> np.ndarray:
    """`frames` as a C-contiguous writable array, copied only when needed: torch.from_numpy warns on read-only
    arrays, and cached baselines are stored read-only (`BaselineCache`)."""
    return np.require(frames, requirements=["C", "W"])


# Pixels per piece of a video for PSNR and SSIM (frames x height x width): a long video never sits in memory as one
# float64 tensor. torchmetrics' SSIM unfolds its 11x11 window on the CPU, ~2.4 KB per pixel in float64 (2.9 GB for
# one 832x480 frame), so a whole 81-frame clip at once needed more host memory than a 128 GB GPU machine has.
# float32 would be 15x lighter but its E[x^2] - E[x]^2 cancels to 1e-5 off (identical videos score 0.99998).
METRIC_PIXELS = 1 << 20


def _pieces(frames: np.ndarray) -> range:
    """Start indices of the pieces of METRIC_PIXELS (at least one frame each)."""
    return range(0, frames.shape[0], max(1, METRIC_PIXELS // (frames.shape[1] * frames.shape[2])))


def psnr_vs_baseline(frames: np.ndarray, prompt: str, reference: np.ndarray | None) -> float | None:
    """Mean over frames of PSNR_i = 10 * log10(255**2 / MSE_i), MSE_i over all pixels and RGB channels of frame i
    against reference frame i (8-bit range, no colour conversion). Each PSNR_i is capped at PSNR_CAP_DB = 100 dB,
    so identical videos score exactly 100.0 (JSON has no infinity). None without a reference."""
    if reference is None:
        return None
    _check_reference(frames, reference)
    pieces = _pieces(frames)
    mse = torch.cat([(_as_float(frames[s:s + pieces.step]) - _as_float(reference[s:s + pieces.step]))
                     .pow(2).mean(dim=(1, 2, 3)) for s in pieces])  # (F,)
    floor = 255.0**2 / 10 ** (PSNR_CAP_DB / 10)  # the MSE at which PSNR reaches the cap
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(floor))
    return float(psnr.mean())


def ssim_vs_baseline(frames: np.ndarray, prompt: str, reference: np.ndarray | None,
                     device: str = "cpu") -> float | None:
    """Mean over frames of SSIM (Wang et al. 2004, https://doi.org/10.1109/TIP.2003.819861) of frame i against
    reference frame i: RGB in [0, 255] (data_range 255), 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
    K2 = 0.03, computed per channel and averaged (torchmetrics `structural_similarity_index_measure`).
    Identical videos score 1.0. None without a reference. Computed in float64 on `device` (the scorer's: on a GPU it
    takes well under a second per clip, on a CPU seconds per 480p frame), METRIC_PIXELS at a time."""
    if reference is None:
        return None
    _check_reference(frames, reference)
    from torchmetrics.functional.image import structural_similarity_index_measure  # only when metrics run

    pieces = _pieces(frames)
    per_frame = torch.cat([structural_similarity_index_measure(
        _as_float(frames[s:s + pieces.step]).to(device), _as_float(reference[s:s + pieces.step]).to(device),
        gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0, k1=0.01, k2=0.03, reduction="none").cpu()
        for s in pieces])  # (F,)
    return float(per_frame.mean())


class QualityScorer:
    """The quality metrics with their models, loaded lazily on `device` on first use (never at construction).

    `clip_loader(cfg, device)` / `lpips_loader(cfg, device)` replace `load_clip` / `load_lpips` (tests inject
    failing ones). A failed load is remembered: the metric stays unavailable, with its reason, for this scorer.
    """

    def __init__(self, config: QualityConfig | None = None, device: str = "cpu",
                 clip_loader: Callable | None = None, lpips_loader: Callable | None = None):
        self.config = config or QualityConfig()
        self.device = device
        self._loaders = {"clip": clip_loader or load_clip, "lpips": lpips_loader or load_lpips}
        self._models: dict[str, object] = {}
        self._failures: dict[str, str] = {}  # model name -> reason it is unavailable
        self._lock = threading.Lock()  # Gradio handlers may score from several threads

    def _model(self, name: str):
        with self._lock:
            if name not in self._models and name not in self._failures:
                try:
                    self._models[name] = self._loaders[name](self.config, self.device)
                except Exception as e:  # no network, missing cache, bad tag: the metric is null, nothing else
                    self._failures[name] = f"{type(e).__name__}: {first_line(e)}"[:REASON_CHARS]
            if name in self._failures:
                raise MetricUnavailable(self._failures[name])
            return self._models[name]

    # 1. the metrics, one signature: compute(frames, prompt, reference) -> float | None

    def clip_score(self, frames: np.ndarray, prompt: str, reference: np.ndarray | None = None) -> float | None:
        """Mean over up to `clip_frames` (8) evenly spaced frames of cos(text_emb(prompt), image_emb(frame)):
        open_clip ViT-B-32 with pretrained tag laion2b_s34b_b79k, each frame through the model's own
        preprocessing (bicubic resize of the short side to 224, centre crop, CLIP normalisation), the prompt through
        its tokenizer (truncated to 77 tokens). Raw cosine in [-1, 1], not x100 and not clamped at 0 (the report's
        ~0.38 values). The reference is not used."""

        model, preprocess, tokenizer = self._model("clip")
        idx = sample_indices(frames.shape[0], self.config.clip_frames)
        images = torch.stack([preprocess(Image.fromarray(frames[i])) for i in idx]).to(self.device)  # (K, 3, 224, 224)
        with torch.inference_mode():
            img = F.normalize(model.encode_image(images).float(), dim=-1)  # (K, D)
            txt = F.normalize(model.encode_text(tokenizer([prompt]).to(self.device)).float(), dim=-1)  # (1, D)
        return float((img @ txt.T).mean())

    def lpips_vs_baseline(self, frames: np.ndarray, prompt: str, reference: np.ndarray | None) -> float | None:
        """Mean over frames of LPIPS(frame_i, reference_i): lpips v0.1, AlexNet trunk ('alex'), inputs scaled to
        [-1, 1]; frames with a side under 64 px are first upscaled (bilinear) so the short side is 64. 0 for identical
        videos; lower = closer to the baseline. None without a reference."""
        if reference is None:
            return None
        _check_reference(frames, reference)
        return float(self._lpips_pairs(frames, reference).mean())

    def lpips_temporal(self, frames: np.ndarray, prompt: str, reference: np.ndarray | None = None) -> float | None:
        """Mean over i of LPIPS(frame_i, frame_i+1), the report's "LPIPS" (consecutive frames of one video, no
        reference), kept for continuity; same LPIPS setup as `lpips_vs_baseline`. 0 for a still video; it measures
        motion as much as flicker. None for a single frame."""
        if frames.shape[0] < 2:
            return None
        return float(self._lpips_pairs(frames[:-1], frames[1:]).mean())

    # model-free: the module's functions, so the scorer offers all five under one signature
    psnr_vs_baseline = staticmethod(psnr_vs_baseline)

    def ssim_vs_baseline(self, frames: np.ndarray, prompt: str, reference: np.ndarray | None) -> float | None:
        return ssim_vs_baseline(frames, prompt, reference, self.device)

    def _lpips_pairs(self, a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        """LPIPS of each pair (a_i, b_i), (N,) float32, in batches of LPIPS_BATCH."""
        model = self._model("lpips")
        out = []
        with torch.inference_mode():
            for s in range(0, a.shape[0], LPIPS_BATCH):
                x, y = (self._lpips_input(v[s:s + LPIPS_BATCH]) for v in (a, b))
                out.append(model(x, y).flatten().float().cpu())
        return torch.cat(out)

    def _lpips_input(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, H', W') float32 in [-1, 1], short side >= LPIPS_MIN_SIDE."""
        x = torch.from_numpy(_writable(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        short = min(x.shape[-2:])
        if short < LPIPS_MIN_SIDE:
            scale = LPIPS_MIN_SIDE / short
            size = (math.ceil(x.shape[-2] * scale), math.ceil(x.shape[-1] * scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x.to(self.device)

    # 2. all of them at once

    def score(self, frames: np.ndarray, prompt: str, reference: np.ndarray | None = None) -> tuple[dict, list[str]]:
        """({field: value or None} for QUALITY_FIELDS, notes). One note per unavailable model:
        "<fields> unavailable: <reason>"."""
        values, unavailable = {}, {}
        for name in QUALITY_FIELDS:
            try:
                values[name] = getattr(self, name)(frames, prompt, reference)
            except MetricUnavailable as e:
                values[name] = None
                unavailable.setdefault(str(e), []).append(name)
        notes = [f"{', '.join(names)} unavailable: {reason}" for reason, names in unavailable.items()]
        return values, notes


def score_result(result, scorer: QualityScorer | None = None, reference: np.ndarray | None = None,
                 reference_request=None):
    """Fill `result.metrics`' quality fields in place (and return the metrics). Call it after `generate` returns:
    nothing here is timed. `reference` is the baseline's frames (see `BaselineCache`), generated from
    `reference_request` (default: the run's own request), whose steps and guidance land in
    `reference_steps` / `reference_guidance`; without a reference the *_vs_baseline fields and those two stay
    None. `quality_note` says which metrics are unavailable and why, and flags random weights (of the video model
    or of the metric models). Without `scorer` a default one is built for this call (the CLI's single run); the
    app and the benchmark keep one scorer so its models load once."""
    scorer = scorer or QualityScorer()
    values, notes = scorer.score(result.frames, result.request.prompt, reference)
    m = result.metrics
    for name, value in values.items():
        setattr(m, name, value)
    asked = (reference_request or result.request) if reference is not None else None
    m.reference_steps = asked.num_inference_steps if asked else None
    m.reference_guidance = asked.guidance_scale if asked else None
    parts = []
    if result.build.random_weights:
        parts.append(RANDOM_MODEL_NOTE)
    if scorer.config.random:
        parts.append(RANDOM_METRIC_NOTE)
    m.quality_note = "; ".join(parts + notes) or None
    return m


class BaselineCache:
    """Baseline frames (no optimizations) per (model, request), least recently used dropped beyond `max_entries`.

    Owned by whoever compares runs (the app's manager holder, the benchmark); one 81-frame 832x480 video is
    ~97 MB, hence the small bound. Frames are stored read-only. `model` is the resolved name (`result.build.model`).
    """

    # the request fields that define the video (fps only affects the mp4, notes are commentary)
    KEY_FIELDS = ("prompt", "negative_prompt", "width", "height", "num_frames", "seed", "guidance_scale",
                  "num_inference_steps")

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()

    @classmethod
    def key(cls, model: str, request) -> tuple:
        request = validate_request(request)  # 24 frames and 25 frames are the same video
        return (model,) + tuple(getattr(request, f) for f in cls.KEY_FIELDS)

    def get(self, model: str, request) -> np.ndarray | None:
        key = self.key(model, request)
        if key in self._entries:
            self._entries.move_to_end(key)
        return self._entries.get(key)

    def put(self, model: str, request, frames: np.ndarray) -> np.ndarray:
        frames = np.array(frames, copy=True)
        frames.setflags(write=False)
        key = self.key(model, request)
        self._entries[key] = frames
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return frames

    def get_or_run(self, model: str, request, run: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached baseline, or `run()`'s frames, stored."""
        frames = self.get(model, request)
        return frames if frames is not None else self.put(model, request, run())

    def __len__(self) -> int:
        return len(self._entries)


def baseline_frames(manager, model: str | None, request, cache: BaselineCache) -> np.ndarray:
    """The baseline video (empty `OptimizationSet`) of `model` and `request` (the user's request, not a distilled
    set's), generated once per cache key. The manager rebuilds if the current pipeline's load-time options
    differ; no file is written."""

    def run() -> np.ndarray:
        return generate(manager, model, request, OptimizationSet(), out_dir=None).frames

    return cache.get_or_run(manager.key(model, OptimizationSet())[0], request, run)
