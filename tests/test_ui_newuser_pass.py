"""A new user's pass over the app on a CPU (tiny model), in Debian's chromium at a desktop and a phone size, and what
it fixed: every phase of a run shows its name beside the bar (Gradio drew a bare spinner for "loading the model",
"decoding (VAE)", "writing the mp4"); a preset this machine cannot run says so, naming the field and its section,
before Generate; a refused Generate says "Not run: ..." in the status box instead of leaving the last "Done:" line
under a toast titled "Warning"; leaving a distilled preset puts the model's own steps and guidance back; Compare and
the Others panel give each set's fidelity; the History and Batch tables keep readable columns on a phone; the live
preview's label is not under its buttons; a CPU machine's Hardware panel says "no CUDA GPU" in words."""

from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import gradio as gr
import pytest
from ui_server import compare_three_sets, open_tab, page_at_each_viewport, set_number, ui_app  # noqa: F401  (fixtures: ui_app, one app per module; page)

from wan_ui.core.compare import CompareRun, Comparison
from wan_ui.core.distilled import PRESET_REQUEST_HINTS
from wan_ui.core.errors import UnavailableError
from wan_ui.core.hardware import Hardware
from wan_ui.core.metrics import Metrics
from wan_ui.core.options import OptimizationSet, check_available, fidelity_summary, preset
from wan_ui.core.requests import GenerationRequest, default_request
from wan_ui.ui import batch_tab, history_tab
from wan_ui.ui.compare_tab import fidelity_markdown
from wan_ui.ui.generate_tab import (
    NO_GPU_NOTE,
    apply_preset,
    gpu_live_text,
    progress_reporter,
    request_after_preset,
    unavailable_note,
)
from wan_ui.ui.guard import guarded
from wan_ui.ui.values import HISTORY_COLUMNS

CPU = Hardware(False, "cpu", None, None, frozenset())
# a Hopper card with every optional package: each value of every built-in preset can run
HOPPER = Hardware(True, "NVIDIA H100", (9, 0), 81_000.0,
                  frozenset({"bitsandbytes", "torchao", "sageattention", "xformers", "flash_attn", "pynvml", "triton",
                             "flash_attn.cute"}))
SF_SPARSE_TINY = "Self-Forcing DMD 4-step (sparse, tiny decoder)"


def note_lines(name: str, hw: Hardware) -> list[str]:
    return apply_preset(name, SimpleNamespace(hw=hw))[-1].split("\n")


# ---- progress ----------------------------------------------------------------------------------------------------
def test_every_phase_of_a_run_shows_a_level_so_its_name_is_drawn():
    """Gradio's page draws the description only beside a level; None gave a bare spinner."""
    calls = []
    report = progress_reporter(lambda value, desc=None, unit="steps": calls.append((value, desc)))
    report("loading", 0, 1)
    report("encoding", 0, 1)
    report("denoising", 3, 4)
    report("denoising", 4, 4)
    report("decoding", 0, 1)
    report("writing", 0, 1)
    assert calls == [(0.0, "loading the model (build or reuse)"), (0.0, "encoding the prompt"),
                     ((3, 4), "denoising, step 3 of 4"), ((4, 4), "denoising, step 4 of 4"),
                     (1.0, "decoding (VAE)"), (1.0, "writing the mp4")]
    assert all(value is not None for value, _ in calls)


def test_a_comparisons_next_run_starts_its_bar_again():
    calls = []
    report = progress_reporter(lambda value, desc=None, unit="steps": calls.append((value, desc)))
    report("Fast (1/2), run 1 of 1: denoising", 2, 2)
    report("Fast (1/2), run 1 of 1: decoding", 0, 1)
    report("Slow (2/2), run 1 of 1: loading", 0, 1)  # the next set's build: its own bar, from 0
    assert [value for value, _ in calls] == [(2, 2), 1.0, 0.0]
    assert calls[-1][1] == "Slow (2/2), run 1 of 1: loading the model (build or reuse)"


# ---- presets -----------------------------------------------------------------------------------------------------
def test_an_unavailable_preset_says_so_right_after_its_first_line_naming_the_field_and_section():
    lines = note_lines(SF_SPARSE_TINY, CPU)
    assert lines[0] == f"{SF_SPARSE_TINY}: 4 steps, guidance 1 (set for you)."
    assert lines[1].startswith("Cannot run on this machine: attention_backend=cudnn needs a CUDA GPU")
    assert lines[1].endswith("Change attention backend (Attention section) before Generate.")
    assert any(line.startswith("Licence") or "Licence:" in line for line in lines[2:])
    assert lines[-1].startswith("Fidelity: lossy:")  # its lossy levers stay in the note
    assert all(line.endswith((".", ")")) for line in lines)  # "... base model Apache-2.0" ran into the next note
    fast = note_lines("Fast", CPU)  # no note of its own: what cannot run comes first, every field named
    assert fast[0].startswith("Cannot run on this machine: quantization=torchao_fp8")
    assert "Change quantization (Quantization section), attention backend (Attention section)" in fast[0]


def test_a_preset_this_machine_runs_has_no_such_line():
    for name in ("Fast", SF_SPARSE_TINY, "Fast (sparse)"):
        assert not any("Cannot run" in line for line in note_lines(name, HOPPER)), name
    assert not any("Cannot run" in line for line in note_lines("CPU quick", CPU))
    assert unavailable_note(preset("Fast").to_dict(), HOPPER) is None


def test_unavailable_note_matches_what_generate_refuses():
    values = preset("Fast (quick start)").to_dict()
    with pytest.raises(UnavailableError) as refused:
        check_available(preset("Fast (quick start)"), CPU)
    assert str(refused.value) in unavailable_note(values, CPU)


def test_leaving_a_distilled_preset_puts_the_models_steps_and_guidance_back():
    tiny = default_request(True)
    steps, guidance, status = request_after_preset("Defaults", 4, 1.0, "Fidelity: close: bf16.", tiny)
    assert (steps, guidance) == (tiny.num_inference_steps, tiny.guidance_scale)
    assert status.startswith("Fidelity: close: bf16.\nSteps 8 and guidance 5 again (this model's defaults)")
    full = default_request(False)
    assert request_after_preset("CPU quick", 8, 1, "", full)[:2] == (50, 5.0)  # CausVid's 8 steps, CFG 1
    skip = gr.skip()
    for name in ("Custom", *PRESET_REQUEST_HINTS):  # Custom changes nothing; a distilled preset sets its own
        assert request_after_preset(name, 4, 1.0, "x", tiny) == (skip, skip, skip)
    assert request_after_preset("Defaults", 6, 1.0, "x", tiny) == (skip, skip, skip)  # the user's own values
    assert request_after_preset("Defaults", None, 1.0, "x", tiny) == (skip, skip, skip)


# ---- errors ------------------------------------------------------------------------------------------------------
def page_request() -> gr.Request:
    return gr.Request(headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130"})


def test_a_refused_run_says_not_run_in_its_status_box_and_keeps_the_rest():
    status = gr.Textbox()

    @guarded("generating", status=status)
    def refused(request: gr.Request):
        raise UnavailableError("attention_backend=cudnn needs a CUDA GPU; this machine has none",
                               field="attention_backend")

    @guarded("generating", status=status)
    def broken(request: gr.Request):
        raise RuntimeError("boom")

    @guarded("generating")
    def no_status(request: gr.Request):
        raise RuntimeError("boom")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gr.Warning outside an event is a Python warning
        assert refused(page_request()) == {
            status: "Not run: attention_backend=cudnn needs a CUDA GPU; this machine has none"}
        assert broken(page_request())[status].startswith("Failed: Internal error while generating: RuntimeError: boom")
        assert no_status(page_request()) == gr.skip()
    with pytest.raises(gr.Error, match="needs a CUDA GPU"):  # an API caller still gets the error
        refused(gr.Request(headers={"user-agent": "python-httpx/0.28"}))


# ---- fidelity beside the numbers -----------------------------------------------------------------------------------
def made_up_run(name: str, opts: OptimizationSet) -> CompareRun:
    metrics = Metrics(clip_latency_s=1.0, frame_latency_s=0.2, throughput_fps=5.0, load_time_s=2.0)
    return CompareRun(name, SimpleNamespace(metrics=metrics, options=opts), [metrics])


def test_compare_gives_each_sets_fidelity_under_its_table():
    mag = OptimizationSet(cache="mag")
    comp = Comparison(GenerationRequest("a cat"), [made_up_run("Defaults", OptimizationSet()),
                                                   made_up_run("Defaults + cache=mag", mag)])
    text = fidelity_markdown(comp)
    assert text.startswith("**Fidelity of each set**")
    assert f"- **Defaults**: {fidelity_summary(OptimizationSet())}" in text
    assert f"- **Defaults + cache=mag**: {fidelity_summary(mag)}" in text and "lossy" in fidelity_summary(mag)


def test_a_cpu_machines_hardware_panel_says_no_cuda_gpu_in_words():
    nvml_error = "no GPU: NVML unavailable (NVMLError_LibraryNotFound: NVML Shared Library Not Found)"
    monitor = SimpleNamespace(available=False, markdown=lambda: nvml_error)
    assert gpu_live_text(SimpleNamespace(hw=CPU, monitor=monitor)) == NO_GPU_NOTE
    assert gpu_live_text(SimpleNamespace(hw=HOPPER, monitor=monitor)) == nvml_error  # a GPU's failing NVML: why


def test_the_phone_tables_have_a_width_for_every_column():
    assert list(history_tab.COLUMN_PX) == HISTORY_COLUMNS
    assert len(batch_tab.COLUMN_PX) == len(batch_tab.COLUMNS)


# ---- in chromium -----------------------------------------------------------------------------------------------------
def error_badges(page) -> int:
    """Gradio's red "Error" label on components whose event raised (the page must never show one)."""
    return page.locator(".wrap .error, span.error").filter(has_text=re.compile(r"^\s*Error\s*$")).count()


def choose_preset(page, name: str) -> None:
    page.locator("#preset input").fill(name)
    page.keyboard.press("Enter")


def number(page, elem_id: str) -> float:
    return float(page.locator(f"#{elem_id} input[type=number]").input_value())


# every text the status block shows while a run goes (the progress bar's description is drawn inside it)
RECORD_STATUS_JS = """() => {
  const root = document.getElementById("status");
  window.statusTexts = new Set();
  new MutationObserver(() => window.statusTexts.add(root.innerText)).observe(
    root, {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.browser
def test_a_run_names_each_phase_beside_the_bar_and_its_preview_label_is_clear(page):
    """At the tiny model's default size the decode takes seconds: the page says so instead of a bare spinner."""
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    for elem_id, value in (("width", 256), ("height", 144), ("num-frames", 17), ("steps", 8)):
        set_number(page, elem_id, value)
    page.evaluate(RECORD_STATUS_JS)
    page.click("#generate-btn")
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Done: 17 frames at 256x144"))
    seen = " | ".join(page.evaluate("() => [...window.statusTexts]"))
    for phase in ("encoding the prompt - 0.0%", "denoising, step ", "decoding (VAE) - 100.0%",
                  "writing the mp4 - 100.0%"):
        assert phase in seen, (phase, seen[:2000])
    expect(page.locator("#gpu-live")).to_have_text(NO_GPU_NOTE)
    page.click("#acc-others button:has-text('Others')") if page.locator("#metrics-others").is_hidden() else None
    expect(page.locator("#metrics-others")).to_contain_text("Fidelity (docs/FIDELITY.md)")
    buttons = page.locator("#live-preview button[aria-label]")  # the image's own buttons (the image is one too)
    expect(buttons).to_have_count(1)
    assert buttons.first.get_attribute("aria-label") == "Fullscreen"  # no download or share over the label
    label = page.locator("#live-preview label[data-testid=block-label]").bounding_box()
    button = buttons.first.bounding_box()
    assert label["x"] + label["width"] <= button["x"] or label["y"] + label["height"] <= button["y"], (label, button)


@pytest.mark.browser
def test_an_unavailable_preset_warns_before_generate_and_the_next_generate_works(page):
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    for elem_id, value in (("width", 64), ("height", 64), ("num-frames", 5)):
        set_number(page, elem_id, value)
    status = page.locator("#status textarea")
    choose_preset(page, SF_SPARSE_TINY)
    expect(status).to_have_value(re.compile(r"\nCannot run on this machine: attention_backend=cudnn .*Attention "
                                            r"section\) before Generate\.\n"))
    expect(page.locator("#steps input[type=number]")).to_have_value("4")
    page.click("#generate-btn")
    expect(status).to_have_value("Not run: attention_backend=cudnn needs a CUDA GPU; this machine has none")
    expect(page.locator(".toast-body").filter(has_text="attention_backend=cudnn")).to_be_visible()
    assert error_badges(page) == 0
    page.locator(".toast-body .toast-close").first.click()
    choose_preset(page, "Defaults")
    expect(status).to_have_value(re.compile(r"\nSteps 8 and guidance 5 again \(this model's defaults\)"))
    assert (number(page, "steps"), number(page, "guidance-scale")) == (8, 5)
    page.click("#generate-btn")
    expect(status).to_have_value(re.compile(r"^Done: 5 frames at 64x64"))
    assert error_badges(page) == 0


@pytest.mark.browser
def test_history_and_batch_tables_keep_readable_columns(page):
    """A phone scrolls them sideways; each column keeps its width (one letter a line before)."""
    for tab, elem_id, widths in (("History", "history-table", list(history_tab.COLUMN_PX.values())),
                                 ("Batch", "batch-table", list(batch_tab.COLUMN_PX))):
        open_tab(page, tab)
        heads = page.locator(f"#{elem_id} thead th")
        heads.first.wait_for()
        shown = heads.evaluate_all("ths => ths.map(th => th.getBoundingClientRect().width)")
        assert len(shown) == len(widths)
        assert all(w >= px - 1 for w, px in zip(shown, widths)), (tab, shown)


@pytest.mark.browser
def test_compare_shows_each_sets_fidelity_and_a_refusal_in_its_status(page):
    from playwright.sync_api import expect

    compare_three_sets(page)
    expect(page.locator("#compare-table")).to_contain_text("Fidelity of each set")
    expect(page.locator("#compare-table li")).to_have_count(3)
    page.locator("#set-2-options textarea").fill("sparse_attention=sta, sparse_kernel=flash")
    page.click("#compare-btn")
    expect(page.locator("#compare-status textarea")).to_have_value(re.compile(
        r"^Not run: set .*sparse_kernel=flash needs a CUDA GPU"))
    assert error_badges(page) == 0
    page.locator(".toast-body .toast-close").first.click()
    page.locator("#set-2-options textarea").fill("")
