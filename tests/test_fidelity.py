"""Every lossy lever is named as lossy: each option value has a fidelity class (exact / close / lossy-published /
lossy-ours, docs/FIDELITY.md), published ones cite their source, and the class reaches every place an option is
shown: preset descriptions, `python -m wan_ui options --json`, the benchmark report and the option widgets.
No model is loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from wan_ui.bench.report import render_report
from wan_ui.bench.rows import BenchRow, SetInfo
from wan_ui.cli import main as cli_main
from wan_ui.core.errors import ValidationError
from wan_ui.core.fidelity import CLASSES, LOSSY, ByValue, Cases, Fidelity
from wan_ui.core.generate import generate
from wan_ui.core.hardware import Hardware
from wan_ui.core.manager import ModelManager
from wan_ui.core.options import (PRESETS, OptimizationSet, fidelity_of, fidelity_of_value, fidelity_summary,
                                 preset, preset_description, worst_fidelity)
from wan_ui.optim.cache import DEFAULT_MAG_SKIPS, DEFAULT_THRESHOLDS
from wan_ui.ui import values as uv

ROOT = Path(__file__).resolve().parents[1]
SPECS = OptimizationSet.specs()
CPU = Hardware(False, "cpu", None, None, frozenset())
# a citation names a paper, a repository (owner/name), a model card or a documentation page
CITATION = re.compile(r"arXiv \d{4}\.\d{5}|[\w.-]+/[\w.-]+|huggingface\.co/|\bdocs\b")


def _contexts() -> list[OptimizationSet]:
    """Sets that switch on every lever a refining option depends on (each cache, a LoRA, tiling, compile, ...)."""
    base = [OptimizationSet().with_(**{name: value}) for name in ("cache", "sparse_attention", "compile", "vae_tiling")
            for value in SPECS[name].choices]
    return base + [OptimizationSet(lora=lora) for lora in ("", "style.safetensors:0.7", PRESETS["CausVid 8-step"]["lora"])]


def _allowed(spec, value) -> bool:
    try:
        spec.check(value)
        return True
    except ValidationError:
        return False


def _samples(spec) -> list:
    """Values across a field's range: its bounds, a few inside, and the published settings."""
    if spec.choices is not None:
        return list(spec.choices)
    if spec.kind == "str":
        return ["", "3,1,1", "6,1,1", "x.safetensors", PRESETS["Self-Forcing DMD 4-step"]["lora"]]
    lo, hi = spec.bounds
    hi = min(hi, 4096)
    points = {lo, hi, (lo + hi) / 2, 0.05, 0.12, 0.5, 1, 2, 3, 4, 5, 8, 10, 12}
    return sorted(int(v) if spec.kind == "int" else float(v) for v in points if lo <= v <= hi)


# ---- every value has a class --------------------------------------------------------------------------------
def test_every_value_of_every_option_has_a_class():
    for name, spec in SPECS.items():
        rule = spec.fidelity
        assert isinstance(rule, (ByValue, Cases)), name
        if spec.choices is not None:  # a choice field lists exactly its values, of the field's type
            assert isinstance(rule, ByValue), name
            assert [v for v, _ in rule.table] == list(spec.choices), name
            assert [type(v) for v, _ in rule.table] == [type(v) for v in spec.choices], name
        values = [spec.check(v) for v in _samples(spec) if _allowed(spec, v)]
        assert values, name
        for opts in _contexts():
            for value in values:
                f = fidelity_of_value(name, value, opts)
                assert f.cls in CLASSES and f.what and "{value}" not in f.what, (name, value)


def test_the_defaults_make_no_approximation_nobody_asked_for():
    """bf16 is close; the sparse window's default is ours but counts only with sparse attention on."""
    assert {lever.name: lever.fidelity.cls for lever in fidelity_of(OptimizationSet())} == {
        "precision": "close", "text_encoder_precision": "close"}


def test_refining_options_name_an_earlier_lever():
    names = list(SPECS)
    for name, spec in SPECS.items():
        if spec.fidelity_part_of:
            assert names.index(spec.fidelity_part_of) < names.index(name), name
            assert SPECS[spec.fidelity_part_of].fidelity_part_of is None


def test_a_published_setting_without_a_source_is_refused():
    with pytest.raises(TypeError, match="needs its source"):
        Fidelity("lossy-published", "MagCache")
    with pytest.raises(TypeError, match="class must be one of"):
        Fidelity("lossless", "MagCache")
    with pytest.raises(TypeError, match="last case must hold always"):
        Cases(())


def _all_rows():
    for name, spec in SPECS.items():
        for key, f in spec.fidelity.rows():
            yield name, key, f


def test_published_entries_cite_their_source_and_close_ones_their_bound():
    for name, key, f in _all_rows():
        if f.cls == "lossy-published":
            assert CITATION.search(f.source), (name, key, f.source)
        if f.cls in ("close", *LOSSY):
            assert f.note, (name, key)  # the bound, or what is lost
        if f.cls == "close":
            assert f.source, (name, key)  # where the bound comes from


def test_sources_inside_this_repository_exist():
    """A bound measured 'in this repo' points at a file (and test) that is there."""
    for name, key, f in _all_rows():
        text = f"{f.source} {f.note}"
        for path, test in re.findall(r"(?<![\w/.-])((?:tests|docs)/[\w/.-]+\.(?:py|md|json))(?:::(\w+))?", text):
            assert (ROOT / path).is_file(), (name, key, path)
            if test:
                assert f"def {test}(" in (ROOT / path).read_text(), (name, key, test)
        for raw in re.findall(r"raw/[\w.-]+\.json", text):
            assert (ROOT / "docs/benchmarks" / raw).is_file(), (name, key, raw)


def test_magcache_published_setting_matches_what_the_cache_applies():
    mag = OptimizationSet(cache="mag")
    assert fidelity_of_value("cache_threshold", DEFAULT_THRESHOLDS["mag"], mag).cls == "lossy-published"
    assert fidelity_of_value("cache_max_skips", DEFAULT_MAG_SKIPS, mag).cls == "lossy-published"


def test_docs_list_every_value_with_its_class():
    doc = (ROOT / "docs/FIDELITY.md").read_text()
    for name, key, f in _all_rows():
        part = SPECS[name].fidelity_part_of
        option = f"`{name}`" + (f" (refines `{part}`)" if part else "")
        assert f"| {option} | {key} | {f.cls} |" in doc, (name, key)


# ---- classes of sets ----------------------------------------------------------------------------------------
def test_lossy_levers_are_named_lossy():
    """The levers the issue named: MagCache, CFG truncation, FP8, NF4, sparse attention, distillation."""
    cls = {name: {lever.name: lever.fidelity.cls for lever in fidelity_of(preset(name))} for name in PRESETS}
    assert cls["Low VRAM"]["cache"] == "lossy-published" and cls["Low VRAM"]["cfg_truncation"] == "lossy-ours"
    assert cls["Fast"]["quantization"] == "lossy-published"
    assert cls["Report best"]["quantization"] == cls["Report best"]["text_encoder_quantization"] == "lossy-published"
    assert cls["Fast (sparse)"]["sparse_attention"] == cls["Fast (sparse)"]["sparse_window"] == "lossy-ours"
    assert cls["Fast (sparse)"]["cache_max_skips"] == "lossy-published"  # K=4: the authors' own 1.3B command
    assert cls["CausVid 8-step"]["lora"] == "lossy-published"
    assert worst_fidelity(preset("Baseline (report)")) == "exact" and fidelity_of(preset("Baseline (report)")) == []
    assert worst_fidelity(OptimizationSet()) == "close"  # bf16
    assert worst_fidelity(preset("Report best")) == "lossy-published"
    assert worst_fidelity(preset("Low VRAM")) == "lossy-ours"


def test_exact_levers_stay_exact():
    exact = preset("Baseline (report)").with_(offload="group_block", vae_slicing=True, compile_mode="max-autotune",
                                              cache_threshold=0.3, vae_tile=512, sparse_window="1,1,1")
    assert fidelity_of(exact) == []  # refining options count only with their lever on


@pytest.mark.parametrize("values, name, cls", [
    ({"cache": "mag"}, "cache_threshold", "lossy-published"),
    ({"cache": "mag", "cache_threshold": 0.12}, "cache_threshold", "lossy-published"),
    ({"cache": "mag", "cache_threshold": 0.3}, "cache_threshold", "lossy-ours"),
    ({"cache": "first_block", "cache_threshold": 0.12}, "cache_threshold", "lossy-ours"),
    ({"cache": "mag", "cache_max_skips": 4}, "cache_max_skips", "lossy-published"),
    ({"cache": "mag", "cache_max_skips": 3}, "cache_max_skips", "lossy-ours"),
    ({"cfg_truncation": 0.5}, "cfg_truncation", "lossy-ours"),
    ({"flow_shift": 10.0}, "flow_shift", "lossy-published"),
    ({"flow_shift": 2.0}, "flow_shift", "lossy-ours"),
    ({"lora": PRESETS["CausVid 8-step"]["lora"], "flow_shift": 2.0}, "flow_shift", "lossy-published"),
    ({"lora": "my/loras/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"}, "lora", "lossy-published"),
    ({"lora": "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors:0.5"}, "lora", "lossy-ours"),
    ({"lora": "style.safetensors"}, "lora", "lossy-ours"),
    ({"sparse_attention": "sta", "sparse_dense_steps": -1}, "sparse_dense_steps", "lossy-published"),
    ({"sparse_attention": "sta", "sparse_dense_steps": 2}, "sparse_dense_steps", "lossy-ours"),
    ({"attention_backend": "sage"}, "attention_backend", "lossy-published"),
    ({"attention_backend": "flash"}, "attention_backend", "close"),
])
def test_the_class_of_a_value_depends_on_the_lever_it_refines(values, name, cls):
    levers = {lever.name: lever for lever in fidelity_of(OptimizationSet().with_(**values))}
    assert levers[name].fidelity.cls == cls


def test_every_preset_description_names_each_lossy_lever():
    for name in PRESETS:
        text = preset_description(name)
        assert text.startswith(f"{name}: ")
        lossy_part = text.split("; close: ")[0]
        for lever in fidelity_of(preset(name)):
            assert lever.fidelity.what in text, (name, lever.name)
            if lever.fidelity.cls in LOSSY:
                assert lever.fidelity.what in lossy_part and "lossy: " in lossy_part, (name, lever.name)
    low = preset_description("Low VRAM")
    assert "MagCache, threshold 0.12, K=2 (published: MagCache, arXiv 2506.09045)" in low
    assert "CFG on the first 0.5 of the steps (ours)" in low
    sparse = preset_description("Low VRAM (sparse)")
    assert "sliding-tile sparse attention, window 3,1,1, 2 dense steps, first block dense (ours)" in sparse
    # a close refinement of a lossy lever is listed with the close levers, not under the lossy lever's tag
    assert sparse.endswith(", border tiles packed") and "border tiles packed" in sparse.split("; close: ")[1]
    assert preset_description("Baseline (report)") == "Baseline (report): exact: the reference computation"


def test_summary_cites_each_source_once():
    text = fidelity_summary(preset("Report best"))
    assert text.count("QLoRA, arXiv 2305.14314") == 1 and "NF4 text encoder weights (published, as cited)" in text


# ---- where options are shown ----------------------------------------------------------------------------------
def test_options_cli_json_carries_the_class_of_every_value(capsys):
    assert cli_main(["options", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["options"]}
    assert set(rows) == set(SPECS)
    for name, r in rows.items():
        assert all(f["class"] in CLASSES for f in r["fidelity"].values()), name
        if r["values"] is not None:
            assert list(r["fidelity"]) == [("true" if v else "false") if isinstance(v, bool) else str(v)
                                           for v in r["values"]], name
    assert rows["cache"]["fidelity"]["mag"]["class"] == "lossy-published"
    assert "2506.09045" in rows["cache"]["fidelity"]["mag"]["source"]
    assert rows["cache_threshold"]["fidelity_part_of"] == "cache"
    presets = {p["name"]: p for p in out["presets"]}
    assert set(presets) == set(PRESETS)
    assert presets["Low VRAM"]["fidelity"] == "lossy-ours"
    assert presets["Low VRAM"]["description"] == preset_description("Low VRAM")
    assert {lv["name"]: lv["class"] for lv in presets["Low VRAM"]["levers"]}["cfg_truncation"] == "lossy-ours"


def test_options_cli_table_shows_classes_and_presets(capsys):
    assert cli_main(["options"]) == 0
    out = capsys.readouterr().out
    assert "fidelity: exact: none · lossy (ours): first_block, taylorseer, pab · lossy (published: MagCache, " \
           "arXiv 2506.09045): mag" in out
    assert f"  {preset_description('Fast')}" in out


def _row(index: int, name: str, options: dict) -> BenchRow:
    return BenchRow(index=index, set=SetInfo(name=name, spec=name, options=options), workload="smoke",
                    request={"width": 64, "height": 64, "num_frames": 9, "guidance_scale": 6.0, "seed": 0},
                    steps_run=2, steps_full=2)


def test_bench_report_shows_each_sets_classes():
    rows = [_row(0, "Baseline (report)", preset("Baseline (report)").to_dict()),
            _row(1, "Low VRAM", preset("Low VRAM").to_dict()),
            _row(2, "old row", {"no_such_option": 1})]
    text = render_report(rows)
    summary = text.splitlines()[text.splitlines().index("## Summary") + 2:][:5]
    assert summary[0].startswith("| # | Set |") and summary[0].endswith("| Fidelity |")
    assert summary[2].startswith("| 1 | Baseline (report) |") and summary[2].endswith("| exact |")
    assert summary[3].startswith("| 2 | Low VRAM |") and summary[3].endswith("| lossy-ours |")
    assert summary[4].startswith("| 3 | old row |") and summary[4].endswith("| n/a |")
    assert f"Fidelity (docs/FIDELITY.md): {fidelity_summary(preset('Low VRAM'))}" in text
    assert "CFG on the first 0.5 of the steps (ours)" in text
    assert "n/a (unknown option(s) ['no_such_option']" in text


def test_option_widgets_say_each_values_class():
    widgets = {w.name: w for ws in uv.option_widgets(CPU).values() for w in ws}
    assert widgets["cache"].info.endswith("Fidelity — exact: none · lossy (ours): first_block, taylorseer, pab · "
                                          "lossy (published: MagCache, arXiv 2506.09045): mag")
    assert "lossy (ours): below 1" in widgets["cfg_truncation"].info
    assert "lossy (published: QLoRA, arXiv 2305.14314): bnb_nf4" in widgets["quantization"].info
    for name, w in widgets.items():
        assert "Fidelity — " in w.info, name


def test_preset_note_names_the_lossy_levers():
    note = uv.preset_fidelity_note(uv.preset_values("Low VRAM"))
    assert note == f"Fidelity: {fidelity_summary(preset('Low VRAM'))}."
    assert "MagCache" in note and "(ours)" in note


def test_lever_json_round_trips():
    lever = next(lv for lv in fidelity_of(preset("Fast")) if lv.name == "quantization")
    d = json.loads(json.dumps(lever.to_dict()))
    assert set(d) == {"name", "value", "class", "what", "note", "source", "part_of"}
    assert (d["name"], d["class"], d["source"]) == ("quantization", "lossy-published", lever.fidelity.source)


# ---- what the table calls exact is exact ----------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_exact_levers_give_bit_identical_frames_on_a_gpu(precision, smoke_request, tiny_folder):
    """Offloading only moves weights, and the sliced decode of one video is the same decode: the same frames."""
    m = ModelManager(device="cuda", log=lambda _: None)
    base = OptimizationSet().with_(precision=precision, text_encoder_precision=precision)
    ref = generate(m, "tiny", smoke_request, base, out_dir=None).frames
    np.testing.assert_array_equal(generate(m, "tiny", smoke_request, base, out_dir=None).frames, ref)  # repeatable
    for values in [{"offload": mode} for mode in ("model", "sequential", "group_block", "group_leaf")] + \
                  [{"vae_slicing": True}]:
        opts = base.with_(**values)
        assert [lv.name for lv in fidelity_of(opts)] == [lv.name for lv in fidelity_of(base)]  # nothing added
        np.testing.assert_array_equal(generate(m, "tiny", smoke_request, opts, out_dir=None).frames, ref,
                                      err_msg=str(values))
