"""The Compare tab's "Find the fastest set within this budget" (ui/tune_search.py), through gradio_client on the
launched app (tiny model, CPU): the tuner's search on the Generate tab's request, from the Compare rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_server import ui_app  # noqa: F401  (module-scoped fixture: one app for this module)

from wan_ui.tune.report import read_records

SMALL = dict(prompt="a lighthouse in a storm", width=64, height=64, num_frames=5, num_inference_steps=2, seed=11)
OUTPUTS = ("status", *(f"video_{i}" for i in range(1, 7)), "table", "chart", "csv", "markdown")


@pytest.fixture(scope="module")
def client(ui_app):  # noqa: F811
    from gradio_client import Client

    return Client(ui_app.url, verbose=False, download_files=False)


def test_the_search_is_an_endpoint_on_the_gpu_slot(client, ui_app):  # noqa: F811
    assert "/tune" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    (fn,) = [fn for fn in ui_app.demo.fns.values() if fn.api_name == "tune"]
    assert (fn.concurrency_id, fn.concurrency_limit) == ("gpu", 1)


def test_the_button_searches_from_the_compare_rows_and_reports_the_fastest_set(client, ui_app):  # noqa: F811
    out = dict(zip(OUTPUTS, client.predict(
        **SMALL, set_1_preset="Defaults", set_2_preset="Defaults", tune_budget="psnr>=99", tune_seconds=600,
        set_2_options="cfg_truncation=0.25, cache=first_block", api_name="/tune")))
    status, table = out["status"], out["table"]
    assert ("Fastest within psnr>=99" in status or "the baseline" in status) and "sets measured" in status
    (run,) = [p for p in (ui_app.outputs / "tune").iterdir() if p.name != "baselines"]  # its folder of outputs
    assert Path(out["markdown"]["path"]).read_text() == (run / "report.md").read_text()
    assert f"Report: tune/{run.name}/report.md in the outputs folder" in status and str(ui_app.outputs) not in status
    trials = read_records(run / "trials.jsonl")
    assert trials[0]["name"] == "default" and trials[1]["name"] == "Defaults + cfg_truncation=0.25, cache=first_block"
    assert trials[1]["context"]["request"]["width"] == 64 and trials[1]["per_prompt"][0]["prompt"] == SMALL["prompt"]
    winner = [t for t in trials if t["winner"]]
    assert len(winner) == 1 and all(p["psnr"] >= 99 for p in winner[0]["per_prompt"])
    assert table.splitlines()[0].startswith("| # | Set |") and len(table.splitlines()) == len(trials) + 2


def test_a_bad_budget_is_an_error_naming_it(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="better lower"):
        client.predict(**SMALL, set_1_preset="Defaults", tune_budget="lpips>=0.1", tune_seconds=60, api_name="/tune")
    with pytest.raises(AppError, match="time budget"):
        client.predict(**SMALL, set_1_preset="Defaults", tune_budget="psnr>=30", tune_seconds=0, api_name="/tune")
