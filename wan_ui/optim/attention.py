"""Attention: diffusers' backend dispatcher, and chunked-query ("sliced") attention for Wan.

Backends map to `transformer.set_attention_backend`: native (PyTorch SDPA picks a kernel), cudnn / flash /
efficient / math (SDPA forced to one kernel), flex (FlexAttention), sage / xformers / flash_attn (when their
packages import). diffusers has no attention slicing for Wan's transformer, so `attention_slicing=N` installs
`ChunkedWanAttnProcessor`: queries are processed N tokens at a time, so the score matrix held at once is
N x L instead of L x L. That lowers peak memory only where SDPA materialises the scores: the math kernel
(`attention_backend=math`, where the chunks run on it too). Flash/cuDNN/efficient kernels are already O(L) in
memory: slicing on the native backend measured the same peak and speed as no slicing, while the math kernel alone
needs over 100 GB at 480p (docs/benchmarks/README.md, "Attention slicing and CFG batching"). `option_notes` says so
to the user instead of letting it pass for a saving.

Undo: `apply_attention` returns an `AttentionUndo` (the processors slicing replaced), or None when it leaves the
native backend unsliced; `remove_attention` restores the processors and the native backend.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from wan_ui.optim.state import Undo, undo_on_error

BACKENDS = {"cudnn": "_native_cudnn", "flash": "_native_flash", "efficient": "_native_efficient",
            "math": "_native_math", "flex": "flex", "sage": "sage", "xformers": "xformers", "flash_attn": "flash"}


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Same rotation as diffusers' WanAttnProcessor: pairs (x1, x2) rotated by the frequency of their position.
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos[..., 0::2] - x2 * sin[..., 1::2]
    out[..., 1::2] = x1 * sin[..., 1::2] + x2 * cos[..., 0::2]
    return out.type_as(x)


class ChunkedWanAttnProcessor:
    """Wan text-to-video attention with the query split into chunks of `chunk` tokens."""

    def __init__(self, chunk: int, math: bool = False):
        self.chunk = chunk
        self.math = math  # run the chunks on SDPA's math kernel (attention_backend=math)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attn.add_k_proj is not None:
            raise NotImplementedError("chunked attention covers text-to-video Wan (no image context)")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))  # (B, L, H, D)
        k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(context).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            q, k = _rope(q, *rotary_emb), _rope(k, *rotary_emb)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
        out = torch.empty_like(q)
        with sdpa_kernel(SDPBackend.MATH) if self.math else contextlib.nullcontext():
            for start in range(0, q.shape[2], self.chunk):
                sl = slice(start, start + self.chunk)
                out[:, :, sl] = F.scaled_dot_product_attention(q[:, :, sl], k, v, attn_mask=attention_mask)
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


@dataclass
class AttentionUndo(Undo):
    processors: dict | None = None  # the transformer's attn_processors before slicing replaced them


def apply_attention(pipe, opts, request=None) -> AttentionUndo | None:
    # Always set explicitly: diffusers also keeps a process-wide "active" backend that processors without one
    # fall back to, and `reset_attention_backend` does not restore it (so "native" is set, never reset).
    backend = BACKENDS.get(opts.attention_backend, "native")
    if backend == "native" and not opts.attention_slicing:
        pipe.transformer.set_attention_backend(backend)
        return None  # what remove_attention would restore anyway
    with undo_on_error(pipe, remove_attention, AttentionUndo()) as undo:
        pipe.transformer.set_attention_backend(backend)
        if opts.attention_slicing:
            undo.processors = pipe.transformer.attn_processors
            pipe.transformer.set_attn_processor(ChunkedWanAttnProcessor(opts.attention_slicing,
                                                                         math=opts.attention_backend == "math"))
    return undo


def remove_attention(pipe, undo: AttentionUndo) -> None:
    if undo.processors is not None:
        pipe.transformer.set_attn_processor(undo.processors)
    pipe.transformer.set_attention_backend("native")
