"""One optimizer step of flow matching as Wan is trained, and the batches it eats.

x_t = (1 - t) x0 + t noise, target noise - x0, t drawn uniformly and shifted as the inference scheduler shifts its
sigmas. `train_step` is what the training loop (train/loop.py) and the GPU benchmark (scripts/gpu_train_bench.py)
both time.
"""

from __future__ import annotations

import torch

from wan_ui.train.cache import Sample, collate_text

NUM_TRAIN_TIMESTEPS = 1000  # Wan's timestep = sigma * 1000 (its scheduler's num_train_timesteps)


# ---- flow matching ---------------------------------------------------------------------------------------------
def sample_sigmas(batch: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """t in (0, 1) drawn uniformly, then shifted as the inference scheduler shifts its sigmas:
    t' = shift t / (1 + (shift - 1) t) (shift > 1 spends more steps at high noise; Wan uses 3 at 480p)."""
    u = torch.rand(batch, generator=generator)
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(transformer, latents: torch.Tensor, text: torch.Tensor, sigmas: torch.Tensor,
                       noise: torch.Tensor, autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """MSE between the transformer's prediction and the flow-matching velocity target.

    latents, noise: (B, 16, T, h, w) float32; text: (B, 512, D); sigmas: (B,) in (0, 1).
    """
    s = sigmas.view(-1, 1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise  # x_t
    target = noise - latents  # d x_t / dt
    dtype = autocast_dtype or torch.float32
    with torch.autocast(latents.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        pred = transformer(hidden_states=noisy.to(dtype), timestep=sigmas * NUM_TRAIN_TIMESTEPS,
                           encoder_hidden_states=text.to(dtype), return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), target)


def train_step(transformer, optimizer, params, latents, text, sigmas, noise, autocast_dtype,
               max_grad_norm: float) -> tuple[float, float | None]:
    """One optimizer step (forward, backward, clip, update). Returns (loss, gradient norm before clipping)."""
    loss = flow_matching_loss(transformer, latents, text, sigmas, noise, autocast_dtype)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if max_grad_norm else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), (float(grad_norm) if grad_norm is not None else None)  # .item() synchronises


def tokens_per_sample(latents_shape, patch=(1, 2, 2)) -> int:
    """Transformer sequence length of one sample: T x h/2 x w/2 for latents (C, T, h, w)."""
    _, t, h, w = latents_shape[-4:]
    return (t // patch[0]) * (h // patch[1]) * (w // patch[2])


# ---- batches ---------------------------------------------------------------------------------------------------
class BatchSampler:
    """Epochs of seeded permutations; its state (generator + position) is part of a checkpoint."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.pos = 0

    def next(self) -> list[int]:
        out = []
        while len(out) < self.batch:
            if self.pos >= len(self.order):
                self.order, self.pos = torch.randperm(self.n, generator=self.gen).tolist(), 0
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.order, self.pos = list(state["order"]), int(state["pos"])
        if any(i >= self.n for i in self.order):  # the dataset shrank since the checkpoint: start a new epoch
            self.order, self.pos = [], 0


def make_batch(samples: list[Sample], idx: list[int], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    latents = torch.stack([samples[i].latents for i in idx]).to(device, non_blocking=True)  # (B, 16, T, h, w)
    text = collate_text([samples[i].text for i in idx]).to(device, non_blocking=True)  # (B, 512, D)
    return latents, text
