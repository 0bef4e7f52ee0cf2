"""The batch queue's core (wan_ui/core/batch.py) on the tiny model: prompts x seeds in order with a video and JSON
each, pause after the current item then resume, skip the running item, cancel the rest, a bad line refused before
anything runs, one batch at a time, a run from the page taking its turn between two batch items, and the zip of a
batch's finished videos (all of them, or what finished of a cancelled or partly failed batch; none on a failure)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import zipfile
from pathlib import Path

import pytest

from wan_ui.core import batch as batch_module
from wan_ui.core.batch import (
    MAX_ITEMS,
    BatchItem,
    BatchJob,
    BatchStatus,
    parse_prompts,
    plan_batch,
    read_prompts_file,
    write_archive,
)
from wan_ui.core.errors import UserError, ValidationError
from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet

PROMPTS = "a red fox in the snow\n\n# a note, not a prompt\na lighthouse in a storm\n"
WAIT_S = 60  # a tiny item takes well under a second


@pytest.fixture
def request_(smoke_request):
    return dataclasses.replace(smoke_request, num_frames=5, seed=7)


@pytest.fixture
def job(manager, tmp_path, one_thread):
    return BatchJob(manager, "tiny", tmp_path)


class Gate:
    """Holds the `hold`-th item (1-based) at the end of its first denoising step until `release()`; records the
    order in which items start in `events`."""

    def __init__(self, monkeypatch, hold: int, events: list | None = None):
        self.hold, self.calls, self.events = hold, 0, events if events is not None else []
        self.reached, self.opened = threading.Event(), threading.Event()
        monkeypatch.setattr(batch_module, "generate", self.generate)

    def generate(self, *args, on_progress=None, **kwargs):
        self.calls += 1
        number = self.calls
        self.events.append(("batch item", number))

        def progress(phase, done, total):
            on_progress(phase, done, total)
            if number == self.hold and phase == "denoising" and done == 1:
                self.reached.set()
                assert self.opened.wait(WAIT_S)

        return generate(*args, on_progress=progress, **kwargs)

    def wait(self) -> None:
        assert self.reached.wait(WAIT_S), "the held item never reached its first step"

    def release(self) -> None:
        self.opened.set()


def wait_for(job: BatchJob, condition, what: str):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        status = job.status()
        if condition(status):
            return status
        time.sleep(0.01)
    pytest.fail(f"timed out waiting until {what}: {job.status().phase}")


def states(status) -> list[str]:
    return [item.state for item in status.items]


def test_two_prompts_two_seeds_run_in_order_with_a_video_and_json_each(job, request_):
    plan = plan_batch(PROMPTS, request_, OptimizationSet(), seeds_per_prompt=2)
    started = job.start(plan)
    assert started.phase == "running" and states(started) in (["queued"] * 4, ["running"] + ["queued"] * 3)
    status = job.wait(WAIT_S)
    assert status.phase == "done" and states(status) == ["done"] * 4
    expected = [(1, "a red fox in the snow", 7), (1, "a red fox in the snow", 8),
                (4, "a lighthouse in a storm", 7), (4, "a lighthouse in a storm", 8)]
    assert [(i.line, i.prompt, i.seed) for i in status.items] == expected
    assert [i.index for i in status.items] == [1, 2, 3, 4]
    folder = Path(status.folder)
    assert sorted(p.name for p in folder.glob("*.mp4")) == ["001-seed7.mp4", "002-seed8.mp4", "003-seed7.mp4",
                                                            "004-seed8.mp4"]
    for item, (_, prompt, seed) in zip(status.items, expected):
        assert Path(item.video).parent == folder and Path(item.video).stat().st_size > 0
        sidecar = json.loads(Path(item.video).with_suffix(".json").read_text())
        assert sidecar["request"]["prompt"] == prompt and sidecar["request"]["seed"] == seed
        assert item.result["video"] == item.video and item.result["seed"] == seed and item.result["frames"] == 5
        assert item.step == item.steps == 2 and item.seconds > 0 and item.error is None
    assert status.to_dict()["counts"] == {"queued": 0, "running": 0, "done": 4, "failed": 0, "skipped": 0,
                                          "cancelled": 0}
    # "download all": one zip of the four videos and their sidecars, beside them, in a folder named as the batch's
    assert status.archive == str(folder / f"{folder.name}.zip") and status.archived == 4
    assert status.archive_error is None and status.to_dict()["archive"] == status.archive
    assert zip_contents(status.archive) == {f"{folder.name}/{p.name}": p.read_bytes()
                                            for p in folder.iterdir() if p.suffix in (".mp4", ".json")}
    assert len(zip_contents(status.archive)) == 8


def zip_contents(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def test_pause_after_the_current_item_then_resume(job, request_, monkeypatch):
    gate = Gate(monkeypatch, hold=1)
    job.start(plan_batch(PROMPTS, request_, OptimizationSet(), 2))
    gate.wait()
    assert job.pause()
    status = job.status()
    assert status.phase == "pausing" and status.current.index == 1 and status.current.step == 1
    gate.release()
    status = wait_for(job, lambda s: s.phase == "paused", "the batch pauses after item 1")
    assert states(status) == ["done", "queued", "queued", "queued"]
    time.sleep(0.3)  # paused means paused: nothing starts meanwhile
    assert states(job.status()) == ["done", "queued", "queued", "queued"] and gate.calls == 1
    assert job.resume() and not job.resume()
    status = job.wait(WAIT_S)
    assert status.phase == "done" and states(status) == ["done"] * 4


def test_skip_cancels_the_running_item_and_goes_on(job, request_, monkeypatch):
    gate = Gate(monkeypatch, hold=2)
    job.start(plan_batch(PROMPTS, request_, OptimizationSet(), 2))
    gate.wait()
    assert job.skip()
    gate.release()
    status = job.wait(WAIT_S)
    assert status.phase == "done" and states(status) == ["done", "skipped", "done", "done"]
    skipped = status.items[1]
    assert skipped.video is None and skipped.result is None and skipped.step == 1
    assert sorted(p.name for p in Path(status.folder).glob("*.mp4")) == ["001-seed7.mp4", "003-seed7.mp4",
                                                                          "004-seed8.mp4"]
    assert not job.skip()  # nothing runs


def test_cancel_stops_the_running_item_and_the_rest(job, request_, monkeypatch):
    gate = Gate(monkeypatch, hold=2)
    job.start(plan_batch(PROMPTS, request_, OptimizationSet(), 2))
    gate.wait()
    assert job.cancel()
    assert job.status().phase == "cancelling" and not job.pause() and not job.skip()
    gate.release()
    status = job.wait(WAIT_S)
    assert status.phase == "cancelled" and states(status) == ["done", "cancelled", "cancelled", "cancelled"]
    assert gate.calls == 2 and len(list(Path(status.folder).glob("*.mp4"))) == 1
    assert not job.cancel() and not job.pause() and not job.resume()


def test_cancel_while_paused_ends_the_batch(job, request_, monkeypatch):
    gate = Gate(monkeypatch, hold=1)
    job.start(plan_batch("one\ntwo", request_, OptimizationSet()))
    gate.wait()
    job.pause()
    gate.release()
    wait_for(job, lambda s: s.phase == "paused", "paused")
    assert job.cancel()
    status = job.wait(WAIT_S)
    assert status.phase == "cancelled" and states(status) == ["done", "cancelled"] and gate.calls == 1


def test_a_bad_prompt_line_is_refused_before_anything_runs(job, request_, monkeypatch):
    gate = Gate(monkeypatch, hold=0)
    text = "a fine prompt\n\n" + "x" * 4001 + "\n"
    with pytest.raises(ValidationError, match=r"prompts line 3: prompt must be at most 4000 characters") as e:
        plan_batch(text, request_, OptimizationSet())
    assert e.value.field == "prompts"
    with pytest.raises(ValidationError, match="at least one prompt"):
        plan_batch("\n  \n# only a note\n", request_, OptimizationSet())
    with pytest.raises(ValidationError, match=r"at most 100 videos; 2 prompts x 51 seeds = 102"):
        plan_batch("a\nb", request_, OptimizationSet(), seeds_per_prompt=51)
    with pytest.raises(ValidationError, match=r"seeds_per_prompt must be a whole number in \[1, 100\], got 0"):
        plan_batch("a", request_, OptimizationSet(), seeds_per_prompt=0)
    with pytest.raises(ValidationError, match="width must be a multiple of 16"):
        plan_batch("a", dataclasses.replace(request_, width=100), OptimizationSet())
    with pytest.raises(UserError, match="needs a CUDA GPU"):  # options this machine cannot run: refused at start
        job.start(plan_batch("a", request_, OptimizationSet(quantization="bnb_nf4")))
    assert gate.calls == 0 and job.status().phase == "idle"


def test_seeds_wrap_inside_the_seed_range_and_lines_keep_their_numbers(request_):
    plan = plan_batch(["  first  ", "", "second"], dataclasses.replace(request_, seed=2**32 - 1), OptimizationSet(), 2)
    assert plan.items == ((1, "first", 2**32 - 1), (1, "first", 0), (3, "second", 2**32 - 1), (3, "second", 0))
    assert parse_prompts("a\r\n#b\r\n c ") == [(1, "a"), (3, "c")]
    assert MAX_ITEMS == 100


def test_prompt_file_is_utf8_and_bounded(tmp_path):
    good = tmp_path / "prompts.txt"
    good.write_bytes("\ufeffun café\nzwei\n".encode("utf-8"))
    assert parse_prompts(read_prompts_file(good)) == [(1, "un café"), (2, "zwei")]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValidationError, match="not UTF-8"):
        read_prompts_file(bad)
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (batch_module.MAX_FILE_BYTES + 1))
    with pytest.raises(ValidationError, match="at most 100 prompts"):
        read_prompts_file(big)


def test_one_batch_at_a_time(job, request_, monkeypatch):
    gate = Gate(monkeypatch, hold=1)
    job.start(plan_batch("one", request_, OptimizationSet()))
    gate.wait()
    with pytest.raises(UserError, match="a batch is already running"):
        job.start(plan_batch("two", request_, OptimizationSet()))
    gate.release()
    assert job.wait(WAIT_S).phase == "done"
    second = job.start(plan_batch("two", request_, OptimizationSet()))
    assert second.batch_id != "" and [i.prompt for i in second.items] == ["two"]
    assert job.wait(WAIT_S).phase == "done"


def test_a_run_from_the_page_waits_for_the_item_and_goes_between_two_items(job, manager, request_, monkeypatch,
                                                                           tmp_path):
    events = []
    gate = Gate(monkeypatch, hold=1, events=events)
    job.start(plan_batch("one\ntwo\nthree", request_, OptimizationSet()))
    gate.wait()

    def interactive():  # what the Generate button runs: generate() leases the same manager
        generate(manager, "tiny", dataclasses.replace(request_, prompt="from the page"), OptimizationSet(),
                 out_dir=tmp_path / "page")
        events.append(("page run", "done"))

    thread = threading.Thread(target=interactive)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and ("page run", "done") not in events  # the batch item holds the manager
    gate.release()
    thread.join(WAIT_S)
    assert job.wait(WAIT_S).phase == "done"
    assert events.index(("page run", "done")) < events.index(("batch item", 3))


def test_a_failed_item_says_why_in_one_line_and_the_batch_goes_on(job, request_, monkeypatch):
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure\nsecond line")
        return generate(*args, **kwargs)

    monkeypatch.setattr(batch_module, "generate", flaky)
    status = job.start(plan_batch("one\ntwo\nthree", request_, OptimizationSet())) and job.wait(WAIT_S)
    assert status.phase == "done" and states(status) == ["done", "failed", "done"]
    assert status.items[1].error == "RuntimeError: injected failure" and status.items[1].video is None
    # the zip holds the two that finished
    videos = [Path(status.items[i].video).name for i in (0, 2)]
    assert status.archived == 2 and sorted(Path(n).name for n in zip_contents(status.archive)) == sorted(
        [*videos, *(Path(v).with_suffix(".json").name for v in videos)])


def test_the_app_shutting_down_cancels_the_running_item_and_ends_the_batch(manager, tmp_path, request_, monkeypatch,
                                                                           one_thread):
    from wan_ui.ui.context import RunRegistry

    registry = RunRegistry()  # what the app's SIGTERM handler closes (ui/shutdown.py)
    job = BatchJob(manager, "tiny", tmp_path, run_scope=lambda: registry.running("batch"))
    gate = Gate(monkeypatch, hold=2)
    job.start(plan_batch("one\ntwo\nthree", request_, OptimizationSet()))
    gate.wait()
    ends = registry.close("The app is shutting down (SIGTERM)")
    gate.release()
    status = job.wait(WAIT_S)
    assert status.phase == "cancelled" and states(status) == ["done", "cancelled", "cancelled"]
    assert ends["batch"].wait(WAIT_S) and ends["batch"].outcome == "cancelled"
    assert status.items[2].error == "The app is shutting down (SIGTERM)" and gate.calls == 2
    assert len(list(Path(status.folder).glob("*.mp4"))) == 1
    # what finished before the shutdown is zipped: one video of three
    assert status.archived == 1 and [Path(n).name for n in zip_contents(status.archive)] == [
        Path(status.items[0].video).name, Path(status.items[0].video).with_suffix(".json").name]


# ---- the zip of a batch's videos ----------------------------------------------------------------------------------
def finished_batch(folder: Path, states_: list[str]) -> BatchStatus:
    """A BatchStatus whose "done" items have an mp4 and a sidecar in `folder` (bytes of their own)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, state in enumerate(states_, 1):
        item = BatchItem(i, i, f"prompt {i}", i, state=state)
        if state == "done":
            video = folder / f"{i:03d}-seed{i}.mp4"
            video.write_bytes(bytes([i]) * 1000)
            video.with_suffix(".json").write_text(json.dumps({"seed": i}))
            item.video = str(video)
        items.append(item)
    return BatchStatus("done", folder.name.removeprefix("batch-"), str(folder), items=items)


def test_the_zip_holds_what_finished_and_a_failed_write_leaves_no_zip(tmp_path, monkeypatch):
    folder = tmp_path / "batch-20250101-000000-abcdef"
    status = finished_batch(folder, ["done", "failed", "done", "cancelled"])
    path, count = write_archive(status)
    assert path == folder / "batch-20250101-000000-abcdef.zip" and count == 2
    assert zip_contents(path) == {f"{folder.name}/{name}": (folder / name).read_bytes()
                                  for name in ("001-seed1.mp4", "001-seed1.json", "003-seed3.mp4", "003-seed3.json")}
    path.unlink()
    # the disk fills up while the third file goes in: no zip under the final name, no temporary file beside it
    write, calls = zipfile.ZipFile.write, []

    def full_disk(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_archive(status)
    assert sorted(p.name for p in folder.iterdir()) == ["001-seed1.json", "001-seed1.mp4", "003-seed3.json",
                                                        "003-seed3.mp4"]
    # nothing finished: no zip at all
    assert write_archive(finished_batch(tmp_path / "batch-none", ["failed", "cancelled"])) == (None, 0)
    assert list((tmp_path / "batch-none").iterdir()) == []


def test_a_batch_whose_zip_fails_still_ends_and_says_why(job, request_, monkeypatch):
    def no_space(status):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch_module, "write_archive", no_space)
    status = job.start(plan_batch("one", request_, OptimizationSet())) and job.wait(WAIT_S)
    assert status.phase == "done" and states(status) == ["done"]
    assert status.archive is None and status.archived == 0
    assert status.archive_error == "OSError: [Errno 28] No space left on device"
    assert not job.cancel()  # a batch that ended has nothing to cancel
