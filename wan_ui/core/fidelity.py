"""How far an option's value takes the output from the reference computation: its fidelity class.

The reference is the model as published, computed plainly: fp32 weights and activations, SDPA attention, UniPC with
the model's own flow shift, every step with its unconditional pass, one untiled VAE decode. Each option value has
one class (docs/FIDELITY.md):

- `exact`: bit-identical to the same set without it, by construction or by a test (offload moves weights only);
- `close`: the same mathematics in other rounding (bf16, other attention kernels, compile, tiled decode), with the
  measured or documented bound in its note;
- `lossy-published`: an approximation at a setting its authors published as quality-preserving; `source` cites them;
- `lossy-ours`: an approximation at a setting nobody published as quality-preserving: ours, or the user's own.

A field declares its classes as data: `ByValue` (one `Fidelity` per allowed value) or `Cases` (the first matching
case, for numbers and for values whose class depends on other options, e.g. a cache threshold on the cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

CLASSES = ("exact", "close", "lossy-published", "lossy-ours")  # from the reference outward
LOSSY = ("lossy-published", "lossy-ours")
TAGS = {"exact": "exact", "close": "close", "lossy-published": "published", "lossy-ours": "ours"}


@dataclass(frozen=True)
class Fidelity:
    """One option value's class."""
    cls: str  # one of CLASSES
    what: str  # the lever at this value, short: "MagCache", "bf16 transformer"; "{value}" is filled in
    note: str = ""  # the bound (close) or what is lost (lossy), and where the figure comes from
    source: str = ""  # the citation: a paper / repository / doc (lossy-published), a test or doc with the bound

    def __post_init__(self):
        if self.cls not in CLASSES:
            raise TypeError(f"Fidelity {self.what!r}: class must be one of {CLASSES}, got {self.cls!r}")
        if self.cls == "lossy-published" and not self.source:
            raise TypeError(f"Fidelity {self.what!r}: a published setting needs its source")

    def at(self, value: Any) -> "Fidelity":
        """This class with "{value}" in `what` and `note` filled with the value as a user types it."""
        text = value_text(value)
        return Fidelity(self.cls, self.what.replace("{value}", text), self.note.replace("{value}", text), self.source)

    def label(self) -> str:
        """'lossy (published: arXiv 2506.09045)', 'lossy (ours)', 'close', 'exact': what a widget says."""
        if self.cls == "lossy-published":
            return f"lossy (published: {self.source})"
        return "lossy (ours)" if self.cls == "lossy-ours" else self.cls

    def to_dict(self) -> dict[str, str]:
        return {"class": self.cls, "what": self.what, "note": self.note, "source": self.source}


@dataclass(frozen=True)
class ByValue:
    """A choice field's classes: one per allowed value, in the field's order."""
    table: tuple[tuple[Any, Fidelity], ...]

    def of(self, value: Any, opts: Any = None) -> Fidelity:
        for v, f in self.table:
            if v == value and type(v) is type(value):  # True is no 1
                return f.at(value)
        raise KeyError(f"no fidelity class declared for value {value!r}")

    def rows(self) -> list[tuple[str, Fidelity]]:
        return [(value_text(v), f) for v, f in self.table]


@dataclass(frozen=True)
class Case:
    """`fidelity` where `test(value, opts)` holds; `when` says so in words for the table and the widget."""
    when: str
    test: Callable[[Any, Any], bool]
    fidelity: Fidelity


def always(value, opts) -> bool:
    return True


@dataclass(frozen=True)
class Cases:
    """A number's or a free value's classes: the first case that holds. The last case must be `always`."""
    cases: tuple[Case, ...]

    def __post_init__(self):
        if not self.cases or self.cases[-1].test is not always:
            raise TypeError("Cases: the last case must hold always, so every value has a class")

    def of(self, value: Any, opts: Any = None) -> Fidelity:
        return next(c.fidelity for c in self.cases if c.test(value, opts)).at(value)

    def rows(self) -> list[tuple[str, Fidelity]]:
        return [(c.when, c.fidelity) for c in self.cases]


def value_text(value: Any) -> str:
    """A value as typed: 0.5, 4, true, '3,1,1'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def worst(classes) -> str:
    """The class furthest from the reference; "exact" for none."""
    return max(classes, key=CLASSES.index, default="exact")
