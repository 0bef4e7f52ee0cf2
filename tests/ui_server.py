"""The app on 127.0.0.1 in this process (tiny model, CPU), for the gradio_client and browser tests; its page in
Debian's chromium; `app.py`'s launch arguments recorded instead of a server started.

Import the `ui_app` fixture into a test module; it is module-scoped: one launched app per module. The `launches`
fixture (function-scoped) is imported the same way.
"""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from wan_ui.ui import compare_tab

# The /compare API's answer, in order: the Compare tab's outputs (compare_tab.OUTPUTS), then the History tab's gallery
# and table (app._wire_compare; the page's history is a gr.State, which the API does not return)
COMPARE_API_OUTPUTS = (*compare_tab.OUTPUTS, "gallery", "history_table")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
TINY_SIZES = (("width", 64), ("height", 64), ("num-frames", 5), ("steps", 2))  # (number box, value): seconds a run
LONG_OPTIONS = "cache=first_block, scheduler=dpmpp, vae_tiling=true"  # a set name longer than a phone's line
RUN_TIMEOUT_MS = 90_000  # a tiny generation takes seconds; the first one also builds the pipeline


@dataclass
class LaunchedApp:
    url: str
    outputs: Path
    settings_file: Path
    manager: object
    demo: object


def compare_answer(answer) -> dict:
    """/compare's answer by output name; its length is checked, so an output added or moved fails here instead of
    shifting every name after it."""
    assert len(answer) == len(COMPARE_API_OUTPUTS), (len(answer), COMPARE_API_OUTPUTS)
    return dict(zip(COMPARE_API_OUTPUTS, answer))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(demo, outputs: Path, limits=None, port: int | None = None) -> str:
    """Start `demo` on a local port (`port`, or a free one) without blocking, with the app's own launch settings for
    `outputs` (and `limits`); returns its URL. The caller closes the demo."""
    from wan_ui.ui.app import launch_kwargs

    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port or free_port(), prevent_thread_lock=True,
                            quiet=True, **launch_kwargs(outputs, limits))
    return url


@pytest.fixture(scope="module")
def ui_app(tiny_folder, tmp_path_factory, random_scorer):
    from wan_ui.core.manager import ModelManager
    from wan_ui.core.quality import BaselineCache
    from wan_ui.ui.app import create_demo

    root = tmp_path_factory.mktemp("ui_app")
    manager = ModelManager(device="cpu", log=lambda m: None)
    # random-weight metric models (tests/conftest.py): nothing is downloaded, the numbers only prove the wiring
    demo = create_demo(manager, model="tiny", scorer=random_scorer,
                       baseline_cache=BaselineCache(), outputs=root / "outputs", settings_file=root / "last.json")
    url = launch_local(demo, root / "outputs")
    yield LaunchedApp(url, root / "outputs", root / "last.json", manager, demo)
    demo.close()


@pytest.fixture
def launches(monkeypatch):
    """Record create_demo's and launch's arguments instead of starting a server: one dict per `app.main` call,
    {"manager", "create": create_demo's keywords, "launch": launch's keywords}."""
    calls = []

    class FakeDemo:
        def launch(self, **kwargs):
            calls[-1]["launch"] = kwargs

    def fake_create_demo(manager, **kwargs):
        calls.append({"manager": manager, "create": kwargs})
        return FakeDemo()

    monkeypatch.setattr("wan_ui.ui.server.create_demo", fake_create_demo)
    return calls


@pytest.fixture(scope="module", params=list(VIEWPORTS), name="page")
def page_at_each_viewport(ui_app, request):
    """Fixture `page`: the module's app in a browser at each of VIEWPORTS in turn (one page per viewport for the
    whole module), the viewport's name as `page.viewport_name`. Import it beside `ui_app`."""
    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS[request.param])
        page.viewport_name = request.param
        yield page


@contextmanager
def browser_page(url: str):
    """The app's page in Debian's chromium (never a downloaded one; the test is skipped without it), once the
    page-load event has restored the last-used settings. Playwright's assertions wait like its actions."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (CI installs Debian's chromium through apt)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=RUN_TIMEOUT_MS)  # assertions wait like actions (default: 5 s)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(RUN_TIMEOUT_MS)
            page.goto(url)
            page.wait_for_selector("#prompt textarea")
            # the page-load event restores the last-used settings; wait for it before typing
            page.wait_for_function("document.querySelector('#status textarea')?.value.length > 0")
            yield page
        finally:
            browser.close()


def set_number(page, elem_id: str, value: int) -> None:
    """Number boxes and the number box of a slider commit their value on input + blur."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def open_tab(page, name: str) -> None:
    """Click a tab; on a narrow page Gradio moves the tabs that do not fit behind its "More tabs" button."""
    tab = page.get_by_role("tab", name=name)
    if tab.count() and tab.is_visible():
        tab.click()
        return
    page.get_by_label("More tabs").click()
    page.locator(".overflow-dropdown button", has_text=name).click()


def compare_three_sets(page) -> None:
    """Run a three-set comparison on tiny sizes, the third set "Defaults" + LONG_OPTIONS; returns with the Compare
    tab open once its chart shows the three bars."""
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    for elem_id, value in TINY_SIZES:
        set_number(page, elem_id, value)
    open_tab(page, "Compare")
    page.locator("#set-3-preset input").click()
    page.get_by_role("option", name="Defaults", exact=True).click()
    expect(page.locator("#set-3-preset input")).to_have_value("Defaults")
    page.locator("#set-3-options textarea").fill(LONG_OPTIONS)
    page.click("#compare-btn")
    expect(page.locator("#compare-chart svg .mark-rect path")).to_have_count(3)
