"""Accessible (issue "The app for daily use", point 7), in Debian's chromium at a desktop and a phone size: every text
meets WCAG 2.1 AA contrast, measured from the page's computed colours in the light and the dark scheme; every control
shows a visible keyboard focus; Generate is the next Tab stop after the prompt; a stale Cancel note clears when the
next run starts, on Generate and on Compare."""

from __future__ import annotations

import re

import pytest
from ui_server import open_tab, page_at_each_viewport, set_number, ui_app  # noqa: F401  (fixtures: ui_app, one app per module; page)

pytestmark = pytest.mark.browser

VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
# WCAG 2.1 SC 1.4.3: 4.5:1 for text, 3:1 for large text (24 px, or 18.66 px bold); SC 1.4.11: 3:1 for a focus outline
# against what is beside it. Inactive controls (disabled) are exempt (SC 1.4.3's "incidental" text).
TEXT, LARGE_TEXT, OUTLINE = 4.5, 3.0, 3.0
FOCUS_STOPS = 60  # Tab presses from the Generate tab: the prompt, the buttons, the request and the option controls

# Colour helpers in the page: the relative luminance and contrast ratio of WCAG 2.1 (its definitions of "relative
# luminance" and "contrast ratio"), a colour over the backgrounds under it (alpha composited up to the first opaque
# one, white below the page).
COLOURS_JS = """
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const background = (el) => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    return layers.reverse().reduce((under, c) => over(c, under), [255, 255, 255, 1]); };
  const ratio = (a, b) => { const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x); return (hi + 0.05) / (lo + 0.05); };
"""
# every visible text of the page with its contrast against what is under it
TEXTS_JS = "() => {" + COLOURS_JS + """
  const out = [], seen = new Set(), walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const box = el.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) continue;  // visually hidden (screen-reader only)
    const cs = getComputedStyle(el), bg = background(el), fg = over(parse(cs.color), bg);
    const size = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
    out.push({text: n.textContent.trim().slice(0, 60), id: el.closest('[id]')?.id || '', color: cs.color,
              ratio: ratio(fg, bg), large: size >= 24 || (bold && size >= 18.66),
              disabled: !!el.closest('[disabled], [aria-disabled=true]')});
  }
  return out;
}"""
# the focused control's outline, once its transitions have run (Gradio's buttons fade their styles in); a radio
# button's or a checkbox's is around its label (assets/app.css)
FOCUS_JS = "() => {" + COLOURS_JS + """
  const active = document.activeElement;
  const el = active.matches('label > input[type=radio], label > input[type=checkbox]') ? active.parentElement : active;
  el.getAnimations().forEach((a) => a.finish());
  const cs = getComputedStyle(el), colour = parse(cs.outlineColor);
  return {tag: el.tagName, id: el.closest('[id]')?.id || '', text: (el.textContent || el.value || '').slice(0, 40),
          style: cs.outlineStyle, width: parseFloat(cs.outlineWidth),
          contrast: colour ? ratio(over(colour, background(el.parentElement)), background(el.parentElement)) : 0};
}"""


def reload(page) -> None:
    page.reload()
    page.wait_for_selector("#prompt textarea")
    page.wait_for_function("document.querySelector('#status textarea')?.value.length > 0")


def low_contrast(page) -> list[dict]:
    texts = page.evaluate(TEXTS_JS)
    assert len(texts) > 20  # the page was measured
    return [t for t in texts if not t["disabled"] and t["ratio"] < (LARGE_TEXT if t["large"] else TEXT)]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_meets_wcag_aa_contrast(page, scheme):
    page.emulate_media(color_scheme=scheme)
    reload(page)
    assert page.evaluate("!!document.querySelector('.dark')") == (scheme == "dark")
    info = page.get_by_text("4k+1 (VAE time stride 4); other counts are snapped")  # the grey help text, 2.54:1 once
    assert info.evaluate("el => getComputedStyle(el).color") in {t["color"] for t in page.evaluate(TEXTS_JS)}
    failing = {"Generate": low_contrast(page)}
    for tab in ("Compare", "Options"):
        open_tab(page, tab)
        if tab == "Options":
            page.locator("#acc-options-json").get_by_text("As JSON").click()
            page.locator("#options-json .json-node").first.wait_for()
        failing[tab] = low_contrast(page)
    assert failing == {"Generate": [], "Compare": [], "Options": []}
    open_tab(page, "Generate")
    if scheme == "dark":
        page.emulate_media(color_scheme="light")
        reload(page)


def test_the_help_text_contrast_is_at_least_4_5(page):
    texts = {t["text"]: t for t in page.evaluate(TEXTS_JS)}
    help_text = texts["4k+1 (VAE time stride 4); other counts are snapped"]
    assert help_text["ratio"] >= TEXT, help_text


def test_generate_is_the_next_tab_stop_after_the_prompt(page):
    page.focus("#prompt textarea")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "generate-btn"


def test_every_control_shows_a_visible_keyboard_focus(page):
    page.get_by_role("tab", name="Generate").focus()
    page.keyboard.press("Tab")  # onto the first control, then through the tab's controls
    seen = []
    for _ in range(FOCUS_STOPS):
        focus = page.evaluate(FOCUS_JS)
        if focus["tag"] != "BODY":
            seen.append(focus)
        page.keyboard.press("Tab")
    assert {f["id"] for f in seen} >= {"prompt", "generate-btn", "cancel-btn", "width", "preset", "opt-precision"}
    hidden = [f for f in seen if f["style"] == "none" or f["width"] < 2 or f["contrast"] < OUTLINE]
    assert hidden == [], [f"{f['id']} {f['text']}: {f['style']} {f['width']}px {f['contrast']:.2f}" for f in hidden]


def test_a_stale_cancel_note_clears_when_the_next_run_starts(page):
    from playwright.sync_api import expect

    # 200 steps at 512x512 (2048 tokens a forward): long enough that the Cancel lands mid-run on a busy machine
    for elem_id, value in (("width", 512), ("height", 512), ("num-frames", 5), ("steps", 200)):
        set_number(page, elem_id, value)
    page.click("#generate-btn")
    expect(page.get_by_text(re.compile(r"step \d+ of 200")).first).to_be_visible()
    page.click("#cancel-btn")
    note = page.locator("#cancel-note")
    expect(note).to_contain_text("Run cancelled at")
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Cancelled"))
    for elem_id, value in (("width", 64), ("height", 64), ("steps", 2)):
        set_number(page, elem_id, value)
    page.click("#generate-btn")
    expect(note).to_have_text("")  # at once, while the new run goes
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Done"))
    assert note.inner_text().strip() == ""

    open_tab(page, "Compare")
    compare_note = page.locator("#compare-cancel-note")
    page.click("#compare-cancel-btn")  # nothing runs: the note says so, and is stale once a comparison starts
    expect(compare_note).to_contain_text("Nothing is running in this session.")
    page.click("#compare-btn")
    expect(compare_note).to_have_text("")
    expect(page.locator("#compare-table tbody tr")).to_have_count(2)
    assert compare_note.inner_text().strip() == ""
    open_tab(page, "Generate")
