"""The benchmark's set syntax: which optimization sets to run, each with a display name.

    --sets 'baseline, bf16: default, Fast+cache=none, "Low VRAM", mag: cache=mag+steps=10'

A list is split on commas outside quotes and parentheses. One item is

    [LABEL:] TERM [+ TERM ...]

- TERM is a preset name ("Baseline (report)", "Report best", "Fast", "Low VRAM", "CPU quick"; any case),
  a preset alias (`baseline`, `report-best`, `fast`, `low-vram`, `cpu-quick`, `default`), or `key=value`
  for an option of `python -m wan_ui options` (`precision=fp32`, `cache=mag`, ...). Presets and options apply
  left to right on top of the defaults (`default` = the OptimizationSet defaults: bf16, UniPC, nothing
  else), so `fast+cache=none` is the Fast preset without its cache.
- Two benchmark keys may appear as terms too: `steps=N` (denoising steps run for this set, overriding
  --steps; the rest is extrapolated) and `repeats=R` (timed repeats after the warm-up run, overriding
  --repeats).
- LABEL (text before the first ':' when that text has no '=') names the set in the report; without one the
  name is the preset's name, or the terms joined with ' + '.

The first set is the baseline of every ratio in the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wan_ui.core.errors import ValidationError
from wan_ui.core.options import PRESETS, OptimizationSet

BENCH_KEYS = ("steps", "repeats")  # per-set benchmark settings, not optimization options


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def preset_aliases() -> dict[str, str | None]:
    """alias -> preset name (None: the OptimizationSet defaults). Slugs of every preset, plus short names."""
    aliases: dict[str, str | None] = {_slug(p): p for p in PRESETS}
    aliases.update({"baseline": "Baseline (report)", "default": None, "defaults": None})
    return aliases


@dataclass(frozen=True)
class BenchSet:
    name: str  # display name in the report
    spec: str  # the item as typed
    options: OptimizationSet
    steps: int | None = None  # per-set override of --steps
    repeats: int | None = None  # per-set override of --repeats

    @property
    def slug(self) -> str:
        return _slug(self.name) or "set"


def split_sets(text: str) -> list[str]:
    """Split on commas that are outside quotes and parentheses; strip quotes and blanks."""
    items, buf, quote, depth = [], [], None, 0
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                buf.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
            buf.append(ch)
        elif ch == ")":
            depth = max(0, depth - 1)
            buf.append(ch)
        elif ch == "," and depth == 0:
            items.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise ValidationError(f"unclosed quote {quote} in --sets {text!r}", field="sets")
    items.append("".join(buf).strip())
    return [i for i in items if i]


def _preset_of(term: str) -> tuple[bool, str | None]:
    """(known, preset name or None for defaults) for a term that is not key=value."""
    by_lower = {p.lower(): p for p in PRESETS}
    if term.lower() in by_lower:
        return True, by_lower[term.lower()]
    aliases = preset_aliases()
    if _slug(term) in aliases:
        return True, aliases[_slug(term)]
    return False, None


def parse_set(item: str) -> BenchSet:
    """One item of --sets -> BenchSet. Raises ValidationError naming what was wrong and what is valid."""
    spec = item.strip()
    label = None
    head, sep, rest = spec.partition(":")
    if sep and "=" not in head:
        label, spec = head.strip().strip("\"'") or None, rest.strip()
    terms = [t.strip().strip("\"'").strip() for t in spec.split("+")]
    if not spec or any(not t for t in terms):
        raise ValidationError(f"empty term in set {item!r}; write TERM[+TERM...] (see --help)", field="sets")
    opts, bench, names = OptimizationSet(), {}, []
    for term in terms:
        if "=" in term:
            key, value = (s.strip() for s in term.split("=", 1))
            if key in BENCH_KEYS:
                bench[key] = _bench_int(key, value, item)
            else:
                try:
                    opts = OptimizationSet.from_dict({key: value}, base=opts)
                except ValidationError as e:
                    raise ValidationError(f"in set {item!r}: {e}", field="sets") from None
            names.append(f"{key}={value}")
            continue
        known, name = _preset_of(term)
        if not known:
            raise ValidationError(
                f"unknown set term {term!r} in {item!r}: not a preset ({', '.join(PRESETS)}), an alias "
                f"({', '.join(preset_aliases())}) or key=value", field="sets")
        opts = OptimizationSet.from_dict(PRESETS[name], base=opts) if name else opts
        names.append(name or "defaults")
    return BenchSet(label or " + ".join(names), item.strip(), opts, bench.get("steps"), bench.get("repeats"))


def _bench_int(key: str, value: str, item: str) -> int:
    lo = 1 if key == "steps" else 0
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or n < lo:
        raise ValidationError(f"{key} in set {item!r} must be a whole number >= {lo}, got {value!r}", field="sets")
    return n


def parse_sets(items: list[str]) -> list[BenchSet]:
    """Each string may hold several comma-separated items; display names must be unique."""
    sets = [parse_set(i) for text in items for i in split_sets(text)]
    if not sets:
        raise ValidationError("no sets given; e.g. --sets 'baseline,fast'", field="sets")
    seen = set()
    for s in sets:
        if s.name in seen:
            raise ValidationError(f"two sets are named {s.name!r}; give them different labels ('LABEL: TERMS')",
                                  field="sets")
        seen.add(s.name)
    return sets
