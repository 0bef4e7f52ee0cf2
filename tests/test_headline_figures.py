"""The figures README.md and docs/benchmarks/*.md present as results are the numbers of the files they come from.

Each headline figure carries its source in an HTML comment right after it (hidden when the Markdown renders):

    53.0 s<!-- src: docs/benchmarks/raw/<file>.json path="runs/Fast (sparse)/runs/0/clip_latency_s" -->
    428.1 s<!-- src: docs/benchmarks/<run>/results.jsonl set="bf16 baseline" field=clip_latency_s -->
    1.94x<!-- ratio: <source A> over <source B> -->

A source is a path from the repository root and selectors:
- `results.jsonl`: `set=` the row's set name, `field=` a dotted path on its `BenchRow` (`clip_latency_s` is the
  row's figure at the full step count, extrapolated when fewer steps ran; `metrics.clip_latency_s` the measured one);
- `.json`: `path=` keys (and list positions) joined by "/" (a key with "/" in it is matched whole);
- `.md` outside the repository (`../shared/WORKLOADS.md`, the profiling report's own figures): `quote=` text that
  must appear in it, its first number being the value; skipped where that file is absent.
`scale=` multiplies the source (MiB -> the docs' GB: 0.001; s -> ms: 1000). The figure shown must equal the source rounded to the
figure's decimals. `ratio:` divides source A by source B (speed-ups: the slower one first).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from wan_ui.bench.report import read_results

ROOT = Path(__file__).resolve().parents[1]
BENCH_DOCS = ROOT / "docs" / "benchmarks"
DOCS = [ROOT / "README.md", *sorted(BENCH_DOCS.glob("*.md"))]
REPORTS = sorted(BENCH_DOCS.glob("*/report.md"))  # generated; a hand-added note may carry a marker too

MARKER = re.compile(r"<!--\s*(src|ratio):\s*(.*?)\s*-->", re.S)
UNIT = r"(?:s/step|ms|s|GiB|GB|MiB|x|%)"
FIGURE_BEFORE = re.compile(rf"(\d[\d,]*(?:\.\d+)?)\s*{UNIT}?[*\s]*$")  # the number right before a marker
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
MARKED_AFTER = re.compile(rf"\s*{UNIT}?\**\s*<!--\s*(?:src|ratio):")
SELECTOR = re.compile(r'(\w+)=("[^"]*"|\S+)')


@dataclass(frozen=True)
class Marker:
    doc: str  # path from the repository root
    line: int
    kind: str  # "src" | "ratio"
    spec: str
    shown: str | None  # the figure in front of the marker, as written (None: no figure there)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def find_markers(doc: Path) -> list[Marker]:
    text, out, since = doc.read_text(), [], 0
    for m in MARKER.finditer(text):
        start = max(since, text.rfind("\n", 0, m.start()) + 1)  # this line, after the previous marker
        figure = FIGURE_BEFORE.search(text[start:m.start()])
        out.append(Marker(str(doc.relative_to(ROOT)), text.count("\n", 0, m.start()) + 1, m.group(1),
                          " ".join(m.group(2).split()), figure.group(1) if figure else None))
        since = m.end()
    return out


MARKERS = [m for doc in DOCS + REPORTS for m in find_markers(doc)]


# ---- reading a source -------------------------------------------------------------------------------------
def _walk(value, keys: list[str]):
    keys = list(keys)
    while keys:
        key = keys.pop(0)
        if isinstance(value, dict):
            while key not in value and keys:  # a key holding "/" itself ("packed/flash"): take the next part too
                key += "/" + keys.pop(0)
            value = value[key]
        elif isinstance(value, list):
            value = value[int(key)]
        else:
            value = getattr(value, key)
    return value


def source_value(spec: str) -> float:
    """The number a source names (see the module docstring), scaled."""
    path, _, rest = spec.partition(" ")
    sel = {k: v.strip('"') for k, v in SELECTOR.findall(rest)}
    file = (ROOT / path).resolve()
    if path.endswith(".jsonl"):
        rows = [r for r in read_results(file.parent) if r.set.name == sel["set"]] if file.name == "results.jsonl" \
            else []
        assert len(rows) == 1, f"{path}: {len(rows)} rows named {sel.get('set')!r}"
        value = _walk(rows[0], sel["field"].split("."))
    elif path.endswith(".json"):
        value = _walk(json.loads(file.read_text()), sel["path"].split("/"))
    elif path.endswith(".md") and "quote" in sel:
        if not file.is_file():
            pytest.skip(f"{path} is not part of this checkout")
        assert sel["quote"] in " ".join(file.read_text().split()), f"{path} does not say {sel['quote']!r}"
        value = float(NUMBER.search(sel["quote"]).group().replace(",", ""))
    else:
        raise AssertionError(f"unknown source {spec!r}")
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{spec}: {value!r} is not a number"
    return value * float(sel.get("scale", 1))


def marker_value(marker: Marker) -> float:
    if marker.kind == "src":
        return source_value(marker.spec)
    over, under = marker.spec.split(" over ")
    return source_value(over) / source_value(under)


def matches(shown: str, value: float) -> bool:
    """`shown` is `value` rounded to its own decimals (half a unit of its last digit either way)."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown.replace(",", "")) - value) <= 0.5 * 10**-decimals + 1e-9


# ---- every marker ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("marker", MARKERS, ids=str)
def test_every_marked_figure_is_its_source(marker):
    assert marker.shown is not None, f"{marker}: no figure right before the marker"
    value = marker_value(marker)
    assert matches(marker.shown, value), f"{marker}: shows {marker.shown}, its source gives {value:.6g}"


def test_matching_rounds_to_the_shown_decimals():
    assert matches("53.0", 53.0326) and matches("1.07", 1.0716) and matches("4,770.8", 4770.838)
    assert not matches("53.0", 53.07) and not matches("31", 31.69) and not matches("1.69", 1.6802)


def test_markers_are_found_in_the_readmes():
    docs = {m.doc for m in MARKERS}
    assert {"README.md", "docs/benchmarks/README.md", "docs/benchmarks/MULTI_GPU.md"} <= docs


# ---- figures that must carry a marker ----------------------------------------------------------------------
def _table_after(text: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table at or after `heading` (header and separator rows left out)."""
    rest = text[text.index(heading):]
    first = next(ln for ln in rest.splitlines() if ln.startswith("|"))
    block = []
    for ln in rest[rest.index(first):].splitlines():
        if not ln.startswith("|"):
            break
        block.append(ln)
    return [_cells(ln) for ln in block[2:]]


def _cells(line: str) -> list[str]:
    """Split a table row on the pipes outside HTML comments."""
    cells, depth, buf, i = [], 0, "", 1
    while i < len(line):
        if line.startswith("<!--", i):
            depth += 1
        elif line.startswith("-->", i):
            depth -= 1
        if line[i] == "|" and depth == 0:
            cells.append(buf.strip())
            buf = ""
        else:
            buf += line[i]
        i += 1
    return cells


def unmarked(cell: str) -> list[str]:
    """The numbers in `cell` that no marker follows."""
    bare = MARKER.sub(lambda m: "\0" * len(m.group()), cell)  # numbers inside markers are not figures
    return [n.group() for n in NUMBER.finditer(bare) if not MARKED_AFTER.match(cell, n.end())]


def test_unmarked_finds_a_figure_without_a_source():
    assert unmarked("**53.0 s**<!-- src: a.json path=x -->, 53.4 s") == ["53.4"]
    assert unmarked("1.94x<!-- ratio: a over b --> / 1.83x<!-- ratio: a over b -->") == []


def test_every_figure_of_the_readme_headline_table_has_a_source():
    rows = _table_after((ROOT / "README.md").read_text(), "## Results")
    assert len(rows) >= 10
    for row in rows:
        for cell in row[1:]:  # the first column describes the run
            assert not unmarked(cell), f"README headline table, {row[0][:40]!r}: {unmarked(cell)} without a source"


@pytest.mark.parametrize("header", [
    "| workload | preset | clip latency | forwards computed | torch peak | NVML peak | target |",  # the presets
    "| workload | set | clip latency | torch peak | NVML peak | report |",  # the same through the benchmark CLI
])
def test_every_latency_of_the_benchmark_headline_tables_has_a_source(header):
    """docs/benchmarks/README.md's two tables of the presets as they are (found by their header row)."""
    text = (BENCH_DOCS / "README.md").read_text()
    rows = _table_after(text, header)
    column = _cells(header).index("clip latency")
    assert len(rows) >= 5
    for row in rows:
        assert not unmarked(row[column]), f"{row[:2]}: {unmarked(row[column])} without a source"


def test_two_gpu_speedups_say_they_are_extrapolated():
    """1.94x / 1.83x are per-step extrapolations from 2 of 65 steps; every line showing them says so."""
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if re.search(r"1\.94x|(?<![(])1\.83x", line):
                assert "extrapolated" in line, f"{doc.relative_to(ROOT)}:{n} shows a 2-GPU speed-up without " \
                                               "saying it is extrapolated"


# ---- committed reports ---------------------------------------------------------------------------------------
RUNS = sorted(p.parent for p in BENCH_DOCS.glob("*/results.jsonl"))


SUMMARY_FIGURES = {"Clip-wise Latency": lambda r: r.clip_latency_s, "MAX VRAM": lambda r: r.metrics.peak_vram_mb,
                   "Load Time": lambda r: r.metrics.load_time_s}


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_committed_report_summary_is_its_results(run):
    """Every latency, VRAM and load figure of report.md's summary is its results.jsonl row's (none edited by
    hand); `python -m wan_ui.bench --render DIR` redraws the report from that file."""
    rows = {r.set.name: r for r in read_results(run)}
    text = (run / "report.md").read_text()
    header = _cells(next(ln for ln in text[text.index("## Summary"):].splitlines() if ln.startswith("|")))
    table = _table_after(text, "## Summary")
    assert [r[header.index("Set")] for r in table] == list(rows)
    for cells in table:
        row = rows[cells[header.index("Set")]]
        for column, value in SUMMARY_FIGURES.items():
            shown = NUMBER.search(cells[header.index(column)])
            if row.metrics is None:  # a set that did not run: "n/a (skipped)"
                assert shown is None
                continue
            assert matches(shown.group(), value(row)), f"{run.name}, {row.set.name}, {column}: {shown.group()}"


def test_the_superseded_fast_extrapolation_points_to_the_measured_run():
    report = (BENCH_DOCS / "h200-20261126-report" / "report.md").read_text()
    note = next(ln for ln in report.splitlines() if ln.startswith("> **Superseded"))
    assert "104.589" in note and "152.5" in note
    for link in re.findall(r"\]\(([^)]+)\)", note):
        assert (BENCH_DOCS / "h200-20261126-report" / link).resolve().exists(), link
