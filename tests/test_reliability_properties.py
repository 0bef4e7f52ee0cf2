"""Bad input on every path, generated (hypothesis): each value either runs or raises the documented `UserError`
subclass naming its field; nothing else escapes, and the manager stays consistent after any outcome.

Most cases exercise the checks every path shares (requests, option sets, `--set` pairs, the benchmark's set
syntax, the UI's widget and settings conversions, LoRA specs): ~600 cases in a few seconds. A few run
`generate()` on the tiny model with small random requests and option sets (`deadline=None`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from wan_ui.bench.sets import BENCH_KEYS, parse_sets, preset_aliases
from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError, UserError, ValidationError
from wan_ui.core.hardware import Hardware
from wan_ui.optim.lora import parse_lora_spec
from wan_ui.core.options import PRESETS, OptimizationSet, check_available, check_compatible, parse_set_args
from wan_ui.core.requests import LIMITS, MAX_PROMPT_CHARS, SIZE_MULTIPLE, GenerationRequest, validate_request
from wan_ui.ui.values import (NO_SET, OPTION_FIELDS, REQUEST_FIELDS, named_sets_from_values, options_from_values,
                              request_from_values, values_from_settings)

CPU = Hardware(False, "cpu", None, None, frozenset())
H100 = Hardware(True, "NVIDIA H100", (9, 0), 80000.0, frozenset({"torchao", "bitsandbytes", "triton"}))
A10 = Hardware(True, "NVIDIA A10", (8, 6), 23000.0, frozenset())
SPECS = OptimizationSet.specs()


def fast(n: int):
    """Validation properties: pure functions, no files; reproducible in CI (derandomized, no example database)."""
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---- value strategies ---------------------------------------------------------------------------------------
# Anything JSON (the API), argparse or a widget can carry, plus the float edge cases.
junk = st.one_of(st.none(), st.booleans(), st.sampled_from([math.inf, -math.inf, math.nan, 2**64, -1]),
                 st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                 st.sampled_from(["", " ", "nan", "inf", "-1", "1e9", "64", "0x10", "true"]),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))


def with_faults(valid: st.SearchStrategy, bad: dict, max_faults: int = 2) -> st.SearchStrategy:
    """A well-formed dict with 0..max_faults of its keys replaced by bad values: each field's check gets hit
    on its own, and well-formed values reach the checks that come after it."""
    faults = st.lists(st.sampled_from(sorted(bad)), max_size=max_faults, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: bad[k] for k in keys}))
    return st.tuples(valid, faults).map(lambda t: {**t[0], **t[1]})


def near(name: str):
    """Numbers around a request field's range, as ints, floats and numeric strings."""
    lo, hi = LIMITS[name]
    ints = st.one_of(st.integers(int(lo) - 40, int(lo) + 40), st.integers(int(hi) - 40, int(hi) + 40),
                     st.integers(int(lo), int(hi)))
    return st.one_of(ints, ints.map(float), st.floats(lo - 5, hi + 5), ints.map(str))


text = st.text(max_size=40)
long_text = st.builds(lambda n, c: c * n, st.integers(MAX_PROMPT_CHARS - 3, MAX_PROMPT_CHARS + 3),
                      st.sampled_from("a猫 "))
GOOD_REQUEST = {
    "prompt": text.filter(str.strip), "negative_prompt": text,
    "width": st.integers(1, 128).map(lambda k: 16 * k), "height": st.integers(1, 128).map(lambda k: 16 * k),
    "num_frames": st.integers(*LIMITS["num_frames"]), "fps": st.integers(*LIMITS["fps"]),
    "seed": st.integers(*LIMITS["seed"]), "guidance_scale": st.floats(*LIMITS["guidance_scale"]),
    "num_inference_steps": st.integers(*LIMITS["num_inference_steps"])}
BAD_REQUEST = {name: st.one_of(near(name), junk) if name in LIMITS else st.one_of(text, long_text, junk)
               for name in REQUEST_FIELDS}
request_fields = with_faults(st.fixed_dictionaries(GOOD_REQUEST), BAD_REQUEST)


def option_value(name: str, with_junk: bool = True):
    """A field's own values (also as the text a CLI or a widget sends), values around its bounds, and junk."""
    spec = SPECS[name]
    own = []
    if spec.choices:
        own += [st.sampled_from(spec.choices), st.sampled_from(spec.choices).map(str),
                st.sampled_from(spec.choices).map(lambda v: str(v).upper())]
    if spec.bounds:
        lo, hi = spec.bounds
        own += [st.floats(lo - 1, hi + 1), st.integers(int(lo) - 2, int(min(hi, 10**6)) + 2),
                st.floats(lo, hi).map(str)]
    if name == "lora":
        own.append(st.sampled_from(["", "a.safetensors", "../x.safetensors", "/etc/passwd", "owner/repo:0.5"]))
    if spec.pattern:
        own.append(st.lists(st.integers(0, 12), min_size=2, max_size=4).map(lambda v: ",".join(map(str, v))))
    return st.one_of(*own, junk) if with_junk else st.one_of(*own)


def good_option(name: str):
    spec = SPECS[name]
    if spec.choices:
        return st.sampled_from(spec.choices)
    if spec.bounds:
        lo, hi = spec.bounds
        return st.integers(int(lo), int(min(hi, 10**6))) if type(getattr(OptimizationSet(), name)) is int \
            else st.floats(lo, hi)
    return st.just(getattr(OptimizationSet(), name))  # free text (lora, windows): its own strategies below


GOOD_OPTIONS = st.fixed_dictionaries({}, optional={name: good_option(name) for name in OPTION_FIELDS})
BAD_OPTIONS = {name: option_value(name) for name in OPTION_FIELDS}
option_dicts = with_faults(GOOD_OPTIONS, BAD_OPTIONS, max_faults=1)
unknown_options = st.dictionaries(st.text(string.ascii_lowercase + "_", min_size=1, max_size=10), junk, max_size=1)


def assert_names_field(e: UserError, allowed) -> None:
    """The error names a field the caller can change, and the message mentions it."""
    known = e.field in SPECS or e.field in REQUEST_FIELDS or e.field in ("set", "sets", "settings_file")
    event(f"{type(e).__name__}: {e.field if known else 'an unknown key'}")  # --hypothesis-show-statistics
    assert e.field is not None and e.field in allowed, (e.field, str(e))
    assert str(e)


def assert_valid_request(req: GenerationRequest) -> None:
    event("valid request")
    assert isinstance(req.prompt, str) and req.prompt.strip() and len(req.prompt) <= MAX_PROMPT_CHARS
    for name in ("width", "height"):
        v = getattr(req, name)
        assert type(v) is int and v % SIZE_MULTIPLE == 0 and LIMITS[name][0] <= v <= LIMITS[name][1]
    for name in ("num_frames", "fps", "seed", "num_inference_steps"):
        v = getattr(req, name)
        assert type(v) is int and LIMITS[name][0] <= v <= LIMITS[name][1]
    assert (req.num_frames - 1) % 4 == 0
    assert math.isfinite(req.guidance_scale) and 0.0 <= req.guidance_scale <= 20.0
    again = validate_request(req)  # validation is idempotent: a validated request passes unchanged
    assert again == req and again.notes == req.notes


def assert_valid_options(opts: OptimizationSet) -> None:
    event("valid option set")
    for name, spec in SPECS.items():
        v = getattr(opts, name)
        assert type(v) is type(getattr(OptimizationSet(), name)), name
        if spec.choices:
            assert v in spec.choices
        if spec.bounds:
            assert spec.bounds[0] <= v <= spec.bounds[1]
    assert OptimizationSet.from_dict(json.loads(opts.to_json())) == opts  # serialisable and back
    hash(opts)  # the manager keys pipelines by it


def assert_checks_name_a_field(opts: OptimizationSet) -> None:
    """check_available on three machines and check_compatible: pass, or name the field that has to change."""
    for hw in (CPU, A10, H100):
        try:
            check_available(opts, hw)
        except UnavailableError as e:
            assert_names_field(e, SPECS)
            assert getattr(opts, e.field) != getattr(OptimizationSet(), e.field)  # the defaults run anywhere
    try:
        check_compatible(opts)
    except IncompatibleOptionsError as e:
        assert_names_field(e, SPECS)
        fixed = dataclasses.replace(opts, **{e.field: getattr(OptimizationSet(), e.field)})
        assert str(e) != _compat_message(fixed)  # resetting the named field resolves this conflict


def _compat_message(opts) -> str | None:
    try:
        check_compatible(opts)
    except IncompatibleOptionsError as e:
        return str(e)
    return None


# ---- requests (every path builds one) -----------------------------------------------------------------------
@fast(150)
@given(request_fields)
def test_any_request_is_valid_or_names_its_field(fields):
    try:
        req = validate_request(GenerationRequest(**{"prompt": "x", **fields}))
    except ValidationError as e:
        assert_names_field(e, REQUEST_FIELDS)
        return
    assert_valid_request(req)


@fast(40)
@given(st.dictionaries(st.one_of(st.sampled_from(REQUEST_FIELDS), st.text(max_size=8)), junk, max_size=4))
def test_request_from_dict_is_valid_or_names_its_field(d):
    """Saved settings and video sidecars come back through from_dict (a missing prompt included)."""
    try:
        req = validate_request(GenerationRequest.from_dict(d))
    except ValidationError as e:
        assert_names_field(e, set(REQUEST_FIELDS) | set(d) | {"notes"})
        return
    assert_valid_request(req)


# ---- option sets: from_dict, --set pairs, availability, compatibility --------------------------------------
@fast(150)
@given(option_dicts, st.one_of(st.just({}), st.just({}), unknown_options))
def test_any_option_set_is_valid_or_names_its_field(values, unknown):
    values = {**unknown, **values}
    try:
        opts = OptimizationSet.from_dict(values)
    except ValidationError as e:
        assert_names_field(e, values)
        return
    assert not (set(unknown) - set(SPECS))
    assert_valid_options(opts)
    assert_checks_name_a_field(opts)


pair = st.one_of(
    st.builds(lambda k, v, sp: f"{k}{sp}={sp}{v}", st.sampled_from(OPTION_FIELDS),
              st.one_of(*(st.sampled_from(s.choices).map(str) for s in SPECS.values() if s.choices),
                        st.floats(-1, 30).map(str), st.text(max_size=6)), st.sampled_from(["", " "])),
    st.text(max_size=12))


@fast(80)
@given(st.lists(pair, max_size=4), st.sampled_from([None, *PRESETS]))
def test_set_args_are_valid_or_name_the_field(pairs, base):
    """The CLI's repeated --set KEY=VALUE on top of an optional --preset."""
    base_set = OptimizationSet.from_dict(PRESETS[base]) if base else None
    keys = {p.split("=", 1)[0].strip() for p in pairs}
    try:
        opts = parse_set_args(pairs, base=base_set)
    except ValidationError as e:
        assert_names_field(e, keys | {"set"})
        return
    assert_valid_options(opts)
    assert_checks_name_a_field(opts)


# ---- the benchmark's --sets syntax --------------------------------------------------------------------------
bench_term = st.one_of(
    st.sampled_from([*PRESETS, *preset_aliases(), "FAST", "Low  VRAM"]),
    pair.filter(lambda p: "," not in p and "+" not in p),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(BENCH_KEYS), st.one_of(st.integers(-2, 60).map(str),
                                                                              st.text(max_size=3))),
)
bench_item = st.builds(
    lambda label, terms, quote: (f"{label}: " if label else "") + quote + "+".join(terms) + quote,
    st.one_of(st.none(), st.text(string.ascii_letters + " ", max_size=6)), st.lists(bench_term, min_size=1, max_size=3),
    st.sampled_from(["", "", '"']))
bench_text = st.one_of(st.lists(bench_item, min_size=1, max_size=4).map(", ".join), st.text(max_size=30))


@fast(100)
@given(st.lists(bench_text, min_size=1, max_size=2))
def test_bench_sets_parse_or_name_the_sets_field(texts):
    try:
        sets = parse_sets(texts)
    except ValidationError as e:
        assert e.field == "sets" and str(e)
        event("ValidationError: sets")
        return
    assert sets and len({s.name for s in sets}) == len(sets)
    for s in sets:
        assert_valid_options(s.options)
        assert s.steps is None or s.steps >= 1
        assert s.repeats is None or s.repeats >= 0


# ---- the UI: widget values -> request, options, compare sets; settings -> widgets ---------------------------
GOOD_WIDGETS = st.tuples(st.fixed_dictionaries({**GOOD_REQUEST, "randomize_seed": st.booleans()}),
                         GOOD_OPTIONS).map(lambda t: {**t[0], **t[1]})
# an emptied number box arrives as None
widget_values = with_faults(GOOD_WIDGETS, {**{n: st.one_of(st.none(), v) for n, v in BAD_REQUEST.items()},
                                           **BAD_OPTIONS})
compare_rows = st.fixed_dictionaries({}, optional={
    **{f"set_{i}_preset": st.one_of(st.sampled_from([NO_SET, "Defaults", *PRESETS]), st.text(max_size=6))
       for i in range(1, 7)},
    **{f"set_{i}_options": st.one_of(st.lists(pair, max_size=2).map(", ".join), st.none()) for i in range(1, 7)}})


@fast(100)
@given(widget_values, compare_rows)
def test_widget_values_become_a_request_or_a_toast_naming_the_field(values, rows):
    allowed = set(REQUEST_FIELDS) | set(OPTION_FIELDS) | {f"set_{i}_options" for i in range(1, 7)}
    try:
        req = request_from_values(values)
        opts = options_from_values(values)
        sets = named_sets_from_values(rows)
    except UserError as e:
        assert_names_field(e, allowed)
        return
    assert_valid_request(req)
    assert_valid_options(opts)
    assert_checks_name_a_field(opts)
    for _, s in sets:
        assert_valid_options(s)


settings_dicts = st.fixed_dictionaries(
    {"request": st.one_of(request_fields, request_fields, request_fields.map(lambda d: {**d, "prompt": None}),
                          st.dictionaries(st.text(max_size=4), junk, max_size=2))},
    optional={"optimizations": st.one_of(option_dicts, st.none()), "ui": st.one_of(
        st.fixed_dictionaries({}, optional={"randomize_seed": junk, "quality": junk}), junk)})


@fast(60)
@given(settings_dicts)
def test_saved_or_uploaded_settings_restore_or_name_the_field(saved):
    """The last-used file and a video's sidecar come back through values_from_settings."""
    try:
        values = values_from_settings(json.loads(json.dumps(saved, allow_nan=True)))
    except UserError as e:
        assert_names_field(e, set(REQUEST_FIELDS) | set(OPTION_FIELDS) | set(saved["request"])
                           | set(saved.get("optimizations") or {}) | {"settings_file"})
        return
    # what is restored into the widgets runs as it is
    assert_valid_request(request_from_values({**values, "randomize_seed": False}))
    assert_valid_options(options_from_values(values))


# ---- LoRA specs: confined to the LoRA folder, or a hub id ---------------------------------------------------
@pytest.fixture(scope="module")
def lora_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    (root / "a.safetensors").write_bytes(b"x")
    (root / "sub").mkdir()
    (root / "sub" / "b.safetensors").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "evil.safetensors").write_bytes(b"x")
    (root / "escape.safetensors").symlink_to(outside / "evil.safetensors")
    (root / "escape_dir").symlink_to(outside)
    (root / "inside.safetensors").symlink_to(root / "a.safetensors")
    return root, outside


lora_token = st.sampled_from(["a.safetensors", "sub", "sub/b.safetensors", "..", "/", "./", "/etc/passwd",
                              "escape.safetensors", "escape_dir/evil.safetensors", "inside.safetensors",
                              "notes.txt", "owner/repo", "owner/repo/w.safetensors", ":", ":0.5", ":-11", ":nan",
                              ";", " ", "~", "\x00", "x" * 300, "%2e%2e"])


@fast(60)
@given(st.one_of(st.lists(st.one_of(lora_token, st.text(max_size=6)), max_size=5).map("".join), st.text(max_size=30)))
def test_lora_specs_stay_in_the_lora_folder_or_name_the_field(lora_tree, spec):
    root, _ = lora_tree
    try:
        sources = parse_lora_spec(spec, root)
    except ValidationError as e:
        assert e.field == "lora" and str(e)
        event("ValidationError: lora")
        return
    event("valid LoRA spec")
    for s in sources:
        assert -10 <= s.scale <= 10
        if s.is_hub:
            assert s.location.count("/") == 1 and not s.location.startswith((".", "/"))
            assert s.weight_name is None or s.weight_name.endswith(".safetensors")
        else:
            real = Path(s.location, s.weight_name or "").resolve()
            assert real.is_relative_to(root) and real.exists()


# ---- generation: small random valid requests and option sets on the tiny model -----------------------------
small_request = st.builds(
    GenerationRequest, prompt=st.text(string.ascii_letters + " ", min_size=1, max_size=30).filter(str.strip),
    negative_prompt=st.sampled_from(["", "blurry"]), width=st.sampled_from([16, 32]),
    height=st.sampled_from([16, 32]), num_frames=st.sampled_from([1, 4, 5]), fps=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1), guidance_scale=st.sampled_from([0.0, 1.0, 3.5]),
    num_inference_steps=st.integers(1, 2))


def runnable_values(name: str) -> st.SearchStrategy:
    """Values of a run-time field this machine can run: its choices, or its bounds and their middle."""
    from wan_ui.core.hardware import probe_hardware
    from wan_ui.core.options import value_availability

    spec = SPECS[name]
    if spec.choices:
        return st.sampled_from([v for v in spec.choices if value_availability(name, v, probe_hardware()) is None])
    lo, hi = spec.bounds
    kind = type(getattr(OptimizationSet(), name))
    return st.sampled_from(sorted({kind(lo), kind(hi), kind((lo + hi) / 2)}))


# Every run-time option (from the specs, so a new one is covered as it lands) and the cheap load-time ones
# (compile is tested elsewhere: its warm-up costs seconds); now and then a value this machine cannot run, to
# take the refusal path too.
cpu_options = st.fixed_dictionaries({}, optional={
    **{name: runnable_values(name) for name, spec in SPECS.items()
       if not spec.load_time and (spec.choices or spec.bounds)},
    "precision": st.sampled_from(["bf16", "fp32"]), "vae_precision": st.sampled_from(["fp32", "bf16"]),
    "quantization": st.sampled_from(["none", "fp8_storage"]),
    "offload": st.sampled_from(["none"] * 5 + ["group_leaf"])}).map(OptimizationSet.from_dict)


NORMAL = GenerationRequest("a normal request", width=16, height=16, num_frames=1, num_inference_steps=1)


@pytest.fixture(scope="module")
def shared_manager(tiny_folder):
    """One manager across every generated example: consistency must hold across any sequence of them."""
    from wan_ui.core.manager import ModelManager

    return ModelManager(device="cpu", log=lambda m: None)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("property_outputs")


@settings(max_examples=12, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(small_request, cpu_options)
def test_generation_runs_or_refuses_and_the_manager_stays_consistent(shared_manager, out_dir, request, opts):
    from wan_ui.core.generate import generate
    from wan_ui.core.video import read_video

    mgr = shared_manager
    before = mgr.resident()
    try:
        result = generate(mgr, "tiny", request, opts, out_dir=out_dir)
    except (UnavailableError, IncompatibleOptionsError) as e:
        assert_names_field(e, SPECS)
        assert mgr.resident() == before  # refused before any build
    else:
        event("generated")
        r = result.request
        assert result.frames.shape == (r.num_frames, r.height, r.width, 3)
        assert read_video(result.video_path)[0].shape == result.frames.shape
        assert mgr.resident() == [mgr.key("tiny", opts)]
    assert len(mgr.resident()) <= mgr.max_resident
    assert not list(out_dir.glob(".*.partial*"))
    # a following normal generation works on whatever the manager holds now
    after = generate(mgr, "tiny", NORMAL, OptimizationSet(), out_dir=None)
    assert after.frames.shape == (1, 16, 16, 3) and mgr.resident() == [mgr.key("tiny", OptimizationSet())]

