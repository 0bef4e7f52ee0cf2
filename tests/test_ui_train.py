"""The Train tab through the launched app's API (gradio_client): start, live progress, Stop, Resume, the LoRA used
by /generate, and bad input refused with the field and the allowed range while the app stays up."""

from __future__ import annotations

import time
import zipfile

import pytest
import torch
from train_files import write_dataset
from ui_server import ui_app  # noqa: F401  (module-scoped fixture: one app for this module)

TRAIN = dict(data="squares", lora_name="ui_squares", rank=8, lr=1e-2, steps=4, width=64, height=64, frames=9,
             save_every=0, grad_checkpointing="off", bf16=False, compile=False, fp8_base=False,
             float8_training=False, adamw8bit=False)
OUTPUTS = ("status", "metrics", "loss_plot", "log", "validation", "timer")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's ops are microseconds long (see test_train)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    data, loras = tmp_path_factory.mktemp("train_data"), tmp_path_factory.mktemp("loras")
    write_dataset(data / "squares", 1)
    with pytest.MonkeyPatch.context() as mp:  # the app reads both folders when a run starts
        mp.setenv("WAN_UI_TRAIN_DIR", str(data))
        mp.setenv("WAN_UI_LORA_DIR", str(loras))
        yield data, loras


@pytest.fixture(scope="module")
def client(ui_app, roots):  # noqa: F811
    from gradio_client import Client

    return Client(ui_app.url, verbose=False, download_files=False)


def call(client, api_name: str, **kwargs) -> dict:
    return dict(zip(OUTPUTS, client.predict(**kwargs, api_name=api_name)))


def poll(client, condition, what: str, timeout_s: float = 60) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        out = call(client, "/train_status")
        if condition(out):
            return out
        time.sleep(0.05)
    pytest.fail(f"timed out waiting until {what}: {out['status']}")


def plotted_steps(out: dict) -> list[int]:
    """The loss plot's x values (gr.LinePlot sends {"columns": ["step", "loss"], "data": [[step, loss], ...]})."""
    plot = out["loss_plot"]
    assert plot["columns"] == ["step", "loss"] and all(loss > 0 for _, loss in plot["data"])
    return [step for step, _ in plot["data"]]


def test_train_stop_resume_and_use_the_lora(client, roots, tiny_folder):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/train_start", "/train_resume", "/train_stop", "/train_status"} <= names

    started = call(client, "/train_start", **{**TRAIN, "steps": 100_000})
    assert started["status"].startswith("**Preparing** `ui_squares.safetensors`")
    poll(client, lambda o: "**Training**" in o["status"] and "step 1 of" not in o["status"], "two steps are done")
    assert call(client, "/train_stop")["status"].startswith(("**Stopping** `ui_squares", "**Stopped**"))
    out = poll(client, lambda o: o["status"].startswith("**Stopped**"), "the run has stopped")
    at = int(out["status"].split("at step ")[1].split()[0])
    assert "checkpoint `" in out["status"] and f"step-{at:06d}" in out["status"]
    assert "type **`ui_squares.safetensors`** in the Generate tab's LoRA field" in out["status"]
    for row in ("| Loss |", "| Step time |", "| Samples/s |", "| Peak VRAM (step) | n/a (CPU) |", "| ETA |"):
        assert row in out["metrics"]
    assert plotted_steps(out) == list(range(1, at + 1))
    assert f"stop requested at step {at}" in out["log"]
    # files by their place in the LoRA folder, never the server's layout
    assert f"checkpoint `ui_squares_checkpoints/step-{at:06d}` and LoRA `ui_squares.safetensors` saved in the LoRA " \
           f"folder" in out["status"]
    assert not any(str(root) in out[name] for root in roots for name in ("status", "log")), out

    resumed = call(client, "/train_resume", **{**TRAIN, "steps": at + 2})
    assert resumed["status"].startswith(f"**Preparing** `ui_squares.safetensors`, resuming at step {at}:")
    out = poll(client, lambda o: o["status"].startswith("**Done**"), "the resumed run is done")
    assert plotted_steps(out) == list(range(1, at + 3))
    assert f"resumed from ui_squares_checkpoints/step-{at:06d} at step {at}" in out["log"]
    assert "written to `ui_squares.safetensors` in the LoRA folder" in out["status"]
    assert not any(str(root) in out[name] for root in roots for name in ("status", "log")), out
    assert (roots[1] / "ui_squares.safetensors").is_file()

    generated = client.predict(prompt="a square", width=64, height=64, num_frames=9, num_inference_steps=2,
                               lora="ui_squares.safetensors", api_name="/generate")
    assert generated[2].startswith("Done"), generated[2]  # status: the Generate tab loads the trained LoRA


def test_bad_input_is_an_error_naming_the_field_and_the_app_stays_up(client, roots):
    from gradio_client.exceptions import AppError

    for change, message in [({"data": "../squares"}, "dataset folder '../squares' may not contain '..'"),
                            ({"data": "nowhere"}, "is not a folder in the training data folder .*squares"),
                            ({"rank": 0}, r"rank must be a whole number in \[1, 256\], got 0"),
                            ({"frames": 10}, r"frames must be 4k\+1"),
                            ({"adamw8bit": True}, "--adamw8bit needs a CUDA GPU")]:
        with pytest.raises(AppError, match=message):
            call(client, "/train_start", **{**TRAIN, "lora_name": "bad", **change})
    with pytest.raises(AppError, match="no checkpoint in"):
        call(client, "/train_resume", **{**TRAIN, "lora_name": "never_trained"})
    assert not (roots[1] / "bad.safetensors").exists()
    assert call(client, "/train_status")["status"]  # the app answers


def test_validation_videos_play_in_the_tab_as_the_run_writes_them(client, roots, tiny_folder):
    call(client, "/train_start", **{**TRAIN, "lora_name": "ui_validated", "steps": 2, "validate_every": 1,
                                    "validation_prompt": "a square"})
    galleries = []

    def done(out):
        galleries.append(out["validation"])
        return out["status"].startswith(("**Done**", "**Failed**"))

    out = poll(client, done, "the run with validation videos is done")
    assert out["status"].startswith("**Done**"), out["status"]
    # the timer sends the gallery only when a new video appeared; other ticks leave it as it is (an empty update)
    sent = [g for g in galleries if isinstance(g, list) and g]
    assert [item["caption"] for item in sent[-1]] == ["step 2", "step 1"]  # newest first
    assert all(item["video"]["path"].endswith(".mp4") for item in sent[-1])
    assert 1 <= len(sent) <= 2 and {"__type__": "update"} in galleries
    assert sorted(p.name for p in (roots[1] / "ui_validated_validation").glob("*.mp4")) == ["step-000001.mp4",
                                                                                           "step-000002.mp4"]


def test_clips_uploaded_from_the_browser_become_a_dataset_to_train_on(client, roots, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    source = write_dataset(tmp_path / "mine", 1)
    status, chosen = client.predict(upload_files=[handle_file(str(p)) for p in sorted(source.iterdir())],
                                    dataset_name="uploaded", api_name="/train_upload")
    assert status.startswith("Uploaded 1 captioned clip(s)") and "`uploaded`" in status
    assert chosen["value"] == "uploaded" and ["uploaded", "uploaded"] in chosen["choices"]  # the dropdown picks it
    assert sorted(p.name for p in (roots[0] / "uploaded").iterdir()) == ["clip0.mp4", "clip0.txt"]

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.write(source / "clip0.mp4", "clip0.mp4")
        archive.writestr("../../escape.txt", "a caption")
    with pytest.raises(AppError, match="unsafe name"):
        client.predict(upload_files=[handle_file(str(evil))], dataset_name="evil", api_name="/train_upload")
    with pytest.raises(AppError, match="already exists"):
        client.predict(upload_files=[handle_file(str(source / "clip0.mp4"))], dataset_name="uploaded",
                       api_name="/train_upload")
    assert not (roots[0] / "evil").exists() and not (roots[0].parent / "escape.txt").exists()
    assert sorted(p.name for p in roots[0].iterdir() if p.name.startswith(".")) == []  # no staging left


def test_status_and_metrics_lines():
    from wan_ui.train.job import TrainStatus
    from wan_ui.ui.train_tab import format_eta, metrics_markdown, status_markdown

    assert (format_eta(5.4), format_eta(125), format_eta(3 * 3600 + 120)) == ("5 s", "2 min 05 s", "3 h 02 min")
    assert status_markdown(TrainStatus()).startswith("No run yet.") and metrics_markdown(TrainStatus()) == ""
    assert "before the first step" in status_markdown(TrainStatus("stopped", "x.safetensors"))
    assert status_markdown(TrainStatus("failed", "x.safetensors", error="boom")) == "**Failed** (`x.safetensors`): boom"

    record = {"step": 3, "loss": 0.25, "step_time_s": 1.5, "samples_per_s": 0.67, "tokens_per_s": 13520,
              "peak_vram_mb": 9011.2, "eta_s": 4500}
    shown = metrics_markdown(TrainStatus("training", "x.safetensors", steps=3000, records=[record]))
    for row in ("| Step | 3 of 3000 |", "| Peak VRAM (step) | 9011 MiB |", "| ETA | 1 h 15 min |"):
        assert row in shown


def test_the_tab_shows_files_by_their_place_in_its_folders_never_the_servers_layout(roots):
    from wan_ui.train.job import TrainStatus
    from wan_ui.ui.train_tab import log_text, status_markdown

    data, loras = roots
    stopped = TrainStatus("stopped", "x.safetensors", lora_path=str(loras / "x.safetensors"), steps=9,
                          checkpoint=str(loras / "x_checkpoints" / "step-000003"), records=[{"step": 3}],
                          log=[f"resumed from {loras}/x_checkpoints/step-000002 at step 2",
                               f"validation video: {loras}/x_validation/step-000003.mp4"])
    assert status_markdown(stopped).startswith("**Stopped** at step 3 of 9: checkpoint `x_checkpoints/step-000003` "
                                               "and LoRA `x.safetensors` saved in the LoRA folder.")
    assert log_text(stopped) == ("resumed from x_checkpoints/step-000002 at step 2\n"
                                 "validation video: x_validation/step-000003.mp4")
    failed = TrainStatus("failed", "x.safetensors", error=f"no usable clips in {data}/broken; 1 skipped: "
                                                          f"{data}/broken/a.mp4 (unreadable video)")
    assert status_markdown(failed) == ("**Failed** (`x.safetensors`): no usable clips in broken; 1 skipped: "
                                       "broken/a.mp4 (unreadable video)")
    elsewhere = TrainStatus("failed", "x.safetensors", error="cannot read /srv/models/tiny/model_index.json")
    assert status_markdown(elsewhere).endswith("cannot read …/model_index.json")  # outside both: by its name
