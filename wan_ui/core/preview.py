"""Live preview: the video forming while it denoises, from a cheap linear map of the latents to RGB.

Wan 2.1's VAE has 16 latent channels at 1/8 of the size and 1/4 of the frame rate. Near each latent pixel the
decoded colour is, to a first approximation, an affine function of those 16 channels, so a 16x3 matrix and a bias
turn a latent frame into a small RGB frame with one matrix product — about a millisecond at 480p, against seconds for
a VAE decode.

How the map is fitted, once per loaded pipeline (so it matches the weights in use, real or random): 24 synthetic
64x64 images (12 flat colours and 12 smooth random colour fields) are encoded by the pipeline's own VAE encoder
(the mode of its latent distribution, no sampling), and the least-squares fit maps each 16-channel latent pixel to
the mean colour of the 8x8 image block it covers. The fit takes one small VAE encode (well under a second on a
GPU). The preview only reads the latents: the final video is bit-identical with it on or off (tested).

With `vae_decoder=tiny` on a GPU the preview comes from the tiny decoder instead (each shown latent frame decoded
alone, then shrunk to the linear map's size): real decoded colours and detail for milliseconds a tick. On a CPU the
linear map stays: there the tiny decoder takes seconds per preview even at the tiny model's size (measured:
docs/benchmarks/README.md, "Tiny decoder"), longer than the steps it would show.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wan_ui.core.tiny_vae import SPACE_FACTOR, TinyVideoDecoder
from wan_ui.optim.tiny_decoder import tiny_decoder_of

FIT_SIZE = 64  # pixels per side of the synthetic fitting images (8 x 8 latent pixels each)
FIT_IMAGES = 24  # 12 flat colours + 12 smooth fields: 1,536 latent pixels for 17 unknowns per colour channel
PREVIEW_FRAMES = 4  # frames shown side by side (first, middle ones, last latent frame)


@dataclass(frozen=True)
class LatentToRGB:
    """An affine map from the pipeline's normalized latents (B, 16, T, h, w) to RGB in [0, 1]."""

    weight: torch.Tensor  # (3, 16), applied to the VAE's raw (de-normalized) latent channels
    bias: torch.Tensor  # (3,)
    mean: torch.Tensor  # (16,) the VAE config's latents_mean: the pipeline's latents are (z - mean) / std
    std: torch.Tensor  # (16,) the VAE config's latents_std

    def frames(self, latents: torch.Tensor, count: int = PREVIEW_FRAMES) -> np.ndarray:
        """(B, 16, T, h, w) -> (n, h, w, 3) uint8 for up to `count` latent frames spread over T."""
        x = latents[0].detach().float().cpu()  # (16, T, h, w)
        picks = picked_frames(x.shape[1], count)
        z = x[:, picks] * self.std.view(-1, 1, 1, 1) + self.mean.view(-1, 1, 1, 1)
        rgb = torch.einsum("ck,kthw->thwc", self.weight, z) + self.bias
        return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    def strip(self, latents: torch.Tensor, scale: int = 2) -> np.ndarray:
        """The preview image: the picked frames side by side, each upscaled `scale` x (nearest), 2 px apart."""
        return side_by_side(self.frames(latents), scale)


def picked_frames(latent_frames: int, count: int = PREVIEW_FRAMES) -> list[int]:
    """Up to `count` latent frame indices spread over the video, first and last included."""
    return sorted({round(i * (latent_frames - 1) / max(count - 1, 1)) for i in range(count)})


def side_by_side(frames: np.ndarray, scale: int) -> np.ndarray:
    """(n, h, w, 3) uint8 -> one image: the frames side by side, each upscaled `scale` x (nearest), 2 px apart."""
    n, h, w, _ = frames.shape
    gap = 2
    out = np.full((h * scale, n * w * scale + (n - 1) * gap, 3), 255, np.uint8)
    for i, frame in enumerate(frames):
        big = frame.repeat(scale, axis=0).repeat(scale, axis=1)
        out[:, i * (w * scale + gap): i * (w * scale + gap) + w * scale] = big
    return out


@dataclass(frozen=True)
class TinyDecoderPreview:
    """Preview frames from the tiny decoder (`vae_decoder=tiny`): the same strip as LatentToRGB's, decoded."""

    decoder: TinyVideoDecoder

    def frames(self, latents: torch.Tensor, count: int = PREVIEW_FRAMES) -> np.ndarray:
        """(B, 16, T, h, w) -> (n, 2h, 2w, 3) uint8: each picked latent frame decoded alone (a batch of one-frame
        videos: no memory of the frames between), its frame at 8x shrunk 4x by averaging."""
        z = latents[0].detach()  # (16, T, h, w)
        picks = picked_frames(z.shape[1], count)
        video = self.decoder.decode(z[:, picks].transpose(0, 1).unsqueeze(2))  # (n, 3, 1, 8h, 8w) in [-1, 1]
        small = F.avg_pool2d(video[:, :, 0].float(), SPACE_FACTOR // 2)  # (n, 3, 2h, 2w)
        return ((small + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def strip(self, latents: torch.Tensor, scale: int = 2) -> np.ndarray:
        """The linear map's strip at `scale` 2: the same size (the frames are 2x the latent's already)."""
        return side_by_side(self.frames(latents), max(1, scale // 2))


def fitting_images(seed: int = 0) -> torch.Tensor:
    """(FIT_IMAGES, 3, FIT_SIZE, FIT_SIZE) in [-1, 1]: flat colours, then smooth random colour fields."""
    g = torch.Generator().manual_seed(seed)
    half = FIT_IMAGES // 2
    flat = torch.rand(half, 3, 1, 1, generator=g).expand(half, 3, FIT_SIZE, FIT_SIZE)
    coarse = torch.rand(FIT_IMAGES - half, 3, 4, 4, generator=g)
    smooth = F.interpolate(coarse, size=(FIT_SIZE, FIT_SIZE), mode="bilinear", align_corners=True)
    return torch.cat([flat, smooth]) * 2 - 1


@torch.inference_mode()
def fit_latent_to_rgb(vae) -> LatentToRGB:
    """Least-squares fit of the affine latent -> RGB map on the VAE's own encodings (module docstring)."""
    device, dtype = next(vae.parameters()).device, vae.dtype
    images = fitting_images()  # (N, 3, S, S)
    video = images.unsqueeze(2).to(device, dtype)  # (N, 3, 1, S, S): one-frame videos
    z = vae.encode(video).latent_dist.mode().float().cpu()  # (N, 16, 1, S/8, S/8)
    stride = FIT_SIZE // z.shape[-1]
    target = F.avg_pool2d((images + 1) / 2, stride)  # (N, 3, S/8, S/8) in [0, 1]
    x = z[:, :, 0].permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (pixels, 16)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)  # (pixels, 3)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, y.double()).solution.float()  # (17, 3)
    cfg = vae.config
    return LatentToRGB(solution[:-1].T.contiguous(), solution[-1].contiguous(),
                       torch.tensor(cfg.latents_mean, dtype=torch.float32),
                       torch.tensor(cfg.latents_std, dtype=torch.float32))


def previewer_for(pipe) -> LatentToRGB | TinyDecoderPreview:
    """The tiny decoder's preview when the pipeline decodes with one on a GPU (module docstring), else the
    pipeline's fitted map, fitted at its first preview and kept on the pipeline (a rebuilt pipeline, with other
    weights, fits its own)."""
    tiny = tiny_decoder_of(pipe)
    if tiny is not None and tiny.stem.weight.is_cuda:
        return TinyDecoderPreview(tiny)
    fitted = getattr(pipe, "_wan_ui_preview_map", None)
    if fitted is None:
        fitted = fit_latent_to_rgb(pipe.vae)
        pipe._wan_ui_preview_map = fitted
    return fitted


@dataclass
class PreviewStats:
    """What the live preview cost: `count` previews, `seconds` in all (measured, excluded from step times)."""

    count: int = 0
    seconds: float = 0.0

    @property
    def per_preview_s(self) -> float | None:
        return self.seconds / self.count if self.count else None


class Previewer:
    """Called by the step observer after step i (1-based): every `every` steps and at the last one, turns the latents
    into a preview strip and hands it to `on_preview(step, image, seconds)`, `seconds` being what that preview cost
    to make (measured here; the step observer keeps it out of the step times)."""

    def __init__(self, pipe, on_preview, every: int, total: int):
        self.map = previewer_for(pipe)
        self.on_preview, self.every, self.total = on_preview, max(1, int(every)), total
        self.stats = PreviewStats()

    def __call__(self, step: int, latents: torch.Tensor) -> None:
        if step % self.every and step != self.total:
            return
        t0 = time.perf_counter()
        image = self.map.strip(latents)
        self.stats.count += 1
        seconds = time.perf_counter() - t0
        self.stats.seconds += seconds
        self.on_preview(step, image, seconds)


def preview_every(total_steps: int, target_previews: int = 10) -> int:
    """A preview every N steps so that a run shows about `target_previews` of them (every step for short runs)."""
    return max(1, math.ceil(total_steps / target_previews))
