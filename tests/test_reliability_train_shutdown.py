"""The app's shutdown (SIGTERM or Ctrl-C: ui/shutdown.py) stops a LoRA training run started from the Train tab:
the run ends after its current step with a checkpoint to resume from and its LoRA, each written whole; the log and
the Train tab's status say the app stopped it; a run started after the shutdown began is refused; Resume then
continues from that checkpoint (docs/RELIABILITY.md, "Round two: writing videos, shutdown, cancel")."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest
from train_files import write_dataset

from wan_ui.core.errors import UserError
from wan_ui.core.hardware import Hardware
from wan_ui.train.job import TrainJob, config_from_values, default_values
from wan_ui.ui.context import TRAIN_SESSION, AppContext
from wan_ui.ui.shutdown import Shutdown
from wan_ui.ui.train_tab import check_can_train, status_markdown

CPU = Hardware(False, "cpu", None, None, frozenset())
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one OpenMP thread for the tiny model


@pytest.fixture
def roots(tmp_path, monkeypatch):
    data, loras = tmp_path / "train_data", tmp_path / "loras"
    write_dataset(data / "squares", 1)
    loras.mkdir()
    monkeypatch.setenv("WAN_UI_TRAIN_DIR", str(data))
    monkeypatch.setenv("WAN_UI_LORA_DIR", str(loras))
    return data, loras


def config(resume=False, **kw):
    values = {**default_values(cuda=False), "data": "squares", "lora_name": "squares", "steps": 100_000,
              "save_every": 0, **kw}
    return config_from_values(values, model="tiny", device="cpu", resume=resume)


def app_context(load_lock=None) -> AppContext:
    """The app's context as create_demo builds it; no generation runs here, so the manager is a stand-in."""
    return AppContext(SimpleNamespace(load_lock=load_lock, hw=CPU, device="cpu"), model="tiny")


def wait_for_steps(job: TrainJob, n: int, timeout_s: float = 120):
    deadline = time.time() + timeout_s
    while len(job.status().records) < n:
        if time.time() > deadline or not job.status().running:
            pytest.fail(f"the run did not reach step {n}: {job.status()}")
        time.sleep(0.01)


def test_the_shutdown_stops_a_training_run_with_a_checkpoint_to_resume_from(roots, tiny_folder, caplog):
    _, loras = roots
    ctx = app_context()
    ctx.trainer.start(config(), CPU)
    wait_for_steps(ctx.trainer, 2)
    with caplog.at_level(logging.INFO, logger="wan_ui"):
        assert Shutdown(ctx.runs, timeout_s=60).stop("SIGTERM") is True  # returns once the run has ended
    stopped = ctx.trainer.status()
    at = stopped.last["step"]
    assert stopped.phase == "stopped" and stopped.stopped_by_app and at < 100_000, stopped
    assert stopped.checkpoint.endswith(f"squares_checkpoints/step-{at:06d}")
    assert "cancelling 1 running job(s)" in caplog.text
    assert (f"SIGTERM: running job 1 of 1 stopped after its current step and saved checkpoint "
            f"squares_checkpoints/step-{at:06d} and LoRA squares.safetensors") in caplog.text
    assert any(f"stopped by the app's shutdown at step {at}" in line for line in stopped.log)
    text = status_markdown(stopped)
    assert text.startswith(f"**Stopped by the app's shutdown** at step {at} of 100000") and "once the app is back" \
        in text
    # written whole: the final names only, no temporary sibling left (core/files.atomic_path)
    assert sorted(p.name for p in loras.iterdir()) == ["squares.safetensors", "squares_checkpoints"]
    checkpoint = loras / "squares_checkpoints" / f"step-{at:06d}"
    assert sorted(p.name for p in (loras / "squares_checkpoints").iterdir()) == ["metrics.jsonl", checkpoint.name]
    assert {p.name for p in checkpoint.iterdir()} == {"adapter.safetensors", "optimizer.pt", "rng.safetensors",
                                                       "rng.json", "state.json"}

    # while shutting down: the tab refuses a new run, and a run started around it ends with the reason
    with pytest.raises(UserError, match=r"The app is shutting down \(SIGTERM\): it takes no new jobs") as e:
        check_can_train(ctx)
    assert e.value.field == "train"
    ctx.trainer.start(config(resume=True, steps=at + 2), CPU)
    refused = ctx.trainer.wait(60)
    assert refused.phase == "failed" and "The app is shutting down (SIGTERM)" in refused.error

    # once the app is back (a new context): Resume continues from the checkpoint the shutdown saved
    back = app_context()
    resumed = back.trainer.start(config(resume=True, steps=at + 2), CPU)
    assert resumed.start_step == at
    done = back.trainer.wait(120)
    assert done.phase == "done" and [r["step"] for r in done.records] == list(range(1, at + 3)), done
    assert any(f"at step {at}" in line and "resumed from" in line for line in done.log)


class HeldLoads:
    """The run's load lock (the model manager's in the app), held by the test: the run waits in its preparation,
    inside its run scope, until the test lets it go."""

    def __init__(self):
        self.waiting, self.go = threading.Event(), threading.Event()

    def __enter__(self):
        self.waiting.set()
        assert self.go.wait(60)

    def __exit__(self, *exc):
        return False


def test_a_run_stopped_by_the_shutdown_while_preparing_writes_nothing(roots, tiny_folder):
    _, loras = roots
    ctx = app_context()
    ctx.runs.close("The app is shutting down (SIGINT): it takes no new jobs.")
    ctx.trainer.start(config(), CPU)  # its scope refuses to open
    refused = ctx.trainer.wait(60)
    assert refused.phase == "failed" and refused.error.startswith("The app is shutting down (SIGINT)")

    loads = HeldLoads()
    ctx = app_context(load_lock=loads)
    ctx.trainer.start(config(), CPU)
    assert loads.waiting.wait(60)
    ends = ctx.runs.close("The app is shutting down (SIGINT): it takes no new jobs.")
    assert list(ends) == [TRAIN_SESSION] and ctx.trainer.status().phase == "stopping"
    assert status_markdown(ctx.trainer.status()).startswith("**Stopping** `squares.safetensors` after step 0 (the "
                                                             "app is shutting down)")
    loads.go.set()
    stopped = ctx.trainer.wait(120)
    assert stopped.phase == "stopped" and stopped.stopped_by_app and not stopped.records, stopped
    assert ends[TRAIN_SESSION].wait(10) and ends[TRAIN_SESSION].outcome == "cancelled"  # nothing was written
    assert status_markdown(stopped) == ("**Stopped by the app's shutdown** before the first step of "
                                        "`squares.safetensors`: nothing was trained or written.")
    assert not (loras / "squares.safetensors").exists()
    assert not any((loras / "squares_checkpoints").glob("step-*"))
