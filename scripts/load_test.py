"""Fire N concurrent /generate calls at the app and check what came back: every call completes or is refused with
Gradio's queue-full error, the videos are distinct complete files, nothing half-written is left, the server stays up.

    python scripts/load_test.py                              # launches `app.py --model tiny` on a free port
    python scripts/load_test.py --max-queue 32 --max-queue 4  # one run per queue bound
    python scripts/load_test.py --url http://127.0.0.1:7860/ --outputs outputs   # an app already running
    python scripts/load_test.py --write docs/RELIABILITY.md  # replace the figures section of that file

Each call is its own gradio_client session (20 users clicking Generate at once), on the smallest request the
tiny model takes (16x16, 1 frame, 1 step, CFG off), each with its own seed. Queue wait = submit -> the first
PROCESSING status the client sees (polled every 20 ms). tests/test_reliability_load.py runs `fire` and asserts the
invariants; docs/RELIABILITY.md carries the figures this script printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from wan_ui.ui.app import MAX_QUEUE

ROOT = Path(__file__).resolve().parents[1]
REQUEST = dict(prompt="a lighthouse in a storm", width=16, height=16, num_frames=1, num_inference_steps=1,
               guidance_scale=1.0, fps=8)
MARK_START, MARK_END = "<!-- load_test:start -->", "<!-- load_test:end -->"


@dataclass
class Call:
    index: int
    outcome: str = "pending"  # "completed" | "queue full" | "error"
    message: str = ""
    video: str | None = None
    queue_wait_s: float | None = None  # submit -> first PROCESSING status seen
    latency_s: float | None = None  # submit -> result


@dataclass
class LoadReport:
    calls: list[Call]
    total_s: float
    max_queue: int | None
    steps: int
    problems: list[str] = field(default_factory=list)  # broken invariants (empty: all held)

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.calls)

    def row(self) -> dict:
        waits = [c.queue_wait_s for c in self.calls if c.queue_wait_s is not None]
        lat = [c.latency_s for c in self.calls if c.outcome == "completed"]
        return {"calls": len(self.calls), "max queue": self.max_queue if self.max_queue is not None else "none",
                "completed": self.count("completed"), "rejected (queue full)": self.count("queue full"),
                "other errors": self.count("error"), "max queue wait s": round(max(waits), 2) if waits else None,
                "median latency s": round(statistics.median(lat), 2) if lat else None,
                "total s": round(self.total_s, 2), "invariants": "held" if not self.problems else "; ".join(self.problems)}


# ---- firing ---------------------------------------------------------------------------------------------------
def _run_call(url: str, call: Call, barrier: threading.Barrier, steps: int, timeout_s: float, auth=None) -> None:
    from gradio_client import Client
    from gradio_client.utils import QueueError, Status

    client = Client(url, verbose=False, download_files=False, auth=auth)
    barrier.wait()  # every client is connected: submit together
    t0 = time.perf_counter()
    try:
        job = client.submit(**{**REQUEST, "num_inference_steps": steps, "seed": call.index}, api_name="/generate")
        while not job.done():
            if call.queue_wait_s is None and job.status().code == Status.PROCESSING:
                call.queue_wait_s = time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"no result after {timeout_s:.0f} s")
            time.sleep(0.02)
        out = job.result()
        call.latency_s = time.perf_counter() - t0
        call.queue_wait_s = call.latency_s if call.queue_wait_s is None else call.queue_wait_s
        info = out[list_index("result_json")]
        call.video, call.outcome = info["video"], "completed"
    except QueueError as e:
        call.outcome, call.message = "queue full", str(e)
    except Exception as e:  # noqa: BLE001 — recorded and reported as a broken invariant
        call.outcome, call.message = "error", f"{type(e).__name__}: {e}"


def list_index(name: str) -> int:
    from wan_ui.ui.generate_tab import RUN_OUTPUTS

    return RUN_OUTPUTS.index(name)


def fire(url: str, calls: int = 20, steps: int = 1, outputs: str | Path | None = None, max_queue=None,
         timeout_s: float = 300.0, auth=None) -> LoadReport:
    """`calls` concurrent /generate calls; then check the videos (when `outputs` is known) and that the server
    still answers."""
    records = [Call(i) for i in range(calls)]
    barrier = threading.Barrier(calls + 1)
    threads = [threading.Thread(target=_run_call, args=(url, c, barrier, steps, timeout_s, auth), daemon=True)
               for c in records]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout_s + 30)
    report = LoadReport(records, time.perf_counter() - t0, max_queue, steps)
    report.problems = check_invariants(url, records, outputs, auth)
    return report


def check_invariants(url: str, calls: list[Call], outputs, auth=None) -> list[str]:
    """What must hold after any load: see the module docstring."""
    from gradio_client import Client

    from wan_ui.core.video import read_video

    problems = [f"call {c.index}: {c.outcome} {c.message}" for c in calls if c.outcome not in ("completed", "queue full")]
    problems += [f"call {c.index}: refused without the queue-full message: {c.message}" for c in calls
                 if c.outcome == "queue full" and "Queue is full" not in c.message]
    videos = [c.video for c in calls if c.outcome == "completed"]
    if not videos:
        problems.append("no call completed")
    if len(set(videos)) != len(videos):
        problems.append("two calls returned the same video")
    for v in videos:
        try:
            frames, _ = read_video(v)
            if frames.shape[0] != REQUEST["num_frames"] or not Path(v).with_suffix(".json").is_file():
                problems.append(f"{v}: {frames.shape[0]} frames or no sidecar")
        except Exception as e:  # noqa: BLE001
            problems.append(f"{v}: unreadable ({type(e).__name__}: {e})")
    if outputs is not None:
        partial = sorted(p.name for p in Path(outputs).rglob("*.partial*"))
        if partial:
            problems.append(f"half-written files left: {partial}")
    try:  # the server is still up and serves a normal request
        client = Client(url, verbose=False, download_files=False, auth=auth)
        if "options" not in client.predict(api_name="/options"):
            problems.append("/options answered without options")
        client.predict(**{**REQUEST, "seed": 999}, api_name="/generate")
    except Exception as e:  # noqa: BLE001
        problems.append(f"server not serving after the load: {type(e).__name__}: {e}")
    return problems


# ---- the app under test ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(outputs: Path, max_queue: int | None, extra: list[str] = (), timeout_s: float = 300.0,
               log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`python app.py --model tiny` on a free port; returns (process, url) once the page answers."""
    port = free_port()
    # one address plays every user here: no per-address share of the queue (--max-jobs-per-user 0)
    cmd = [sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port), "--outputs", str(outputs),
           "--no-save-settings", "--max-jobs-per-user", "0", *extra]
    if max_queue is not None:
        cmd += ["--max-queue", str(max_queue)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("GRADIO_SERVER_NAME", None)  # the app's own default bind (127.0.0.1)
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=outputs.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"app.py did not answer on {url} within {timeout_s:.0f} s")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- report ---------------------------------------------------------------------------------------------------
def machine() -> str:
    import gradio
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{platform.node() or 'host'}: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
            f"{' (CUDA available)' if torch.cuda.is_available() else ''}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, gradio {gradio.__version__}; load average before the run {load}")


def markdown(reports: list[LoadReport], where: str) -> str:
    rows = [r.row() for r in reports]
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    return (f"{MARK_START}\nRun {when} with `python scripts/load_test.py {' '.join(sys.argv[1:])}`".rstrip()
            + f" on {where}.\n\n" + "\n".join(lines) + f"\n{MARK_END}")


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if MARK_START in text and MARK_END in text:
        text = text[:text.index(MARK_START)] + section + text[text.index(MARK_END) + len(MARK_END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--steps", type=int, default=1, help="denoising steps per call (1-2 on the tiny model)")
    p.add_argument("--max-queue", type=int, action="append", default=None,
                   help="queue bound of the launched app (repeatable: one run each; default: the app's own, 32)")
    p.add_argument("--url", default=None, help="an app already running (its queue bound is not known here)")
    p.add_argument("--outputs", default=None, help="its outputs folder, to check for half-written files")
    p.add_argument("--write", default=None, metavar="MARKDOWN", help="replace the figures section of this file")
    args = p.parse_args(argv)
    where = machine()
    reports = []
    if args.url:
        reports.append(fire(args.url, args.calls, args.steps, args.outputs))
    for bound in args.max_queue or [None]:
        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"wan_ui_load_{os.getpid()}_{bound}"
        outputs = work / "outputs"
        outputs.mkdir(parents=True, exist_ok=True)
        proc, url = launch_app(outputs, bound, log_path=work / "app.log")
        try:
            report = fire(url, args.calls, args.steps, outputs, max_queue=MAX_QUEUE if bound is None else bound or None)
        finally:
            stop_app(proc)
        reports.append(report)
    section = markdown(reports, where)
    print(section)
    for r in reports:
        for c in r.calls:
            if c.outcome != "completed":
                print(f"  call {c.index}: {c.outcome}: {c.message}", file=sys.stderr)
    if args.write:
        write_section(Path(args.write), section)
    return 0 if all(not r.problems for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
