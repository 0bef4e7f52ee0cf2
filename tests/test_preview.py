"""Live preview (wan_ui/core/preview.py): it never changes the video, it arrives about ten times a run, and the
fitted latent -> RGB map reproduces what the VAE decodes of flat colours."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet
from wan_ui.core.preview import fit_latent_to_rgb, fitting_images, preview_every


def test_frames_are_bit_identical_with_the_preview_on_and_off(manager, tiny_folder, smoke_request, tmp_path,
                                                              one_thread):
    request = dataclasses.replace(smoke_request, num_inference_steps=4)
    seen = []
    off = generate(manager, tiny_folder, request, OptimizationSet(), out_dir=None)
    on = generate(manager, tiny_folder, request, OptimizationSet(), out_dir=None,
                  on_preview=lambda step, image, s: seen.append((step, image.shape, image.dtype, s)))
    assert np.array_equal(off.frames, on.frames)
    assert [step for step, *_ in seen] == [1, 2, 3, 4]  # 4 steps: a preview after each
    _, shape, dtype, seconds = seen[0]
    latent_h, latent_w = request.height // 8, request.width // 8
    assert dtype == np.uint8 and shape[0] == 2 * latent_h and shape[2] == 3 and seconds >= 0
    assert len(on.metrics.step_latencies_s) == 4


def test_previews_come_about_ten_times_a_run():
    assert preview_every(8) == 1 and preview_every(50) == 5 and preview_every(65) == 7


class LinearVae(torch.nn.Module):
    """A stand-in VAE whose encoder is a known affine map of each 8x8 block's mean colour into 16 channels (random
    weights of the real VAE carry no colour to fit; this checks the fit itself)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.mix = torch.nn.Parameter(torch.randn(16, 3, generator=g), requires_grad=False)
        self.shift = torch.randn(16, generator=g)
        self.config = type("Config", (), {"latents_mean": torch.randn(16, generator=g).tolist(),
                                           "latents_std": (torch.rand(16, generator=g) + 0.5).tolist()})()
        self.dtype = torch.float32

    def encode(self, video):  # (N, 3, 1, S, S) in [-1, 1]
        rgb = torch.nn.functional.avg_pool2d((video[:, :, 0] + 1) / 2, 8)  # (N, 3, S/8, S/8)
        z = torch.einsum("kc,nchw->nkhw", self.mix, rgb) + self.shift.view(1, -1, 1, 1)
        dist = type("Dist", (), {"mode": lambda self_: z.unsqueeze(2)})()
        return type("Out", (), {"latent_dist": dist})()


def test_the_fitted_map_recovers_the_colour_the_vae_encoded():
    vae = LinearVae()
    fitted = fit_latent_to_rgb(vae)
    images = fitting_images(seed=1)  # colours the fit has not seen
    z = vae.encode(images.unsqueeze(2)).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    got = fitted.frames((z - mean) / std, count=1)[0].astype(float) / 255  # the pipeline's normalized latents
    want = torch.nn.functional.avg_pool2d((images[:1] + 1) / 2, 8)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6  # exact up to the uint8 rounding
