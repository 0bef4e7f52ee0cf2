"""The trainer's command line: `python -m wan_ui.train` and the `wan-train` command.

    python -m wan_ui.train --data DIR --model tiny --rank 32 --steps 500 --out loras/my.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

from wan_ui.core.errors import UserError
from wan_ui.core.fields import add_argument, specs_of
from wan_ui.core.hardware import configure_allocator
from wan_ui.core.models import TINY, resolve_model
from wan_ui.train.config import TINY_MODEL_TRAINING, TrainConfig
from wan_ui.train.loop import TrainResult, train

# The CLI's flags as --help groups them. Each flag's type, range, default and help come from its field's spec
# (fields.add_argument); only what is particular to argparse is said here.
CLI_GROUPS: dict[str | None, tuple[str, ...]] = {
    None: ("data", "model", "out", "rank", "alpha", "ffn", "lr", "weight_decay", "warmup_steps", "max_grad_norm",
           "steps", "batch_size", "seed", "width", "height", "frames", "flow_shift"),
    "speed levers": ("bf16", "grad_checkpointing", "checkpoint_skip_blocks", "adamw8bit", "fp8_base",
                     "float8_training", "compile", "sparse_window"),
    "files, checkpoints, validation": ("cache_dir", "checkpoint_dir", "resume", "save_every", "keep_checkpoints",
                                       "save_dtype", "metrics_jsonl", "validate_every", "validation_prompt",
                                       "validation_steps", "validation_guidance", "device", "progress"),
}
CLI_EXTRAS = {"data": {"required": True}, "grad_checkpointing": {"nargs": "?", "const": "full"},
              "sparse_window": {"metavar": "T,H,W"}, "resume": {"metavar": "CKPT"},
              "progress": {"help": "no progress bar"}}  # --no-progress
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(data="")
    specs = specs_of(TrainConfig)
    p = argparse.ArgumentParser(prog="python -m wan_ui.train", description="LoRA fine-tuning of Wan2.1-T2V-1.3B")
    groups = {title: p.add_argument_group(title) if title else p for title in CLI_GROUPS}
    for title, names in CLI_GROUPS.items():
        for name in names:
            if name in TINY_MODEL_TRAINING:  # None = not given: the model's default (the tiny model has its own)
                help_text = (f"{specs[name].help} (default {getattr(d, name)}; "
                             f"{TINY_MODEL_TRAINING[name]} on the tiny model)")
                add_argument(groups[title], specs[name], default=None, help=help_text)
            else:
                add_argument(groups[title], specs[name], default=getattr(d, name), **CLI_EXTRAS.get(name, {}))
    groups["files, checkpoints, validation"].add_argument("--json", action="store_true",
                                                          help="print the summary as one JSON object at the end")
    return p


def config_from_args(args: argparse.Namespace, log=lambda m: None) -> TrainConfig:
    """The config from the flags; a flag not given takes the model's default (said once for the tiny model)."""
    values = {k: v for k, v in vars(args).items() if k != "json"}
    unset = [name for name in TINY_MODEL_TRAINING if values[name] is None]
    tiny = resolve_model(args.model, torch.cuda.is_available()).kind == TINY
    defaults = TINY_MODEL_TRAINING if tiny else {name: getattr(TrainConfig(data=""), name) for name in unset}
    if tiny and unset:
        log("note: tiny random-weight model: training defaults " +
            ", ".join(f"{k}={v}" for k, v in TINY_MODEL_TRAINING.items()) + " (pass the flags to change them)")
    return TrainConfig(**{**values, **{name: defaults[name] for name in unset}})


def main(argv: list[str] | None = None) -> int:
    configure_allocator()  # expandable segments unless the user configured the allocator (hardware.py)
    args = build_parser().parse_args(argv)
    log = lambda m: print(f"[wan_ui.train] {m}", file=sys.stderr)  # noqa: E731
    try:
        cfg = config_from_args(args, log)
        result = train(cfg, log=log)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_result(result, as_json=args.json))
    return EXIT_INTERRUPTED if result.interrupted else 0


def format_result(result: TrainResult, as_json: bool = False) -> str:
    """The run's last line on stdout: the LoRA path, steps and speed, or (`as_json`) one JSON object."""
    s = result.summary
    if as_json:
        return json.dumps({"lora": result.lora_path, "steps_done": result.steps_done, "summary": s,
                           "skipped": [dataclasses.asdict(x) for x in result.skipped]})
    median = s.get("median_step_s")
    return (f"LoRA: {result.lora_path}  steps {result.start_step} -> {result.steps_done}"
            + (f"  median step {median:.3f} s, {s['tokens_per_s']:.0f} tokens/s" if median else "")
            + (f", peak VRAM {s['peak_vram_mb']:.0f} MiB" if s.get("peak_vram_mb") else ""))


if __name__ == "__main__":
    sys.exit(main())
