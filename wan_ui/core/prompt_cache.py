"""The text encoder's output, kept per prompt: a prompt encoded once is not encoded again by the same pipeline.

A batch of seeds, a comparison of several sets, the tuner's search and a user re-running one prompt all encode the
same text again and again. UMT5-XXL's output for a prompt is a pure function of the text and the weights, so
reusing it is exact. Under offloading it is most of the text-encode phase's cost: the 11 GB encoder is moved to the
GPU and back for each encode. Entries live on the pipeline object (a rebuilt pipeline, with its own encoder or
precision, starts empty), most recent last; each is two (1, 512, 4096) tensors, 8 MiB in bf16.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

MAX_PROMPTS = 16  # about 128 MiB of device memory at most in bf16 (16 x 2 x 512 x 4096 x 2 bytes)
MAX_SEQUENCE_LENGTH = 512  # Wan's text length (UMT5, as the Wan pipeline encodes it)


def encode_prompt_cached(pipe, prompt: str, negative_prompt: str, use_cfg: bool, device) -> tuple:
    """(prompt_embeds, negative_prompt_embeds or None) as `pipe.encode_prompt` gives them, from the cache when the
    same texts were encoded before by this pipeline. Returns the cached tensors themselves: callers must not modify
    them in place (the pipeline does not)."""
    cache = getattr(pipe, "_wan_ui_prompt_cache", None)
    if cache is None:
        cache = pipe._wan_ui_prompt_cache = OrderedDict()
    key = (prompt, negative_prompt if use_cfg else None, str(device))
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    with torch.inference_mode():
        pos, neg = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt,
                                      do_classifier_free_guidance=use_cfg, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                      device=device)
    cache[key] = (pos, neg)
    while len(cache) > MAX_PROMPTS:
        cache.popitem(last=False)
    return pos, neg


def cached_prompts(pipe) -> int:
    """How many prompts this pipeline holds encoded."""
    return len(getattr(pipe, "_wan_ui_prompt_cache", ()))


def forget_prompts(pipe) -> int:
    """Drop this pipeline's cached encodings (the tuner times every set with its prompts encoded afresh, as a new
    prompt is); returns how many there were."""
    cache = getattr(pipe, "_wan_ui_prompt_cache", None)
    n = len(cache or ())
    if cache:
        cache.clear()
    return n
