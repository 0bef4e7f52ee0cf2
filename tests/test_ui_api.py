"""Driving the launched app through gradio_client: every action is a named endpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ui_server import compare_answer, ui_app  # noqa: F401  (ui_app: a module-scoped fixture, one app per module)

from wan_ui.core.options import preset
from wan_ui.ui.generate_tab import RUN_OUTPUTS
from wan_ui.ui.values import HISTORY_COLUMNS, OPTION_FIELDS

SMALL = dict(prompt="a lighthouse in a storm", width=64, height=64, num_frames=9, num_inference_steps=2, seed=11)
GENERATE_OUTPUTS = (*RUN_OUTPUTS, "gallery", "table")


@pytest.fixture(scope="module")
def client(ui_app):  # noqa: F811
    from gradio_client import Client

    return Client(ui_app.url, verbose=False, download_files=False)


def generate(client, **kwargs) -> dict:
    return dict(zip(GENERATE_OUTPUTS, client.predict(**{**SMALL, **kwargs}, api_name="/generate")))


def test_every_action_is_a_named_endpoint_and_gpu_jobs_share_one_slot(client, ui_app):  # noqa: F811
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate", "/cancel", "/compare", "/cancel_compare", "/apply_preset", "/reuse_settings",
            "/load_settings", "/restore_last_settings", "/gpu_stats", "/options"} <= names
    slots = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in ui_app.demo.fns.values()
             if fn.api_name in ("generate", "compare")}
    assert slots == {"generate": ("gpu", 1), "compare": ("gpu", 1)}


def test_generate_returns_video_metrics_and_saves_the_settings(client, ui_app):  # noqa: F811
    out = generate(client, num_frames=8, vae_tiling=True)
    info = out["result_json"]
    assert Path(info["video"]).parent == ui_app.outputs and Path(info["video"]).exists()
    assert info["frames"] == 9 and info["random_weights"] is True and info["optimizations"]["vae_tiling"] is True
    assert out["seed_used"] == 11 and "snapped to 9" in out["status"] and "random-weight" in out["status"]
    assert "Clip-wise latency" in out["efficiency"] and "no CUDA device" in out["hardware"]
    assert "not computed" in out["accuracy"] and "tiny random-weight" in out["others"]
    assert [row[0] for row in out["table"]["data"]] == [1]
    saved = json.loads(ui_app.settings_file.read_text())
    assert saved["request"]["prompt"] == SMALL["prompt"] and saved["optimizations"]["vae_tiling"] is True
    restored = client.predict(api_name="/restore_last_settings")
    assert SMALL["prompt"] in restored and "Restored the last-used settings" in " ".join(map(str, restored))


def test_quality_metrics_fill_the_accuracy_panel(client):
    out = generate(client, quality=True, cache="first_block")
    m = out["result_json"]["metrics"]
    assert m["clip_score"] is not None and m["lpips_vs_baseline"] is not None and m["ssim_vs_baseline"] is not None
    assert "| **LPIPS vs baseline** | 0." in out["accuracy"] and "random weights" in out["accuracy"]


def test_randomized_seed_is_reported(client):
    out = generate(client, randomize_seed=True)
    assert out["seed_used"] == out["result_json"]["seed"] and f"seed {out['seed_used']}" in out["status"]


def test_bad_input_is_an_error_naming_the_field_and_the_app_stays_up(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"width must be a multiple of 16 in \[16, 2048\], got 70"):
        generate(client, width=70)
    with pytest.raises(AppError, match="needs a CUDA GPU"):
        generate(client, offload="group_leaf")
    assert client.predict(api_name="/options")["presets"]["CPU quick"]["cache"] == "first_block"


def test_presets_fill_the_option_widgets(client):
    values = dict(zip(OPTION_FIELDS, client.predict("CPU quick", api_name="/apply_preset")))
    assert values == preset("CPU quick").to_dict()
    unchanged = client.predict("Custom", api_name="/apply_preset")
    assert len(unchanged) == len(OPTION_FIELDS) + 3  # the option widgets, steps, guidance, the status note


def test_distilled_preset_sets_its_steps_and_guidance_and_says_so(client):
    """A few-step distilled LoRA run at 50 steps with CFG would be wrong and slow: the preset sets both."""
    out = client.predict("Self-Forcing DMD 4-step", 832, 480, 81, api_name="/apply_preset")
    values, (steps, guidance, note) = dict(zip(OPTION_FIELDS, out)), out[len(OPTION_FIELDS):]
    assert values["lora"].startswith("Kijai/WanVideo_comfy/") and values["flow_shift"] == 8.0
    assert (steps, guidance) == (4, 1.0)
    assert note.startswith("Self-Forcing DMD 4-step: 4 steps, guidance 1 (set for you)") and "Licence" in note
    fast_sparse = client.predict("Fast (sparse)", 832, 480, 81, api_name="/apply_preset")
    assert fast_sparse[OPTION_FIELDS.index("sparse_attention")] == "sta"
    assert fast_sparse[-1].startswith("Sparse attention trades fidelity for speed")  # never sold as lossless


def test_low_vram_preset_is_sized_and_says_why(client):
    out = client.predict("Low VRAM", 832, 480, 81, api_name="/apply_preset")
    values, note = dict(zip(OPTION_FIELDS, out)), out[-1]
    assert values["offload"] == "group_block" and values["vae_tiling"] is True  # no GPU reading on CPU: leanest
    assert values["compile"] == "regional"  # block-level groups stream around the compiled blocks
    assert note.startswith("Low VRAM preset: no GPU reading")
    out = client.predict("Low VRAM (sparse)", 1248, 720, 97, api_name="/apply_preset")
    values, note = dict(zip(OPTION_FIELDS, out)), out[-1]
    assert values["offload"] == "group_block" and values["sparse_attention"] == "sta"  # sized, sparse kept
    assert note.startswith("Low VRAM (sparse) preset: no GPU reading") and "Sparse attention trades" in note


def test_compare_two_sets_gives_the_report_table_and_downloads(client):
    out = compare_answer(client.predict(
        **SMALL, set_1_preset="Defaults", set_2_preset="Defaults", set_2_options="cache=first_block",
        api_name="/compare"))
    lines = out["table"].splitlines()
    assert lines[0].startswith("| Set | Load Time |") and lines[2].startswith("| Defaults |")
    assert lines[3].startswith("| Defaults + cache=first_block |") and "x)" in lines[3]
    assert Path(out["csv"]["path"]).read_text().startswith("set,Load Time,")
    assert "Ratios are to the first set" in Path(out["markdown"]["path"]).read_text()
    assert out["video_1"]["label"] == "Defaults" and out["video_1"]["value"]["path"].endswith(".mp4")
    assert out["video_3"]["visible"] is False
    chart = out["chart"]["value"]  # the clip-wise latency of each set, an interactive bar chart
    assert chart["mark"] == "bar" and [row[2] for row in chart["data"]] == ["Defaults", "Defaults + cache=first_block"]
    assert out["chart_clip_score"]["visible"] is False  # no quality metrics asked for: no CLIP chart
    assert [row[2] for row in out["history_table"]["data"]][-2:] == ["compare: Defaults",
                                                                     "compare: Defaults + cache=first_block"]


def test_compare_with_repeats_shows_median_and_range_and_names_each_run(client, ui_app):  # noqa: F811
    out = compare_answer(client.predict(
        **{**SMALL, "num_frames": 5}, set_1_preset="Defaults", set_2_preset="Defaults",
        set_2_options="cache=first_block", compare_repeats=2, api_name="/compare"))
    lines = out["table"].splitlines()
    assert lines[2].startswith("| Defaults |") and "s–" in lines[2] and "— first run after a build" in lines[2]
    assert lines[3].startswith("| Defaults + cache=first_block |") and "s–" in lines[3]
    assert "median (min–max) of each set's 2 timed runs" in out["table"]
    assert ", 2 timed runs each." in out["status"]
    folder = out["status"].split("Tables: ")[1].removesuffix(" in the outputs folder")  # by name, not the path
    assert (ui_app.outputs / folder / "comparison.csv").is_file() and str(ui_app.outputs) not in out["status"]
    header = Path(out["csv"]["path"]).read_text().splitlines()[0]
    assert "Clip-wise Latency min" in header and "Clip-wise Latency within noise" in header
    assert len(list(ui_app.outputs.glob("*.mp4"))) >= 2 and out["video_2"]["value"]["path"].endswith(".mp4")
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"repeats must be a whole number in \[1, 5\], got 6"):
        client.predict(**SMALL, set_1_preset="Defaults", set_2_preset="CPU quick", compare_repeats=6,
                       api_name="/compare")


def test_progress_says_the_phase_and_a_comparisons_set_and_run():
    from wan_ui.ui.generate_tab import progress_reporter

    seen = []
    report = progress_reporter(lambda value, desc, unit="": seen.append((value, desc)))
    report("Fast (2/3), run 2 of 3: denoising", 1, 4)
    report("Fast (2/3), run 2 of 3: decoding", 0, 1)
    report("encoding", 0, 1)
    # every phase has a level beside its name (Gradio shows no text for None): the decode where the steps left
    # the bar, the next run's encoding from 0
    assert seen == [((1, 4), "Fast (2/3), run 2 of 3: denoising, step 1 of 4"),
                    (0.25, "Fast (2/3), run 2 of 3: decoding (VAE)"), (0.0, "encoding the prompt")]


def test_settings_load_back_from_a_video_and_from_history(client, ui_app):  # noqa: F811
    from gradio_client import handle_file

    info = generate(client, seed=21, cache="first_block")["result_json"]
    values = client.predict(handle_file(info["video"]), api_name="/load_settings")
    assert SMALL["prompt"] in values and 21 in values and "first_block" in values
    history = generate(client, seed=22)["table"]["data"]
    run = next(row[0] for row in history if row[HISTORY_COLUMNS.index("seed")] == 21)
    reused = client.predict(run, api_name="/reuse_settings")
    assert 21 in reused and f"Re-using the settings of run #{run}." in reused


def wait_for(job, condition, what: str, timeout_s: float = 60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition(job.status()):
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting until {what}")


def test_cancel_interrupts_a_long_run_while_another_user_waits_in_the_queue(client, ui_app):  # noqa: F811
    from gradio_client import Client
    from gradio_client.utils import Status

    long_run = client.submit(**{**SMALL, "num_inference_steps": 200}, api_name="/generate")
    wait_for(long_run, lambda s: s.progress_data and "step" in (s.progress_data[-1].desc or ""), "it denoises")
    other = Client(ui_app.url, verbose=False, download_files=False).submit(**SMALL, api_name="/generate")
    # one generation at a time: the other user's job waits with its position in the queue
    wait_for(other, lambda s: s.code == Status.IN_QUEUE and s.rank == 0, "the second job is queued first in line")
    assert client.predict(api_name="/cancel").startswith("Run cancelled at")  # answers once the run returned
    out = dict(zip(GENERATE_OUTPUTS, long_run.result(timeout=60)))
    assert out["status"].startswith("Cancelled: cancelled after step") and "of 200" in out["status"]
    assert client.predict(api_name="/cancel") == "Nothing is running in this session."
    assert dict(zip(GENERATE_OUTPUTS, other.result(timeout=60)))["status"].startswith("Done")
    assert "Done" in generate(client)["status"]
