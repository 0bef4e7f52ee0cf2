"""The app's entry point (`python app.py`, or the `wan-ui` command): the Gradio workbench on http://127.0.0.1:7860
(`--listen` to serve the network).

Builds the one model manager, quality scorer and baseline cache of this process and hands them to the UI.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

from wan_ui.cluster.serving import build_ray_pool
from wan_ui.core.errors import UserError
from wan_ui.core.hardware import configure_allocator
from wan_ui.core.model_download import ModelDownload
from wan_ui.core.models import resolve_model
from wan_ui.core.quality import BaselineCache, QualityScorer
from wan_ui.core.requests import DEFAULT_MAX_COST_CPU, DEFAULT_MAX_COST_GPU, default_max_cost
from wan_ui.parallel.serving import build_app_manager, parse_gpus, relaunch_command
from wan_ui.ui.app import create_demo, launch_kwargs
from wan_ui.ui.context import RunRegistry
from wan_ui.ui.guard import LOG, LOG_NAME
from wan_ui.ui.limits import (
    DEFAULT_CACHE_HOURS,
    DEFAULT_JOBS_PER_USER,
    DEFAULT_LOGINS_PER_MINUTE,
    DEFAULT_UPLOAD_MB,
    ServerLimits,
)
from wan_ui.ui.shutdown import STOP_TIMEOUT_S, clean_outputs, serve_until_stopped
from wan_ui.ui.zerogpu import load_spaces


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Wan2.1-T2V-1.3B workbench (Gradio app)")
    p.add_argument("--listen", action="store_true", help="bind 0.0.0.0 (default: $GRADIO_SERVER_NAME, which "
                   "Hugging Face Spaces set, else 127.0.0.1: this machine only); needs --auth, or --no-auth-i-know")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="open a public gradio.live link (off by default); needs "
                   "--auth, or --no-auth-i-know")
    p.add_argument("--model", default=None, help="tiny | random-full | hub id | local folder "
                   "(default: the hub checkpoint with a CUDA GPU, else the tiny random-weight model)")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require a login")
    p.add_argument("--no-auth-i-know", action="store_true",
                   help="serve --listen or --share without a login: anyone who reaches the port can use the GPU "
                        "(e.g. in a container whose port only this machine reaches)")
    p.add_argument("--outputs", default="outputs", help="folder for videos and comparison tables")
    p.add_argument("--max-queue", type=int, default=None, metavar="N",
                   help="jobs that may wait in the queue before new ones are refused (default: 32; 0 = no bound)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpus", default=None, metavar="LIST",
                       help="GPU indices to use, e.g. 0,1 (default: one GPU, or the CPU without one)")
    where.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run every job on a Ray cluster's GPUs, one worker per GPU: auto (the cluster this "
                            "machine joined with `ray start`), HOST:PORT of its head, ray://HOST:10001, or local "
                            "(start one here); needs `pip install ray` (docs/SCALING.md)")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="with --ray: at most N workers (default: one per GPU of the cluster; 1 without GPUs)")
    p.add_argument("--gpu-mode", default="pool", choices=("pool", "parallel"),
                   help="with --gpus: pool = one pipeline per GPU, each job on a free one (more users at once); "
                        "parallel = every job across all of them (one video faster; restarts under torchrun)")
    p.add_argument("--parallel", default=None, metavar="MODE",
                   help="with --gpu-mode parallel: auto | ulysses[=N] | ring[=N] | ulysses=U,ring=R | cfg "
                        "(default: auto)")
    p.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S, metavar="S",
                   help=f"on SIGTERM (docker stop) or Ctrl-C: seconds to wait for cancelled runs to stop before "
                        f"exiting (default: {STOP_TIMEOUT_S:g})")
    p.add_argument("--no-save-settings", action="store_true",
                   help="do not write the last-used settings file (~/.config/wan_ui/last.json, or $WAN_UI_SETTINGS)")
    add_limit_flags(p.add_argument_group("limits (0 = none; docs/RELIABILITY.md, 'Round two: errors and limits')"))
    return p


def add_limit_flags(group) -> None:
    group.add_argument("--max-cost", type=_count, default=None, metavar="N",
                       help=f"largest job in token-forwards (tokens per forward x steps x 2 with CFG; a comparison "
                            f"counts each set): larger ones are refused naming the fields to lower (default: "
                            f"{DEFAULT_MAX_COST_GPU:,} with a GPU, {DEFAULT_MAX_COST_CPU:,} on a CPU)")
    group.add_argument("--max-jobs-per-user", type=_count, default=None, metavar="N",
                       help=f"GPU jobs one client address may have waiting or running (default: "
                            f"{DEFAULT_JOBS_PER_USER}; 0 on a Hugging Face Space, where every visitor comes "
                            f"through its proxy)")
    group.add_argument("--max-upload-mb", type=_count, default=DEFAULT_UPLOAD_MB, metavar="MB",
                       help=f"largest uploaded file (default: {DEFAULT_UPLOAD_MB})")
    group.add_argument("--max-logins-per-minute", type=_count, default=DEFAULT_LOGINS_PER_MINUTE, metavar="N",
                       help=f"failed logins per client address a minute before /login answers 429 (default: "
                            f"{DEFAULT_LOGINS_PER_MINUTE})")
    group.add_argument("--cache-hours", type=float, default=DEFAULT_CACHE_HOURS, metavar="H",
                       help=f"Gradio's copies of result videos and uploads are deleted when older (default: "
                            f"{DEFAULT_CACHE_HOURS}; 0 = kept until the server stops)")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def server_limits(args, cuda: bool) -> ServerLimits:
    """The flags as ServerLimits; defaults that depend on the machine filled in, 0 meaning no limit."""
    max_cost = default_max_cost(cuda) if args.max_cost is None else args.max_cost
    share = args.max_jobs_per_user
    if share is None:
        share = 0 if os.environ.get("SPACE_ID") else DEFAULT_JOBS_PER_USER
    return ServerLimits(max_cost=max_cost or None, jobs_per_user=share or None, upload_mb=args.max_upload_mb or None,
                        logins_per_minute=args.max_logins_per_minute or None,
                        cache_hours=args.cache_hours if args.cache_hours > 0 else None)


def check_exposure(args) -> None:
    """--listen or --share without a login is refused unless the user says --no-auth-i-know."""
    if (args.listen or args.share) and args.auth is None and not args.no_auth_i_know:
        flag = "--listen" if args.listen else "--share"
        raise SystemExit(f"error: {flag} serves the app beyond this machine, and without --auth anyone who reaches it "
                         f"can use the GPU: add --auth USER:PASS, or --no-auth-i-know if only trusted machines reach "
                         f"the port (docker run -p 127.0.0.1:7860:7860, a private network)")


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SystemExit("error: --auth expects USER:PASS")
    return user, password


def build_manager(args, argv: list[str]):
    """One manager, a pool of one per GPU, a pool of a Ray cluster's workers (--ray), or this rank's share of a
    parallel app (None on ranks > 0, which ran the UI's jobs until it stopped). `--gpu-mode parallel` outside
    torchrun restarts itself as N processes."""
    log = lambda m: print(f"[wan_ui] {m}", file=sys.stderr)  # noqa: E731
    if args.ray:
        return build_ray_pool(args.ray, args.ray_workers, log=log)
    if args.ray_workers is not None:
        raise UserError("--ray-workers needs --ray ADDRESS", field="ray_workers")
    gpus = parse_gpus(args.gpus)
    if gpus and args.gpu_mode == "parallel" and "WORLD_SIZE" not in os.environ:
        cmd, env = relaunch_command([os.path.abspath(sys.argv[0]), *argv], gpus)
        os.execvpe(cmd[0], cmd, env)
    return build_app_manager(gpus, args.gpu_mode, args.parallel, log=log)


def log_to_file(outputs: str | Path) -> Path:
    """The app's log: `wan_ui` messages and the tracebacks of internal errors (ui/guard.py) go to stderr and to
    <outputs>/wan_ui.log, the file the page's error toasts point to. Returns the file's path."""
    path = Path(outputs) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    LOG.setLevel(logging.INFO)
    if not any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in LOG.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        LOG.addHandler(handler)
    return path


def main(argv=None) -> int:
    configure_allocator()  # before CUDA starts: expandable segments unless the user configured the allocator
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    auth = parse_auth(args.auth)
    check_exposure(args)
    log_to_file(args.outputs)
    spaces = load_spaces()  # on a ZeroGPU Space `spaces` must be imported before CUDA starts; elsewhere a no-op

    try:
        manager = build_manager(args, argv)
        if manager is None:  # --gpu-mode parallel, rank > 0: it ran the UI's jobs until the app stopped
            return 0
        source = resolve_model(args.model, manager.hw.cuda)  # a bad --model fails here, before the server starts
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # a hub checkpoint downloads now, in the background, with its progress in the page's header
    # (with --ray each worker's node downloads it on its first job: docs/SCALING.md)
    downloads = ModelDownload(source, log=manager.log).start() if source.kind == "hub" and not args.ray else None
    clean_outputs(args.outputs)  # what a killed run left (ui/shutdown.py)
    runs = RunRegistry()  # the running jobs, cancelled on SIGTERM
    # ZeroGPU lends a GPU per call from a process that may show none
    limits = server_limits(args, cuda=manager.hw.cuda or spaces is not None)
    demo = create_demo(manager, model=args.model, scorer=QualityScorer(device=manager.device),
                       baseline_cache=BaselineCache(), outputs=args.outputs, runs=runs, limits=limits,
                       save_settings=not args.no_save_settings, downloads=downloads,
                       **({} if args.max_queue is None else {"max_queue": args.max_queue or None}))
    server_name = "0.0.0.0" if args.listen else os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    launch = functools.partial(demo.launch, server_name=server_name, server_port=args.port, share=args.share,
                               auth=auth, prevent_thread_lock=True, **launch_kwargs(args.outputs, limits))
    return serve_until_stopped(demo, runs, launch, args.stop_timeout)  # until SIGTERM or Ctrl-C (ui/shutdown.py)
