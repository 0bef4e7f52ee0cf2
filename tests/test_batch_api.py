"""The Batch tab through the launched app's API (gradio_client): start, poll the status to done with the items in
order and each video in History; pause, then cancel the rest; a bad line refused naming it, and one batch at a
time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ui_server import ui_app  # noqa: F401  (module-scoped fixture: one app for this module)

SMALL = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2, "seed": 3}
VIEW = ("status", "table", "gallery", "json", "timer")
POLL = (*VIEW, "history_gallery", "history_table")


@pytest.fixture(scope="module")
def client(ui_app):  # noqa: F811
    from gradio_client import Client

    return Client(ui_app.url, verbose=False, download_files=False)


def call(client, api_name: str, names=VIEW, **kwargs) -> dict:
    return dict(zip(names, client.predict(**kwargs, api_name=api_name)))


def poll(client, condition, what: str, seen: list | None = None, timeout_s: float = 90) -> dict:
    """/batch_status until `condition(output)`; each History table it sends is appended to `seen` (a poll that
    adds no video leaves History as it is and sends none)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        out = call(client, "/batch_status", POLL)
        if seen is not None and "data" in (out["history_table"] or {}):
            seen.append(out["history_table"])
        if condition(out):
            return out
        time.sleep(0.05)
    pytest.fail(f"timed out waiting until {what}: {out['status']}")


def test_batch_endpoints_exist(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/batch_start", "/batch_status", "/batch_pause", "/batch_resume", "/batch_skip", "/batch_cancel"} <= names


def test_start_poll_to_done_items_in_order_and_in_history(client, ui_app):  # noqa: F811
    started = call(client, "/batch_start", prompts="a red fox in the snow\n\na lighthouse in a storm",
                   seeds_per_prompt=2, **SMALL)
    assert started["json"]["phase"] == "running" and len(started["json"]["items"]) == 4
    assert started["status"].startswith("**Running**")
    histories = []
    out = poll(client, lambda o: o["json"]["phase"] == "done", "the batch is done", histories)
    items = out["json"]["items"]
    assert [(i["index"], i["line"], i["prompt"], i["seed"], i["state"]) for i in items] == [
        (1, 1, "a red fox in the snow", 3, "done"), (2, 1, "a red fox in the snow", 4, "done"),
        (3, 3, "a lighthouse in a storm", 3, "done"), (4, 3, "a lighthouse in a storm", 4, "done")]
    folder = Path(out["json"]["folder"])
    assert folder.parent == ui_app.outputs
    for item in items:
        video = Path(item["video"])
        assert video.parent == folder and video.stat().st_size > 0
        assert json.loads(video.with_suffix(".json").read_text())["request"]["seed"] == item["seed"]
    assert out["status"].startswith(f"**Done**: 4 of 4 videos written to `{folder.name}`")
    assert [row[:5] for row in out["table"]["data"]] == [[1, 1, "a red fox in the snow", 3, "done"],
                                                         [2, 1, "a red fox in the snow", 4, "done"],
                                                         [3, 3, "a lighthouse in a storm", 3, "done"],
                                                         [4, 3, "a lighthouse in a storm", 4, "done"]]
    assert all(row[6].startswith(f"[{i:03d}-seed") for i, row in enumerate(out["table"]["data"], 1))
    assert histories, "no poll sent History"
    rows = histories[-1]["data"]
    assert [(row[2], row[6]) for row in rows] == [("batch 1", 3), ("batch 2", 4), ("batch 3", 3), ("batch 4", 4)]
    assert out["timer"]["active"] is False  # the page stops polling once the batch has ended


def test_pause_then_cancel_the_rest(client):
    started = call(client, "/batch_start", prompts="one\ntwo\nthree", **SMALL)
    assert started["json"]["phase"] == "running"
    paused = call(client, "/batch_pause")
    assert paused["json"]["phase"] in ("pausing", "paused")
    out = poll(client, lambda o: o["json"]["phase"] == "paused", "the batch pauses")
    states = [i["state"] for i in out["json"]["items"]]
    assert "queued" in states and "running" not in states and out["status"].startswith("**Paused**")
    time.sleep(0.3)
    assert [i["state"] for i in call(client, "/batch_status", POLL)["json"]["items"]] == states
    cancelled = call(client, "/batch_cancel")
    assert cancelled["json"]["phase"] in ("cancelling", "cancelled")
    out = poll(client, lambda o: o["json"]["phase"] == "cancelled", "the batch is cancelled")
    assert [i["state"] for i in out["json"]["items"]] == [s if s == "done" else "cancelled" for s in states]
    assert out["status"].startswith("**Cancelled**")
    assert call(client, "/batch_resume")["json"]["phase"] == "cancelled"  # nothing to resume


def test_a_bad_line_is_refused_naming_it_and_one_batch_at_a_time(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="prompts line 2: prompt must be at most 4000 characters"):
        client.predict(prompts="fine\n" + "x" * 4001, api_name="/batch_start", **SMALL)
    with pytest.raises(AppError, match="at least one prompt"):
        client.predict(prompts="\n# a note only\n", api_name="/batch_start", **SMALL)
    call(client, "/batch_start", prompts="one\ntwo", **{**SMALL, "num_inference_steps": 20})
    with pytest.raises(AppError, match="a batch is already running"):
        client.predict(prompts="three", api_name="/batch_start", **SMALL)
    call(client, "/batch_cancel")
    poll(client, lambda o: o["json"]["phase"] == "cancelled", "the batch is cancelled")


def test_the_server_cost_limit_applies_to_each_video(manager, tmp_path):
    import gradio as gr

    from wan_ui.ui.app import create_demo
    from wan_ui.ui.limits import ServerLimits

    # 64x64, 5 frames: 2 latent frames x 4 x 4 = 32 tokens, x 2 steps x 2 forwards (CFG) = 128 token-forwards a video
    demo = create_demo(manager, model="tiny", outputs=tmp_path, save_settings=False,
                       limits=ServerLimits(max_cost=127))
    start = next(fn.fn for fn in demo.fns.values() if fn.api_name == "batch_start")
    with pytest.raises(gr.Error, match=r"each video of this batch costs 128 token-forwards .* limit of 127"):
        start(None, None, prompts="one\ntwo", seeds_per_prompt=1, guidance_scale=5.0, **SMALL)


def test_no_batch_starts_while_the_app_shuts_down(manager, tmp_path):
    import gradio as gr

    from wan_ui.ui.app import create_demo
    from wan_ui.ui.context import RunRegistry

    runs = RunRegistry()
    demo = create_demo(manager, model="tiny", outputs=tmp_path, save_settings=False, runs=runs)
    runs.close("The app is shutting down (SIGTERM): it takes no new jobs.")
    start = next(fn.fn for fn in demo.fns.values() if fn.api_name == "batch_start")
    with pytest.raises(gr.Error, match="The app is shutting down"):
        start(None, None, prompts="one", seeds_per_prompt=1, **SMALL)
    assert not list(tmp_path.glob("batch-*"))
