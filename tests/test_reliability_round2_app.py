"""The app's side of reliability round two (docs/RELIABILITY.md): SIGTERM to a real `python app.py --model tiny`
during a run cancels it, logs it, and exits within the bound leaving no partial file; start-up removes what a
killed writer left (our names only); while shutting down new jobs are refused with a clear message; the Cancel
reply says what really happened (cancelled during the decode: nothing written; too late: the video was written)."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from diffusers import AutoencoderKLWan
from ui_server import free_port, launches  # noqa: F401  (launches: a fixture)

from wan_ui.core.errors import UserError
from wan_ui.ui.context import AppContext, RunRegistry
from wan_ui.ui.generate_tab import RUN_OUTPUTS, cancel_handler, generate_task, run_generate
from wan_ui.ui.shutdown import Shutdown

ROOT = Path(__file__).resolve().parents[1]
DEAD_PID = 2 ** 22 + 12345  # above Linux's default pid_max (2^22): no process has it
TINY = dict(prompt="a paper boat on a puddle", width=64, height=64, num_frames=9, num_inference_steps=2, seed=3)
# 200 steps, CFG off, 256x256, 9 frames: 153,600 token-forwards (inside the app's default CPU limit of 200,000),
# 0.1-0.2 s a step on 2 busy cores: a run that lasts well past the signal
SLOW = dict(prompt="a slow pan over a harbour", width=256, height=256, num_frames=9, num_inference_steps=200,
            guidance_scale=1.0)


def load_script():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def wait_until(condition, what: str, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def progress_text(job) -> str:
    progress = job.status().progress_data
    return (progress[-1].desc or "") if progress else ""


def plant_stale_files(outputs: Path) -> list[Path]:
    """What a writer killed mid-write leaves (this module's naming), with a dead process's PID or none."""
    outputs.mkdir(parents=True, exist_ok=True)
    stale = [outputs / f".wan-20260101-000000-seed1-ab12cd34.{DEAD_PID}.partial.mp4",
             outputs / f".wan-20260101-000000-seed1-ab12cd34.{DEAD_PID}.tmp.json",
             outputs / ".wan-20260101-000000-seed2-00000000.partial.mp4"]
    for path in stale:
        path.write_bytes(b"\x00\x00\x00\x20ftypisom")
    return stale


# ---- SIGTERM to the real app --------------------------------------------------------------------------------
def test_sigterm_during_a_run_cancels_it_logs_it_and_exits_within_the_bound(tiny_folder, tmp_path):
    from gradio_client import Client

    outputs = tmp_path / "outputs"
    stale = plant_stale_files(outputs)
    earlier = outputs / "wan-earlier.mp4"  # a finished video of an earlier run: not ours to remove
    earlier.write_bytes(b"a video")
    script = load_script()
    proc, url = script.launch_app(outputs, None, extra=["--stop-timeout", "20"], log_path=tmp_path / "app.out")
    try:
        log = (outputs / "wan_ui.log").read_text()
        assert not any(p.exists() for p in stale) and earlier.exists()
        assert all(f"start-up: removed {p.name}" in log for p in stale), log
        job = Client(url, verbose=False, download_files=False).submit(**SLOW, api_name="/generate")
        wait_until(lambda: "step" in progress_text(job) or job.done(), "the run denoises")
        assert not job.done(), job.result()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (outputs / "wan_ui.log").read_text()
    assert "SIGTERM: shutting down: no new jobs are taken; cancelling 1 running job(s), waiting up to 20 s" in log
    assert "SIGTERM: running job 1 of 1 cancelled; nothing was written" in log and "SIGTERM: stopped" in log
    assert "SIGTERM: running job 1 of 1 cancelled" in (tmp_path / "app.out").read_text()  # stderr too
    assert took < 20 + 10, f"exited {took:.1f} s after SIGTERM"
    assert files(outputs) == [outputs / "wan-earlier.mp4", outputs / "wan_ui.log"]  # no video, no partial file
    status = dict(zip(RUN_OUTPUTS, job.result(timeout=30)))["status"]
    assert status.startswith("Cancelled: cancelled after step") and "of 200" in status  # what the user saw


@pytest.fixture(scope="module", autouse=True)
def idle_app(tiny_folder, tmp_path_factory):
    """(the app's start, its outputs folder) for test_sigterm_when_idle_exits_at_once: a real `python app.py`
    started with this module's first test, in a thread (launch_app returns once the page answers), so its ~10 s of
    imports run on the second core while the first test runs; killed after the module if still running."""
    outputs = tmp_path_factory.mktemp("idle_app") / "outputs"
    with ThreadPoolExecutor(1) as pool:
        start = pool.submit(load_script().launch_app, outputs, None)
        yield start, outputs
    if start.exception() is None and start.result()[0].poll() is None:
        start.result()[0].kill()


def test_sigterm_when_idle_exits_at_once(idle_app):
    start, outputs = idle_app
    proc, _ = start.result()
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - sent < 15
    assert "SIGTERM: shutting down: no new jobs are taken; cancelling 0 running job(s)" in (
        outputs / "wan_ui.log").read_text()


# ---- while shutting down ------------------------------------------------------------------------------------
def test_shutting_down_refuses_new_jobs_and_cancels_the_running_one(tiny_folder, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo, launch_kwargs

    runs, outputs = RunRegistry(), tmp_path / "outputs"
    demo = create_demo(ModelManager(device="cpu", log=lambda m: None), model="tiny", outputs=outputs,
                       save_settings=False, runs=runs)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(outputs))
    try:
        client = Client(url, verbose=False, download_files=False)
        job = client.submit(**SLOW, api_name="/generate")
        wait_until(lambda: "step" in progress_text(job), "the run denoises")
        assert Shutdown(runs, timeout_s=60).stop("SIGTERM") is True  # returns once the run has ended
        status = dict(zip(RUN_OUTPUTS, job.result(timeout=30)))["status"]
        assert status.startswith("Cancelled: cancelled after step")
        with pytest.raises(AppError, match=r"The app is shutting down \(SIGTERM\): it takes no new jobs"):
            client.predict(**TINY, api_name="/generate")
        assert not list(outputs.glob("*.mp4"))
    finally:
        demo.close()


def test_a_job_that_outlives_the_bound_is_reported_and_not_waited_for(caplog):
    runs, started, release = RunRegistry(), threading.Event(), threading.Event()

    def stubborn_job():  # e.g. a decode that takes longer than the bound: it checks its flag only afterwards
        with runs.running("s1"):
            started.set()
            release.wait(30)

    thread = threading.Thread(target=stubborn_job)
    thread.start()
    started.wait(10)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="wan_ui"):
        assert Shutdown(runs, timeout_s=0.3).stop("SIGTERM") is False
    assert time.monotonic() - t0 < 5
    assert "running job 1 of 1 still running after 0.3 s; exiting without it" in caplog.text
    release.set()
    thread.join(10)


def test_the_registry_refuses_new_runs_once_closed_and_records_how_each_ended():
    runs = RunRegistry()
    with runs.running("a") as flag:
        done = runs.cancel("a")
    assert flag.is_set() and done.outcome == "finished"  # the flag came too late: it did not stop the job
    with runs.running("a") as flag:
        done = runs.cancel("a")
        flag.honoured = True  # the job stopped on it
    assert done.outcome == "cancelled"
    with pytest.raises(RuntimeError), runs.running("a"):
        done = runs.cancel("a")
        raise RuntimeError("it failed")
    assert done.outcome == "failed"
    with runs.running("b") as flag:
        ends = runs.close("The app is shutting down (SIGTERM).")
        assert flag.is_set() and list(ends) == ["b"]
        with pytest.raises(UserError, match="shutting down"), runs.running("c"):
            pass
    assert ends["b"].is_set()


# ---- start-up cleanup -------------------------------------------------------------------------------------
def test_start_up_removes_only_our_stale_files_and_logs_them(launches, tmp_path):  # noqa: F811
    import app

    outputs = tmp_path / "outputs"
    stale = plant_stale_files(outputs)
    live = outputs / f".wan-x.{os.getppid()}.partial.mp4"  # a process that is alive (another app) still writes it
    others = [outputs / "wan-1.mp4", outputs / "wan-1.json", outputs / ".user-notes", outputs / "clip.partial.mp4"]
    for path in [live, *others]:
        path.write_bytes(b"x")
    assert app.main(["--model", "tiny", "--outputs", str(outputs)]) == 0
    assert sorted(files(outputs)) == sorted([live, *others, outputs / "wan_ui.log"])
    log = (outputs / "wan_ui.log").read_text()
    assert all(f"removed {p.name}" in log for p in stale) and f"kept 1 temporary file(s) in {outputs}" in log


# ---- the Cancel reply says what happened --------------------------------------------------------------------
@pytest.fixture
def ctx(manager, tmp_path):
    ctx = AppContext(manager, model="tiny", outputs=tmp_path / "outputs", save_settings=False)
    ctx.gpu_generate = generate_task(ctx)
    return ctx


def click_cancel_while(ctx, session: str):
    """(replies, click): call `click()` from inside a phase of the run to press Cancel there (it returns once the
    flag is set); the button's reply joins `replies` once the run has ended, as the real handler waits for it."""
    replies, clicked = [], threading.Event()
    on_cancel = cancel_handler(ctx)
    request = SimpleNamespace(session_hash=session)
    real_cancel = ctx.runs.cancel

    def cancel(s):
        done = real_cancel(s)
        clicked.set()
        return done

    ctx.runs.cancel = cancel

    def click():
        threading.Thread(target=lambda: replies.append(on_cancel(request)), daemon=True).start()
        assert clicked.wait(10)

    return replies, click


def test_cancel_during_the_decode_writes_nothing_and_both_messages_say_so(ctx, monkeypatch):
    replies, click = click_cancel_while(ctx, "s1")
    real_decode = AutoencoderKLWan.decode

    def decode_while_cancelled(self, *args, **kwargs):
        click()
        return real_decode(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKLWan, "decode", decode_while_cancelled)
    shown, info = run_generate(ctx, TINY, "s1", lambda *a, **k: None)
    assert info is None and shown["status"].startswith(
        "Cancelled: cancelled during the VAE decode (its frames were discarded). Nothing was written")
    wait_until(lambda: replies, "the Cancel reply arrives", 30)
    assert replies[0].startswith("Run cancelled at") and replies[0].endswith("nothing was written.")
    assert not ctx.outputs.exists() or files(ctx.outputs) == []


def test_cancel_while_the_video_is_written_says_it_came_too_late(ctx, monkeypatch):
    """Past the decode nothing checks the flag (the video is being written): the run finishes, and the reply
    says so instead of "Run cancelled"."""
    from wan_ui.core import generate as core_generate

    replies, click = click_cancel_while(ctx, "s1")
    real_write = core_generate.write_video

    def write_while_cancelled(*args, **kwargs):
        click()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(core_generate, "write_video", write_while_cancelled)
    shown, info = run_generate(ctx, TINY, "s1", lambda *a, **k: None)
    assert shown["status"].startswith("Done") and Path(info["video"]).is_file()
    wait_until(lambda: replies, "the Cancel reply arrives", 30)
    assert replies[0].startswith("Too late to cancel") and "its video was written" in replies[0]
