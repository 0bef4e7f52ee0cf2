"""`python -m wan_ui generate ...` and `python -m wan_ui options --json`.

User mistakes exit with status 2 and one line on stderr (no traceback), a bad `--out` or a full disk included; a
cancelled or failed run exits 1; SIGTERM (what `docker stop` sends) stops the run at once, leaves no partial file,
and exits 143 (128 + 15, the shell's convention for a process ended by SIGTERM) with one line.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
import threading

from diffusers import DiffusionPipeline
from diffusers.utils import logging as dlog
from tqdm.auto import tqdm

from wan_ui.core.distilled import PRESET_NOTES, request_hints_for
from wan_ui.core.errors import GenerationCancelled, UserError
from wan_ui.core.fields import add_argument, cli_help
from wan_ui.core.generate import generate, update_video_metadata
from wan_ui.core.hardware import configure_allocator, probe_hardware
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import TINY, resolve_model
from wan_ui.core.options import (
    PRESETS,
    OptimizationSet,
    check_available,
    check_compatible,
    fidelity_info,
    fidelity_of,
    options_table,
    parse_set_args,
    preset,
    preset_description,
    preset_names,
    worst_fidelity,
)
from wan_ui.core.quality import score_result
from wan_ui.core.requests import (
    REQUEST_SPECS,
    TINY_MODEL_DEFAULTS,
    GenerationRequest,
    default_request,
    describe_defaults,
    validate_request,
)
from wan_ui.core.video import EncoderError, check_output_folder, check_output_path
from wan_ui.parallel.dist import finish_distributed, init_distributed, torchrun_world_size
from wan_ui.parallel.plan import ParallelConfig
from wan_ui.parallel.runtime import ParallelRuntime


def _progress_printer(enabled: bool):
    if not enabled:
        return None

    bars = {}

    def on_progress(phase, done, total):
        if phase == "denoising":
            bar = bars.get("d") or bars.setdefault("d", tqdm(total=total, desc="denoising", unit="step",
                                                              file=sys.stderr))
            bar.n = done
            bar.refresh()
            if done == total:
                bar.close()
        else:
            print(f"[wan_ui] {phase}...", file=sys.stderr)

    on_progress.close = lambda: [bar.close() for bar in bars.values()]  # an open bar reprints itself at exit
    return on_progress


class _OneLineParser(argparse.ArgumentParser):
    """A flag argparse refuses is a user mistake like any other: one line on stderr, status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# generate's flags that fill request fields (flag -> field): type, range and help come from the field's spec
REQUEST_FLAGS = {"--prompt": "prompt", "--negative-prompt": "negative_prompt", "--width": "width",
                 "--height": "height", "--frames": "num_frames", "--fps": "fps", "--seed": "seed",
                 "--steps": "num_inference_steps", "--guidance": "guidance_scale"}
# None = not given: a distilled preset's request hints, else the request's defaults (printed when a hint is used)
HINTED = ("num_inference_steps", "guidance_scale")
DEFAULT_OUTPUTS = "outputs"  # where a video goes without --out (relative to the working directory)
TERMINATED_STATUS = 128 + signal.SIGTERM  # 143: how a shell reports a process ended by SIGTERM


def build_parser() -> argparse.ArgumentParser:
    d = GenerationRequest("x")
    p = _OneLineParser(prog="python -m wan_ui", description="Wan2.1-T2V-1.3B generation and options")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate one video")
    g.add_argument("--model", default=None, help="tiny | random-full | hub id | local folder "
                   "(default: the hub checkpoint with a CUDA GPU, else tiny)")
    tiny = GenerationRequest("x", **TINY_MODEL_DEFAULTS)
    for flag, name in REQUEST_FLAGS.items():
        spec = REQUEST_SPECS[name]
        if name in HINTED:
            add_argument(g, spec, flag, default=None, help=cli_help(spec, f"{getattr(d, name)} or the preset's"))
        elif name in TINY_MODEL_DEFAULTS:  # None = not given: the model's own default (the tiny model has its own)
            add_argument(g, spec, flag, default=None,
                         help=cli_help(spec, f"{getattr(d, name)}; {getattr(tiny, name)} on the tiny model"))
        else:
            add_argument(g, spec, flag, default=getattr(d, name), required=name == "prompt")
    g.add_argument("--preset", default=None, help="start from a preset, built-in or your own (see `presets`)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an option; repeatable")
    g.add_argument("--out", default=None, help=f"video path ending in .mp4, never overwritten (default: a unique "
                   f"name in ./{DEFAULT_OUTPUTS}); a folder that cannot take it is refused before any model work")
    g.add_argument("--json", action="store_true", help="print one JSON object with the result and metrics")
    g.add_argument("--quality", action="store_true", help="also compute CLIP score and temporal LPIPS")
    g.add_argument("--parallel", default=None, metavar="MODE",
                   help="one video on several GPUs, run under `torchrun --nproc-per-node N`: auto | ulysses[=N] | "
                        "ring[=N] | ulysses=U,ring=R | cfg | none (default: auto under torchrun, else none); "
                        "rank 0 writes the video and the JSON")
    o = sub.add_parser("options", help="list every optimization option")
    o.add_argument("--json", action="store_true")
    sub.add_parser("presets", help="list presets (built-in, then your own)")
    return p


def cmd_generate(args) -> int:
    if args.out is not None:  # a place that cannot take the video is refused first, on every rank
        check_output_path(args.out)
    else:
        check_output_folder(DEFAULT_OUTPUTS, field="out")
    base = preset(args.preset) if args.preset else OptimizationSet()
    opts = parse_set_args(args.set, base=base)
    runtime = _parallel_runtime(args.parallel)  # None: one process, one device
    leader = runtime is None or runtime.dist.leader  # only rank 0 prints and writes
    log = (lambda m: print(f"[wan_ui] {m}", file=sys.stderr)) if leader else (lambda m: None)
    manager = ModelManager(device=runtime.dist.device if runtime else None, log=log, parallel=runtime)
    notes = []
    req = _request(args, tiny_model=resolve_model(args.model, manager.hw.cuda).kind == TINY, log=notes.append)
    # fail fast on user mistakes, before any model work
    validate_request(req)
    check_available(opts, manager.hw)
    check_compatible(opts)
    if runtime is not None:
        runtime.check(opts)
    for note in notes:
        log(note)
    if not leader:
        _quiet_follower()
        generate(manager, args.model, req, opts, out_dir=None)
        return 0
    progress = _progress_printer(not args.json or sys.stderr.isatty())
    try:
        result = generate(manager, args.model, req, opts, out_dir=DEFAULT_OUTPUTS, out_path=args.out,
                          on_progress=progress)
    finally:
        if progress is not None:  # before any error line: a bar closed later would print after it
            progress.close()
    if args.quality:
        try:
            score_result(result)
            update_video_metadata(result)  # the scores join the sidecar and the mp4's comment tag
        except Terminated:
            print(f"error: terminated by SIGTERM while scoring; {result.video_path} was written, without its "
                  f"quality scores", file=sys.stderr)
            return TERMINATED_STATUS
    for note in [*result.request.notes, *result.metrics.option_notes]:
        print(f"[wan_ui] note: {note}", file=sys.stderr)
    if result.build.random_weights:
        print(f"[wan_ui] {result.build.label}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        m = result.metrics
        print(f"wrote {result.video_path}: {result.frames.shape[0]} frames in {m.clip_latency_s:.2f} s "
              f"({m.throughput_fps:.3f} fps)")
    return 0


def _request(args, tiny_model: bool, log) -> GenerationRequest:
    """The request from the flags; a flag not given takes the model's default (said once for the tiny model)."""
    base = default_request(tiny_model, args.prompt)
    fields = {name: getattr(args, name) for name in REQUEST_FLAGS.values() if name not in HINTED}
    unset = [name for name in TINY_MODEL_DEFAULTS if getattr(args, name) is None]
    if tiny_model and set(unset) - {"fps"}:  # said once the request is known to be valid (one line per mistake)
        log(f"note: {describe_defaults(True)}")
    fields.update({name: getattr(base, name) for name in unset if name in fields})
    return GenerationRequest(**fields, **_request_settings(args, base))


def _request_settings(args, base: GenerationRequest) -> dict:
    """Steps and guidance: the user's flags, else the preset's request hints (said on stderr), else the defaults."""
    given = {name: getattr(args, name) for name in HINTED}
    hints = request_hints_for(args.preset, given)
    if hints:
        said = ", ".join(f"{k}={v}" for k, v in hints.items())
        print(f"[wan_ui] preset {args.preset!r} set {said} (pass --steps/--guidance to override). "
              f"{PRESET_NOTES.get(args.preset, '')}", file=sys.stderr)
    return {k: v if v is not None else hints.get(k, getattr(base, k)) for k, v in given.items()}


def _parallel_runtime(text: str | None):
    """--parallel under torchrun -> this rank's ParallelRuntime (process group joined); None for one process."""

    world = torchrun_world_size()
    config = ParallelConfig.parse(text or ("auto" if world > 1 else "none"))
    if config.mode == "none" and world == 1:
        return None
    if world == 1:
        raise UserError(f"--parallel {config.to_text()} needs several processes: run it under "
                        f"`torchrun --nproc-per-node N -m wan_ui generate ...`", field="parallel")
    if config.mode == "none":
        raise UserError(f"--parallel none with {world} processes would compute the whole video {world} times; "
                        f"pass --parallel auto (or ulysses / ring / cfg)", field="parallel")
    runtime = ParallelRuntime(config, init_distributed())
    atexit.register(finish_distributed)
    return runtime


def _quiet_follower() -> None:
    """Ranks > 0 run the same job silently: no progress bars, no library warnings."""

    DiffusionPipeline._progress_bar_config = {"disable": True}
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()


def cmd_options(args) -> int:
    """Every option with its values, availability here and fidelity class per value; then each preset's lossy and
    close levers (docs/FIDELITY.md)."""
    rows = options_table(probe_hardware())
    presets = [{"name": name, "description": preset_description(name), "fidelity": worst_fidelity(preset(name)),
                "levers": [lever.to_dict() for lever in fidelity_of(preset(name))]} for name in PRESETS]
    if args.json:
        print(json.dumps({"options": rows, "presets": presets}, indent=1))
        return 0
    for r in rows:
        allowed = r["values"] if r["values"] is not None else r["bounds"]
        print(f"{r['family']:12} {r['name']:26} {r['kind']:9} default={r['default']!r:10} allowed={allowed}")
        for v, why in r["unavailable_values"].items():
            print(f"{'':12} {'':26} unavailable {v}: {why}")
        print(f"{'':12} {'':26} fidelity: {fidelity_info(r['name'])}")
    print("\npresets (fidelity: docs/FIDELITY.md)")
    for p in presets:
        print(f"  {p['description']}")
    return 0


def cmd_presets(args) -> int:
    """The built-in presets, then the user's own (core/user_presets.py: what `python -m wan_ui.tune` saves)."""
    print(json.dumps({name: PRESETS.get(name) or preset(name).diff_from_default() for name in preset_names()},
                     indent=1))
    return 0


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler: it unwinds the run as Ctrl-C does, so every writer's
    `finally` removes its temporary file (core/files.atomic_path) and ffmpeg is stopped; not an Exception, so no
    library's `except Exception` swallows it on the way."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    configure_allocator()  # expandable segments unless the user configured the allocator (hardware.py)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        return {"generate": cmd_generate, "options": cmd_options, "presets": cmd_presets}[args.command](args)
    except UserError as e:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank sees the same mistake
            print(f"error: {e}", file=sys.stderr)
        return 2
    except (GenerationCancelled, EncoderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print("error: terminated by SIGTERM; the run was cancelled and nothing was written", file=sys.stderr)
        return TERMINATED_STATUS
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
