"""The text encoder's output is kept per prompt (wan_ui/core/prompt_cache.py): a repeated prompt is not encoded
again, the video is the same, and another prompt or another pipeline encodes afresh."""

from __future__ import annotations

import dataclasses

import numpy as np

from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet
from wan_ui.core.prompt_cache import MAX_PROMPTS, cached_prompts


def count_encoder_calls(pipe) -> list:
    calls = []
    pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_a_repeated_prompt_is_encoded_once_and_the_video_is_the_same(manager, tiny_folder, smoke_request, one_thread):
    first = generate(manager, tiny_folder, smoke_request, OptimizationSet(), out_dir=None)
    pipe = manager.get(tiny_folder, OptimizationSet())[0]
    calls = count_encoder_calls(pipe)
    again = generate(manager, tiny_folder, smoke_request, OptimizationSet(), out_dir=None)
    assert calls == [] and np.array_equal(first.frames, again.frames)
    other = generate(manager, tiny_folder, dataclasses.replace(smoke_request, prompt="a different prompt"),
                     OptimizationSet(), out_dir=None)
    assert len(calls) == 2  # prompt and negative prompt, once each
    assert not np.array_equal(first.frames, other.frames)
    assert cached_prompts(pipe) == 2


def test_the_cache_is_bounded(manager, tiny_folder, smoke_request, one_thread):
    pipe = manager.get(tiny_folder, OptimizationSet())[0]
    request = dataclasses.replace(smoke_request, num_inference_steps=1, guidance_scale=1.0)
    for i in range(MAX_PROMPTS + 2):
        generate(manager, tiny_folder, dataclasses.replace(request, prompt=f"prompt {i}"), OptimizationSet(),
                 out_dir=None)
    assert cached_prompts(pipe) == MAX_PROMPTS
