"""One description of a bounded value (`FieldSpec`) and one check of it, for requests, options and the trainer.

A dataclass declares each field's spec once, in its field metadata (`spec_field`); `specs_of(cls)` reads them back
with the name filled in. `FieldSpec.check(value)` turns what a CLI, a widget or a JSON file carries (text, ints,
floats) into the field's type and raises `ValidationError(message, field=name)` naming the field and what it
allows. The same spec builds the CLI flag (`add_argument`) and the widget's range (`widget_range`), so a range is
written in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import numbers
import re
import reprlib
import sys
from dataclasses import MISSING, dataclass, field
from typing import Any

from wan_ui.core.errors import ValidationError

KINDS = ("int", "float", "bool", "str", "choice")
_TRUE = ("true", "1", "on", "yes")
_FALSE = ("false", "0", "off", "no")
_NOT_A_NUMBER = object()  # _number's answer for text, bools, None, lists, NaN/inf for a whole-number field
_FRACTION = object()  # _number's answer for 2.5 given to a whole-number field
# How a message quotes a refused value: its repr, long text, numbers and lists cut in the middle (a 10,000-digit
# "t,h,w" or a megabyte list from a settings file would otherwise be the whole message).
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxlong = _QUOTE.maxother = 60


@dataclass(frozen=True)
class FieldSpec:
    name: str = ""  # the field it checks; "" in a declaration, filled in by specs_of
    kind: str = ""  # int | float | bool | str | choice (text from `choices`); "" = from the declared default
    bounds: tuple | None = None  # (lo, hi) for numbers, inclusive unless `exclusive`
    exclusive: bool = False  # True: lo < value < hi (a learning rate of 0 or 1 trains nothing useful)
    choices: tuple | None = None  # the allowed values, of the field's type
    pattern: str | None = None  # regular expression a text value must match in full
    multiple_of: int | None = None  # whole numbers: also a multiple of this (sizes: VAE stride 8 x patch 2 = 16)
    max_length: int | None = None  # text: at most this many characters
    optional: bool = False  # None is allowed (and means "the default chosen elsewhere")
    help: str = ""  # one line: the CLI's help and the widget's info
    unit: str = ""  # what the number counts (pixels, steps), said after the range
    # True: every refusal states the whole rule ("rank must be a whole number in [1, 256], got 0"), the Train tab's
    # wording; False: it says which part failed ("num_inference_steps must be in [1, 200], got 0")
    whole_rule: bool = False

    def __post_init__(self):
        if self.kind and self.kind not in KINDS:
            raise TypeError(f"FieldSpec {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("int", "float") and self.bounds is None and self.choices is None:
            raise TypeError(f"FieldSpec {self.name!r}: a number needs bounds or choices (huge values are refused)")
        if self.kind == "choice" and not self.choices:
            raise TypeError(f"FieldSpec {self.name!r}: kind 'choice' needs choices")

    # ---- what the messages say ---------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """How a message names the field."""
        return self.name

    def bounds_text(self) -> str:
        lo, hi = self.bounds
        return f"({lo}, {hi})" if self.exclusive else f"[{lo}, {hi}]"

    def allowed(self, exact: bool = True) -> str:
        """What the field takes, as a message says it: 'a whole number in [1, 256]', 'one of [...]'.
        exact=False says 'a number' for whole numbers too (a request's wording for text that is no number)."""
        if self.choices is not None and self.kind != "bool":
            return f"one of {list(self.choices)}"
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("str", "choice"):
            return f"text of at most {self.max_length} characters" if self.max_length else "text"
        if self.kind == "int" and exact:
            what = f"a multiple of {self.multiple_of}" if self.multiple_of else "a whole number"
        else:
            what = "a number"
        return f"{what} in {self.bounds_text()}" + (f" {self.unit}" if self.unit else "")

    def _error(self, message: str) -> ValidationError:
        return ValidationError(f"{self.label} {message}", field=self.name)

    # ---- the check --------------------------------------------------------------------------------------
    def check(self, value: Any) -> Any:
        """`value` (text, a number, a bool) -> the field's type, or ValidationError naming the field and what it
        allows. Bools are no numbers and numbers no bools; NaN, inf and huge values are refused."""
        if value is None:
            if self.optional:
                return None
            raise self._error(f"must be {self.allowed()}, got None" if self.whole_rule
                              else f"is empty; enter {self.allowed(exact=False)}")
        if self.kind in ("int", "float"):
            return self._check_number(value)
        if self.kind == "bool":
            v = _to_bool(value)
            if v is None:
                raise self._error(f"must be bool (true or false), got {_shown(value)}")
        elif not isinstance(value, str):
            raise self._error(f"must be {self.allowed()}, got {_shown(value)}")
        else:
            v = value
            if self.max_length is not None and len(v) > self.max_length:
                raise self._error(f"must be at most {self.max_length} characters, got {len(v)}")
            if self.pattern is not None and not re.fullmatch(self.pattern, v):
                raise self._error(f"has the wrong form ({self.help}), got {_shown(value)}")
        if self.choices is not None and v not in self.choices:
            raise self._error(f"must be one of {list(self.choices)}, got {_shown(value)}")
        return v

    def _check_number(self, value: Any) -> int | float:
        v = self._number(value)
        if self.choices is not None:
            if v is _NOT_A_NUMBER or v is _FRACTION or v not in self.choices:
                raise self._error(f"must be one of {list(self.choices)}, got {_shown(value)}")
            return v
        rule = f"must be {self.allowed()}, got {_shown(value)}"
        if v is _NOT_A_NUMBER:
            raise self._error(rule if self.whole_rule
                              else f"must be {self.allowed(exact=False)}, got {_shown(value)}")
        if v is _FRACTION:
            raise self._error(rule if self.whole_rule else f"must be a whole number in {self.bounds_text()}, "
                                                           f"got {_shown(value)}")
        lo, hi = self.bounds
        inside = lo < v < hi if self.exclusive else lo <= v <= hi  # False for NaN
        if not inside:
            raise self._error(rule if self.whole_rule
                              else f"must be in {self.bounds_text()}, got {_shown(value)}")
        if self.multiple_of and v % self.multiple_of:
            m = self.multiple_of
            nearest = min(max(round(v / m) * m, math.ceil(lo / m) * m), math.floor(hi / m) * m)
            raise self._error(f"must be a multiple of {m} in {self.bounds_text()}, got {v} (nearest: {nearest})")
        return v

    def _number(self, value: Any):
        """An int (kind int) or float (kind float), _FRACTION, or _NOT_A_NUMBER."""
        if isinstance(value, bool):
            return _NOT_A_NUMBER
        if isinstance(value, str):  # CLI flags, text boxes, `--set key=value`
            text = value.strip()
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    return _NOT_A_NUMBER
        try:
            if isinstance(value, numbers.Integral):
                return int(value) if self.kind == "int" else float(value)
            if isinstance(value, numbers.Real):
                v = float(value)
                if self.kind == "float":
                    return v  # NaN and inf fail the range check
                if not math.isfinite(v):
                    return _NOT_A_NUMBER
                return int(v) if v.is_integer() else _FRACTION
        except OverflowError:  # float(10**400)
            return _NOT_A_NUMBER
        return _NOT_A_NUMBER


def _shown(value: Any) -> str:
    try:
        return _QUOTE.repr(value)
    except ValueError:  # an int past Python's 4,300-digit str conversion limit
        return f"a number of more than {sys.get_int_max_str_digits()} digits"


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
    return None


# ---- declaring specs in a dataclass -------------------------------------------------------------------------
def spec_field(default: Any = MISSING, spec: FieldSpec | None = None, **spec_args) -> Any:
    """A dataclass field carrying its spec: `rank: int = spec_field(32, bounds=(1, 256), help="LoRA rank")`."""
    return field(default=default, metadata={"spec": spec if spec is not None else FieldSpec(**spec_args)})


@functools.lru_cache(maxsize=None)
def _specs_of(cls: type) -> tuple[tuple[str, FieldSpec], ...]:
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is None:
            continue
        kind = spec.kind or _kind_of(f.default, spec)
        out.append((f.name, dataclasses.replace(spec, name=f.name, kind=kind)))
    return tuple(out)


def specs_of(cls: type) -> dict[str, FieldSpec]:
    """{field name: its spec} for the fields of dataclass `cls` that declare one, in field order."""
    return dict(_specs_of(cls))


def _kind_of(default: Any, spec: FieldSpec) -> str:
    for t, kind in ((bool, "bool"), (int, "int"), (float, "float")):  # bool first: a bool is an int
        if isinstance(default, t):
            return kind
    if isinstance(default, str):
        return "choice" if spec.choices is not None else "str"
    raise TypeError(f"spec_field with default {default!r}: give the kind")


# ---- CLI flags and widget ranges ----------------------------------------------------------------------------
def cli_help(spec: FieldSpec, default: Any = None) -> str:
    """The help line of a flag: the spec's help, what it allows, the default ('%' escaped for argparse)."""
    extra = []
    if spec.kind in ("int", "float") and spec.choices is None:
        extra.append(spec.allowed())
    if default is not None and spec.kind in ("int", "float", "choice"):  # text defaults are said in the help
        extra.append(f"default {default}")
    text = spec.help + (f" ({'; '.join(extra)})" if extra else "")
    return text.replace("%", "%%")


def add_argument(parser, spec: FieldSpec, flag: str | None = None, *, default: Any = None, **overrides):
    """Add the flag of `spec` to an argparse parser (or group): the value goes through `spec.check`, so argparse
    refuses what the field refuses and names the flag ("argument --rank: rank must be ..."). A bool field is a
    switch: --name turns on a default-False field, --no-name turns off a default-True one."""
    if spec.kind == "bool":
        on = not default
        flag = flag or "--" + ("" if on else "no-") + spec.name.replace("_", "-")
        kwargs = {"action": "store_true" if on else "store_false", "default": bool(default)}
    else:
        flag = flag or "--" + spec.name.replace("_", "-")
        kwargs = {"type": _argparse_type(spec), "default": default}
        if spec.kind == "choice":
            kwargs["choices"] = spec.choices
        else:  # --frames FRAMES, not the field's NUM_FRAMES
            kwargs["metavar"] = flag.lstrip("-").replace("-", "_").upper()
    kwargs.update(dest=spec.name, help=cli_help(spec, default))
    kwargs.update(overrides)
    return parser.add_argument(flag, **kwargs)


def _argparse_type(spec: FieldSpec):
    def parse(text: str):
        try:
            return spec.check(text)
        except ValidationError as e:  # argparse prefixes the flag: "argument --rank: rank must be ..."
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = spec.name  # argparse's own messages name the type by it
    return parse


def widget_range(spec: FieldSpec, step: float | None = None) -> dict[str, Any]:
    """minimum / maximum / step of a number widget (gr.Number, gr.Slider keywords) for a bounded field. Whole
    numbers step by `multiple_of` (or 1); a float widget needs its `step` given (how fine a user tunes it)."""
    if spec.kind not in ("int", "float") or spec.bounds is None:
        raise TypeError(f"{spec.name}: a widget range needs a bounded number, not {spec.kind}")
    if step is None:
        if spec.kind == "float":
            raise TypeError(f"{spec.name}: give the step of a float widget")
        step = spec.multiple_of or 1
    lo, hi = spec.bounds
    return {"minimum": lo, "maximum": hi, "step": step}
