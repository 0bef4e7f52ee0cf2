"""The `vae_decoder` option: decode with a tiny TAEHV-class decoder instead of Wan's VAE (wan_ui/core/tiny_vae.py).

Run-time: applying builds the tiny decoder (a few MB of weights; fetched by hub id, or seeded random weights for the
random-weight models) on the pipeline's execution device in the VAE's dtype, and keeps it in the undo record;
`core.generate.decode_latents` and the live preview ask for it with `tiny_decoder_of(pipe)`. Wan's VAE is not
touched, so removing the record is the whole undo and the full decode is back as it was.

Which weights: a pipeline loaded from a random-weight model's folder (models.MARKER, written by `tiny` and
`random-full`) gets random weights of the same architecture, as fast and as meaningless as its other parts; any
other pipeline gets the published weights (`tiny_vae.tiny_decoder_source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wan_ui.core.models import MARKER
from wan_ui.core.tiny_vae import TinyVideoDecoder, build_tiny_decoder
from wan_ui.optim.state import Undo, state_of


@dataclass
class TinyDecoderUndo(Undo):
    decoder: TinyVideoDecoder | None  # used in place of the VAE's decode while this record is live
    origin: str  # where its weights came from: a file, a hub id, or "random weights (seed 0)"


def has_random_weights(pipe) -> bool:
    """The pipeline was loaded from a folder that a random-weight model's build marked as such."""
    folder = getattr(pipe, "name_or_path", None)
    return bool(folder) and (Path(folder) / MARKER).is_file()


def apply_tiny_decoder(pipe, opts, request=None) -> TinyDecoderUndo | None:
    if opts.vae_decoder != "tiny":
        return None
    decoder, origin = build_tiny_decoder(has_random_weights(pipe), pipe._execution_device, pipe.vae.dtype)
    return TinyDecoderUndo(decoder, origin)


def remove_tiny_decoder(pipe, undo: TinyDecoderUndo) -> None:
    undo.decoder = None  # the only reference: its weights go with the record


def tiny_decoder_of(pipe) -> TinyVideoDecoder | None:
    """The tiny decoder this pipeline decodes with now, or None (the full VAE)."""
    undo = state_of(pipe).undo(TinyDecoderUndo)
    return None if undo is None else undo.decoder
