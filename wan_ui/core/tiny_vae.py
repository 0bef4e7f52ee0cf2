"""A tiny video decoder for Wan 2.1's 16-channel latent, of the TAEHV family, and where its weights come from.

TAEHV ("Tiny AutoEncoder for Hunyuan Video", Ollin Boer Bohan, github.com/madebyollin/taehv) decodes a video
latent with 2D convolutions applied frame by frame, plus a one-frame causal memory:

- the latent is soft-clamped to +-3 (tanh(x / 3) * 3), then a 3x3 conv lifts its 16 channels to 256;
- three stages (256, 128 and 64 channels), each: three memory blocks, 2x nearest upsampling in space, a 1x1
  "grow" conv that turns each frame's channels into those of `time_stride` consecutive frames (1, 2, 2: 4x in
  time over the stages), and a 3x3 conv to the next stage's width;
- a memory block is a residual block of three 3x3 convs with ReLUs whose first conv sees the frame's input
  together with the previous frame's input to the same block (zeros before the first frame): causal in time;
- a ReLU and a 3x3 conv to RGB in [0, 1].
k + 1 latent frames come out as 4 (k + 1) frames; the first 3 are dropped, leaving 1 + 4k: what Wan's own VAE
gives (81 frames from 21 latents), its first latent frame holding one frame.

It decodes the latents the diffusion model works on: the pipeline's normalized latents, with no latents_mean /
latents_std (the TAEHV README, "How do I use TAEHV with Diffusers?": it "encodes / decodes exactly what diffusion
models use"), so it takes the pipeline's latents as they are, where Wan's VAE needs them de-normalized first.

Weights: the published `taew2_1.pth` of the hub repository `madebyollin/taehv` (fetched by hub id through
huggingface_hub, like the distilled LoRAs), or a local copy named by $WAN_UI_TINY_VAE (a .pth or .safetensors file,
or another hub id `owner/repo/file`). That file holds an encoder and a decoder under the published module names
(`decoder.<index>.…`); `load_published_state` maps them onto this module's names, strictly. The random-weight models
(`tiny`, `random-full`) get seeded random weights of this same architecture: as fast, and as meaningless as the
rest of those models.

This module is written from TAEHV's published description and its file format (tensor names and shapes), not
from its code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from wan_ui.core.errors import ModelLoadError, first_line
from wan_ui.core.hub import fetch

LATENT_CHANNELS = 16  # Wan 2.1's VAE z_dim
STAGE_WIDTHS = (256, 128, 64)  # channels inside each stage; the last stage projects to 64 as well
OUT_WIDTH = 64  # channels before the RGB conv
TIME_STRIDES = (1, 2, 2)  # frames out per frame in, per stage: 4x in all, Wan's temporal factor
BLOCKS_PER_STAGE = 3
INPUT_BOUND = 3.0  # the soft clamp of the latents: tanh(x / 3) * 3
TRIM = 3  # frames dropped at the start: 4 (k + 1) -> 1 + 4k, Wan's frame count
SPACE_FACTOR = 2 ** len(STAGE_WIDTHS)  # 8x, Wan's spatial factor
# Latent frames decoded per call (each carries the memory of the one before): bounds the activations, which at
# full width hold 4 output frames per latent frame. The decode is the same for any chunk (tested); 4 was as fast as
# 8 or 21 and held the least memory (docs/benchmarks/README.md, "Tiny decoder").
TIME_CHUNK = 4

DEFAULT_SOURCE = "madebyollin/taehv/taew2_1.pth"  # hub repo + file: the TAEHV weights for Wan 2.1's latent
SOURCE_ENV = "WAN_UI_TINY_VAE"  # a local .pth / .safetensors file, or another hub id owner/repo/file
RANDOM_SEED = 0  # the random-weight models' decoder
OPTION = "vae_decoder"  # the option errors name


def _conv3(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class MemoryBlock(nn.Module):
    """Residual block of three 3x3 convs; the first sees the frame and the previous frame's input."""

    def __init__(self, width: int):
        super().__init__()
        self.mix = _conv3(2 * width, width)  # (frame, previous frame) -> width
        self.mid = _conv3(width, width)
        self.out = _conv3(width, width)

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) each
        y = F.relu(self.mix(torch.cat([x, past], 1)))
        y = F.relu(self.mid(y))
        return F.relu(self.out(y) + x)


class Stage(nn.Module):
    """Memory blocks, then 2x nearest upsampling, `time_stride` frames per frame, and a conv to the next width."""

    def __init__(self, width: int, width_out: int, time_stride: int):
        super().__init__()
        self.time_stride = time_stride
        self.blocks = nn.ModuleList(MemoryBlock(width) for _ in range(BLOCKS_PER_STAGE))
        self.grow = nn.Conv2d(width, width * time_stride, 1, bias=False)  # channels of time_stride frames
        self.proj = _conv3(width, width_out, bias=False)


class TinyVideoDecoder(nn.Module):
    """Wan 2.1 latents (B, 16, 1 + k, h, w), normalized as the pipeline holds them -> video (B, 3, 1 + 4k, 8h, 8w)
    in [-1, 1], as diffusers' VAE decode returns it."""

    def __init__(self):
        super().__init__()
        self.stem = _conv3(LATENT_CHANNELS, STAGE_WIDTHS[0])
        widths_out = (*STAGE_WIDTHS[1:], OUT_WIDTH)
        self.stages = nn.ModuleList(Stage(w, w_out, s) for w, w_out, s in zip(STAGE_WIDTHS, widths_out, TIME_STRIDES))
        self.head = _conv3(OUT_WIDTH, 3)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, time_chunk: int = TIME_CHUNK) -> torch.Tensor:
        """(B, 16, T, h, w) -> (B, 3, 1 + 4 (T - 1), 8h, 8w) in [-1, 1], in this module's dtype and device,
        `time_chunk` latent frames at a time."""
        weight = self.stem.weight
        z = latents.to(weight.device, weight.dtype).transpose(1, 2)  # (B, T, 16, h, w)
        memory: list[torch.Tensor | None] = [None] * (BLOCKS_PER_STAGE * len(self.stages))
        chunk = max(1, int(time_chunk))
        parts = [self._decode_frames(z[:, i:i + chunk], memory) for i in range(0, z.shape[1], chunk)]
        video = torch.cat(parts, 1)[:, TRIM:]  # (B, F, 3, H, W) in [0, 1] before the clamp
        return video.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0).transpose(1, 2)

    def _decode_frames(self, z: torch.Tensor, memory: list) -> torch.Tensor:
        """(B, T, 16, h, w) -> (B, 4T, 3, 8h, 8w). `memory[i]`: memory block i's input of the frame before this
        chunk, (B, 1, C, H, W) or None before the first frame; updated to this chunk's last frame."""
        b, t = z.shape[:2]
        x = z.flatten(0, 1)  # frames as a batch: (B*T, 16, h, w)
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):  # NHWC convs want NHWC frames
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.stem(torch.tanh(x / INPUT_BOUND) * INPUT_BOUND))
        i = 0
        for stage in self.stages:
            for block in stage.blocks:
                frames = x.unflatten(0, (b, t))  # (B, T, C, H, W)
                first = memory[i] if memory[i] is not None else torch.zeros_like(frames[:, :1])
                past = torch.cat([first, frames[:, :-1]], 1).flatten(0, 1)  # each frame's previous frame
                memory[i] = frames[:, -1:].clone()  # a copy: a view would keep the whole chunk alive
                x = block(x, past)
                i += 1
            x = stage.grow(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B*T, s*C, 2H, 2W)
            t *= stage.time_stride
            x = stage.proj(x.reshape(b * t, -1, *x.shape[-2:]))  # the s frames' channels are consecutive
        return self.head(F.relu(x)).unflatten(0, (b, t))


# ---- the published file format -------------------------------------------------------------------------------
# TAEHV's decoder is one flat sequence; parameters sit at these indices: 1 the latent conv, then per stage (6
# entries from 3): three memory blocks (their convs at .conv.0, .conv.2, .conv.4), the upsampling (no weights),
# the grow conv (.conv.weight) and the projection; 21 a ReLU, 22 the RGB conv.
_STAGE_START, _STAGE_LEN, _HEAD = 1 + 2, 6, 22
_BLOCK_CONVS = {"mix": 0, "mid": 2, "out": 4}


def published_name(name: str) -> str:
    """This module's parameter name -> the published file's ('stages.1.blocks.2.mix.weight' ->
    'decoder.11.conv.0.weight')."""
    parts = name.split(".")
    if parts[0] == "stem":
        return f"decoder.1.{parts[1]}"
    if parts[0] == "head":
        return f"decoder.{_HEAD}.{parts[1]}"
    start = _STAGE_START + _STAGE_LEN * int(parts[1])
    if parts[2] == "blocks":
        return f"decoder.{start + int(parts[3])}.conv.{_BLOCK_CONVS[parts[4]]}.{parts[5]}"
    if parts[2] == "grow":
        return f"decoder.{start + BLOCKS_PER_STAGE + 1}.conv.{parts[3]}"
    return f"decoder.{start + BLOCKS_PER_STAGE + 2}.{parts[3]}"  # proj


def to_published_state(decoder: TinyVideoDecoder) -> dict[str, torch.Tensor]:
    """The decoder's weights under the published names (what a TAEHV file holds for its decoder)."""
    return {published_name(k): v for k, v in decoder.state_dict().items()}


def load_published_state(decoder: TinyVideoDecoder, state: dict[str, torch.Tensor]) -> None:
    """Copy a published state dict's decoder weights into `decoder`, strictly: every weight present with its
    shape, no decoder weight left over (the encoder's are not ours to check). A grow conv stored for more frames
    than this stage makes (a file trained with time upsampling there) gives the last frame's channels: the frame
    that the published decoder keeps when it runs that stage at one frame per frame."""
    own = decoder.state_dict()
    wanted = {published_name(k): k for k in own}
    missing = [p for p in wanted if p not in state]
    extra = [k for k in state if k.startswith("decoder.") and k not in wanted]
    if missing or extra:
        raise ModelLoadError(f"option {OPTION}=tiny: the weights file is not a TAEHV decoder for a 16-channel "
                             f"latent: missing {missing[:3]}, unexpected {extra[:3]}", field=OPTION)
    loaded = {}
    for pub, ours in wanted.items():
        tensor, shape = state[pub], own[ours].shape
        if ".grow." in ours and tensor.shape[1:] == shape[1:] and tensor.shape[0] % shape[0] == 0:
            tensor = tensor[-shape[0]:]
        if tensor.shape != shape:
            raise ModelLoadError(f"option {OPTION}=tiny: {pub} has shape {tuple(tensor.shape)}, expected "
                                 f"{tuple(shape)} (a TAEHV file for another latent?)", field=OPTION)
        loaded[ours] = tensor
    decoder.load_state_dict(loaded, strict=True)


# ---- where the weights come from --------------------------------------------------------------------------------
def tiny_decoder_source() -> str:
    """$WAN_UI_TINY_VAE, else the published file's hub id."""
    return os.environ.get(SOURCE_ENV, "").strip() or DEFAULT_SOURCE


def fetch_weights(source: str) -> Path:
    """A local file as it is; a hub id `owner/repo/path/in/repo` through the hub cache (a download when online)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    parts = source.split("/")
    if path.exists() or len(parts) < 3 or not all(parts) or source.startswith((".", "/", "~")):
        raise ModelLoadError(f"option {OPTION}=tiny: {SOURCE_ENV}={source!r} is neither a weights file nor a hub id "
                             f"owner/repo/file", field=OPTION)
    return fetch("/".join(parts[:2]), "/".join(parts[2:]),
                 what=f"option {OPTION}=tiny: the tiny decoder's weights file", field=OPTION,
                 instead=f"download it once online, or set {SOURCE_ENV} to a local taew2_1.pth (or .safetensors); "
                         f"{OPTION}=full needs nothing")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — a truncated or foreign file, whatever the reader raises
        raise ModelLoadError(f"option {OPTION}=tiny: cannot read {path}: {type(e).__name__}: {first_line(e, 160)}",
                             field=OPTION) from None


def random_tiny_decoder(seed: int = RANDOM_SEED) -> TinyVideoDecoder:
    """Seeded random weights (PyTorch's default init), the global random state left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyVideoDecoder().eval()


def build_tiny_decoder(random_weights: bool, device, dtype: torch.dtype) -> tuple[TinyVideoDecoder, str]:
    """(decoder on `device` in `dtype`, where its weights came from)."""
    if random_weights:
        decoder, origin = random_tiny_decoder(), f"random weights (seed {RANDOM_SEED})"
    else:
        source = tiny_decoder_source()
        path = fetch_weights(source)
        decoder = TinyVideoDecoder().eval()
        load_published_state(decoder, read_weights(path))
        origin = f"{source} ({path})" if str(path) != source else source
    return decoder.to(device=device, dtype=dtype), origin
