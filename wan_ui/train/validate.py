"""Validation videos: every `validate_every` steps, a video of the validation prompt with the transformer as it is
being trained, written to `<out stem>_validation/step-NNNNNN.mp4`."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanPipeline

from wan_ui.core.generate import decode_latents
from wan_ui.core.video import write_video
from wan_ui.train.config import TrainConfig
from wan_ui.train.model import load_scheduler, load_vae

VIDEO_FPS = 16  # frames per second: Wan2.1 is trained on and generates 16 fps video (its model card)


def validation_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    return out.with_name(out.stem + "_validation")


class Validator:
    """A video from the cached validation prompt embeddings (`embeds`: {"positive", "negative"}, each (1, 512, D))
    with the training transformer; no text encoder is loaded. The VAE is loaded once on CPU and visits the GPU only
    to decode."""

    def __init__(self, cfg: TrainConfig, folder: str, embeds: dict, device: str, out_dir: Path):
        self.cfg, self.folder, self.embeds, self.device, self.out_dir = cfg, folder, embeds, device, out_dir
        self.vae = None

    @torch.no_grad()
    def run(self, transformer, step: int) -> Path:
        if self.vae is None:
            self.vae = load_vae(self.folder)
        pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=self.vae,
                           scheduler=load_scheduler(self.folder))
        was_training = transformer.training
        transformer.eval()
        try:
            latents = self._denoise(pipe)
            self.vae.to(self.device)
            frames = decode_latents(pipe, latents)
        finally:
            self.vae.to("cpu")
            transformer.train(was_training)
        cfg = self.cfg
        return write_video(frames, self.out_dir / f"step-{step:06d}.mp4", fps=VIDEO_FPS,
                           metadata={"tool": "wan_ui.train", "step": step, "prompt": cfg.validation_prompt})

    def _denoise(self, pipe: WanPipeline) -> torch.Tensor:
        """The pipeline's own sampling loop up to latents (B, 16, T, h, w), in the training's dtype."""
        cfg, autocast = self.cfg, self.cfg.autocast_dtype
        dtype = autocast or torch.float32
        with torch.autocast(torch.device(self.device).type, dtype=autocast, enabled=autocast is not None):
            return pipe(prompt_embeds=self.embeds["positive"].to(self.device, dtype),
                        negative_prompt_embeds=self.embeds["negative"].to(self.device, dtype),
                        height=cfg.height, width=cfg.width, num_frames=cfg.frames,
                        num_inference_steps=cfg.validation_steps, guidance_scale=cfg.validation_guidance,
                        generator=torch.Generator("cpu").manual_seed(cfg.seed), output_type="latent").frames
