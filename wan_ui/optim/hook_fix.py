"""A fix for diffusers' `HookRegistry.remove_hook` (0.42.1): removing a hook that is not the outermost one
re-links the next hook through `fn_ref.forward`, but a hook with `new_forward` (MagCache, FirstBlockCache, ...)
calls the chain below it through `fn_ref.original_forward`. The next hook's `new_forward` is replaced by the
plain forward below: the cache silently stops caching.

It bites group offloading with CUDA streams: its lazy prefetcher registers layer-tracker hooks on every block at
load time and removes them after the first forward. A step cache registered in between (ours: a run-time option,
applied before the first generation) is bypassed: "Low VRAM" + MagCache computes every forward instead of about
half (docs/benchmarks/README.md, "Memory", "A bug found on the way"). The fix re-links the right reference.
Applied once when `wan_ui.optim` is imported; tests/test_hook_fix.py fails once diffusers fixes it (then remove).
"""

from __future__ import annotations

from diffusers.hooks.hooks import HookRegistry

_original_remove_hook = HookRegistry.remove_hook


def _remove_hook(self, name: str, recurse: bool = True) -> None:
    if name in self.hooks:
        index = self._hook_order.index(name)
        if index < len(self._hook_order) - 1 and self._fn_refs[index + 1].original_forward is not None:
            # the next hook calls down through original_forward: diffusers would overwrite its new_forward instead
            fn_ref, nxt = self._fn_refs[index], self._fn_refs[index + 1]
            below = fn_ref.original_forward if fn_ref.original_forward is not None else fn_ref.forward
            kept = nxt.forward
            _original_remove_hook(self, name, recurse=False)
            nxt.forward, nxt.original_forward = kept, below
    _original_remove_hook(self, name, recurse)  # the rest unchanged (here already gone: only the submodules)


def install() -> None:
    if getattr(HookRegistry.remove_hook, "_wan_ui_fix", False):
        return
    _remove_hook._wan_ui_fix = True
    HookRegistry.remove_hook = _remove_hook
