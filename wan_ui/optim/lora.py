"""LoRA adapters through diffusers' peft integration (`load_lora_weights`, `set_adapters`, `fuse_lora`).

Spec: `source[:scale]` separated by ';'. A source is a .safetensors file or a folder inside the LoRA folder
(`WAN_UI_LORA_DIR`, default ./loras; `..`, absolute paths outside it and symlinks escaping it are refused),
or a hub id `owner/repo[/file.safetensors]`. Kijai/ComfyUI-format files (CausVid, self-forcing DMD) go through
diffusers' non-diffusers Wan converter inside `load_lora_weights`.

Undo: `apply_lora` returns a `LoraUndo` (the adapters loaded; when fused, a CPU copy of every base weight fusing
changes). Removing restores the base weights exactly: it copies them back (unfuse alone would leave float rounding
behind).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wan_ui.core.errors import ModelLoadError, ValidationError
from wan_ui.core.hub import fetch
from wan_ui.core.paths import confine
from wan_ui.optim.state import Undo, undo_on_error


@dataclass(frozen=True)
class LoraSource:
    location: str  # folder/file path or hub repo id
    weight_name: str | None  # file inside a folder or repo
    scale: float
    is_hub: bool


def lora_dir() -> Path:
    return Path(os.environ.get("WAN_UI_LORA_DIR", "loras")).resolve()


def split_lora_spec(spec: str) -> list[tuple[str, float]]:
    """The `lora` option's text -> [(source, scale)]: items separated by ';', a trailing ':number' is the scale
    (default 1). Sources are not resolved or checked here."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        head, sep, tail = item.rpartition(":")
        out.append((head, float(tail)) if sep and _is_number(tail) else (item, 1.0))
    return out


def parse_lora_spec(spec: str, root: Path | None = None) -> list[LoraSource]:
    root = (root or lora_dir()).resolve()
    out = []
    for src, scale in split_lora_spec(spec):
        if not (-10.0 <= scale <= 10.0):
            raise ValidationError(f"lora scale must be in [-10, 10], got {scale}", field="lora")
        try:
            out.append(_resolve(src, scale, root))
        except OSError as e:  # e.g. a name longer than the file system allows
            raise ValidationError(f"lora path {src[:80]!r} cannot be used: {e.strerror}", field="lora") from None
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _resolve(src: str, scale: float, root: Path) -> LoraSource:
    candidate = Path(src) if os.path.isabs(src) else root / src
    if ".." in Path(src).parts or candidate.exists() or os.path.isabs(src) or src.startswith("."):
        real = confine(src, root, "lora", "lora path", "the LoRA folder")  # '..', outside, escaping symlinks
        if not real.exists():
            raise ValidationError(f"lora file {src!r} not found in {root}", field="lora")
        if real.is_file():
            if real.suffix != ".safetensors":
                raise ValidationError(f"lora file {src!r} must be .safetensors", field="lora")
            return LoraSource(str(real.parent), real.name, scale, False)
        return LoraSource(str(real), None, scale, False)
    parts = src.split("/")
    if len(parts) >= 2 and all(parts):
        weight = "/".join(parts[2:]) or None
        if weight and not weight.endswith(".safetensors"):
            raise ValidationError(f"lora hub file {weight!r} must be .safetensors", field="lora")
        return LoraSource("/".join(parts[:2]), weight, scale, True)
    raise ValidationError(f"lora {src!r} is neither a file/folder in {root} nor a hub id owner/repo[/file]",
                          field="lora")


def _local_file(src: LoraSource) -> tuple[str, str | None]:
    """(location, weight_name) to load from: a hub file is fetched first through core/hub.py, so that no network,
    a missing repository and a missing file each say so (diffusers reports all three as "does not appear to have a
    file named ..."), the offline case at once instead of after the hub client's retries."""
    if not src.is_hub or not src.weight_name:
        return src.location, src.weight_name
    path = fetch(src.location, src.weight_name, what="LoRA", field="lora",
                 instead=f"download it once online, or put the file at {lora_dir() / src.location / src.weight_name}")
    return str(path.parent), path.name


@dataclass
class LoraUndo(Undo):
    adapters: list[str] = field(default_factory=list)  # peft adapter names loaded into the pipeline
    base: dict[str, torch.Tensor] | None = None  # fused: CPU copies of the base weights fusing changed


def apply_lora(pipe, opts, request=None) -> LoraUndo | None:
    if not opts.lora:
        return None
    sources = parse_lora_spec(opts.lora)
    with undo_on_error(pipe, remove_lora, LoraUndo()) as undo:
        for i, src in enumerate(sources):
            _load_adapter(pipe, src, f"wan_ui_{i}")
            undo.adapters.append(f"wan_ui_{i}")
        pipe.set_adapters(undo.adapters, adapter_weights=[s.scale for s in sources])
        if opts.lora_fuse:
            undo.base = {k: p.detach().to("cpu", copy=True)
                         for k, p in pipe.transformer.named_parameters() if "base_layer" in k}
            pipe.fuse_lora(adapter_names=undo.adapters, lora_scale=1.0)
    return undo


def _load_adapter(pipe, src: LoraSource, name: str) -> None:
    location, weight_name = _local_file(src)
    kwargs = {"weight_name": weight_name} if weight_name else {}
    try:
        pipe.load_lora_weights(location, adapter_name=name, use_safetensors=True, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 — a corrupt file, a wrong layout: one clear message
        where = f"{src.location}/{src.weight_name}" if src.weight_name else src.location
        raise ModelLoadError(f"could not load LoRA {where!r}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}", field="lora") from None


def remove_lora(pipe, undo: LoraUndo) -> None:
    if undo.base is not None:
        pipe.unfuse_lora()
    pipe.unload_lora_weights()  # every adapter, also one a failed load left half-injected
    if undo.base is not None:
        params = dict(pipe.transformer.named_parameters())
        for k, v in undo.base.items():
            params[k.replace(".base_layer", "")].data.copy_(v)
