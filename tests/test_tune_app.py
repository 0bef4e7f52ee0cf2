"""The Compare tab's "Find the fastest set within this budget" (ui/tune_search.py), through gradio_client on the
launched app (tiny model, CPU): the tuner's search on the Generate tab's request, from the Compare rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_server import compare_answer, ui_app  # noqa: F401  (ui_app: a module-scoped fixture, one app per module)

from wan_ui.core.options import OptimizationSet
from wan_ui.tune.report import read_records
from wan_ui.tune.search import Measurement, Trial
from wan_ui.ui.compare_charts import CHARTS
from wan_ui.ui.compare_tab import OUTPUTS
from wan_ui.ui.tune_search import search_charts

SMALL = dict(prompt="a lighthouse in a storm", width=64, height=64, num_frames=5, num_inference_steps=2, seed=11)


@pytest.fixture(scope="module")
def client(ui_app):  # noqa: F811
    from gradio_client import Client

    return Client(ui_app.url, verbose=False, download_files=False)


def test_the_search_is_an_endpoint_on_the_gpu_slot(client, ui_app):  # noqa: F811
    assert "/tune" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    (fn,) = [fn for fn in ui_app.demo.fns.values() if fn.api_name == "tune"]
    assert (fn.concurrency_id, fn.concurrency_limit) == ("gpu", 1)


def chart_rows(update: dict) -> list[dict]:
    frame = update["value"]
    return [dict(zip(frame["columns"], row)) for row in frame["data"]]


def test_the_button_searches_from_the_compare_rows_and_reports_the_fastest_set(client, ui_app):  # noqa: F811
    compared = compare_answer(client.predict(**SMALL, set_1_preset="Defaults", set_2_preset="CPU quick",
                                             api_name="/compare"))  # the tab shows a comparison first
    assert compared["video_2"]["visible"] and compared["csv"] and compared["chart_load_time_s"]["visible"]
    answer = client.predict(
        **SMALL, set_1_preset="Defaults", set_2_preset="Defaults", tune_budget="psnr>=99", tune_seconds=600,
        set_2_options="cfg_truncation=0.25, cache=first_block", api_name="/tune")
    assert len(answer) == len(OUTPUTS)
    out = dict(zip(OUTPUTS, answer))
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
    # the charts show the search's sets, as the table does, and nothing of the comparison before it
    latency = chart_rows(out["chart"])
    assert [row["name"] for row in latency] == [t["name"] for t in trials if t["status"] == "ok"]
    assert [row["Clip-wise Latency (s)"] for row in latency] == pytest.approx(
        [t["latency_s"] for t in trials if t["status"] == "ok"], rel=1e-6)  # the page's copy is rounded
    for name in set(CHARTS) - {"chart", "chart_lpips_vs_baseline", "chart_clip_score"}:
        assert out[name]["visible"] is False, name  # load, warm-up, VRAM, throughput: not in the search's table
    assert out["csv"] is None and all(out[f"video_{i}"]["visible"] is False for i in range(1, 7))


def test_a_bad_budget_is_an_error_naming_it(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="better lower"):
        client.predict(**SMALL, set_1_preset="Defaults", tune_budget="lpips>=0.1", tune_seconds=60, api_name="/tune")
    with pytest.raises(AppError, match="time budget"):
        client.predict(**SMALL, set_1_preset="Defaults", tune_budget="psnr>=30", tune_seconds=0, api_name="/tune")


def test_the_search_charts_hold_the_tables_numbers_in_its_order():
    def trial(index: int, latency: float | None, lpips: float | None = None) -> Trial:
        status = "ok" if latency is not None else "oom"
        return Trial(index, "default" if index == 0 else f"set {index}", OptimizationSet(), "start",
                     Measurement(status, latency), fidelity={"lpips": lpips, "clip": None})

    trials = [trial(0, 4.0, 0.0), *(trial(i, 4.0 / i, 0.01 * i) for i in range(1, 11)), trial(11, None)]
    charts = search_charts(trials, 4.0)
    assert set(charts) == set(CHARTS)
    latency = [dict(zip(charts["chart"].value["columns"], row)) for row in charts["chart"].value["data"]]
    labels = [row["set"] for row in latency]
    assert labels[:3] == ["00 · default", "01 · set 1", "02 · set 2"] and labels == sorted(labels)  # as in the table
    assert [row["name"] for row in latency] == [t.name for t in trials[:-1]]  # the failed set has no bar
    assert latency[2]["in the table"] == "2.000 s, speed-up 2.00x"
    lpips = charts["chart_lpips_vs_baseline"].value["data"]
    assert len(lpips) == 11 and charts["chart_lpips_vs_baseline"].visible is True
    assert charts["chart_clip_score"].visible is False and charts["chart_peak_vram_mb"].visible is False
