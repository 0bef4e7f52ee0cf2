"""Per-pipeline bookkeeping of the run-time families, with typed undo records (no module-level state).

Each run-time family's `apply_x(pipe, opts, request)` returns its own undo record — a small dataclass defined in
the family's module (`LoraUndo`, `SchedulerUndo`, `AttentionUndo`, `SparseUndo`, `CacheUndo`, `CfgBatchUndo`,
`VaeUndo`) holding exactly what `remove_x(pipe, undo)` needs to put the pipeline back — or None when its options
leave the pipeline as it was. An apply that fails part-way undoes its own partial work before raising, so a
record exists only for a family that is fully applied.

The registry keeps one `Applied` entry per family in `PipelineState.runtime`, in the order the families were
applied; the parallel layer (`wan_ui.parallel`) keeps its record in `PipelineState.parallel`. Code that needs a
live part of a family (the CFG-batch hook, the sparse context) asks for it by record type:
`state_of(pipe).undo(SparseUndo)`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar


class Undo:
    """Base of every undo record: what one family changed on a pipeline and how to restore it."""


U = TypeVar("U", bound=Undo)


@dataclass(frozen=True)
class RuntimeFamily:
    """One entry of the registry's RUNTIME list."""

    name: str  # reported in the build info's `reapplied` list
    apply: Callable[..., Undo | None]  # (pipe, opts, request) -> the family's undo record, or None: nothing changed
    remove: Callable[..., None]  # (pipe, undo record) -> None: the pipeline as it was before apply
    signature: Callable[..., Hashable]  # (opts, request) -> the values that, when they change, re-apply the family


@dataclass(frozen=True)
class Applied:
    """One run-time family as it stands on a pipeline."""

    family: RuntimeFamily  # the registry entry that applied it
    signature: Hashable  # the option values it was applied with; a change re-applies the family
    undo: Undo | None  # the family's undo record; None: its options changed nothing


@dataclass
class PipelineState:
    runtime: list[Applied] = field(default_factory=list)  # in the registry's order, a prefix of RUNTIME
    parallel: Undo | None = None  # the parallel layer's record (wan_ui.parallel), outermost on the transformer

    def undo(self, kind: type[U]) -> U | None:
        """The live record of type `kind`, or None when no family holds one."""
        records = [a.undo for a in self.runtime] + [self.parallel]
        return next((r for r in records if isinstance(r, kind)), None)


def state_of(pipe) -> PipelineState:
    st = getattr(pipe, "_wan_ui_state", None)
    if st is None:
        st = PipelineState()
        pipe._wan_ui_state = st
    return st


@contextmanager
def undo_on_error(pipe, remove, undo: U):
    """`with undo_on_error(pipe, remove_x, undo):` around an apply step that fills `undo` as it goes: if the step
    raises, `remove_x(pipe, undo)` takes back what was done so far and the error propagates."""
    try:
        yield undo
    except BaseException:
        remove(pipe, undo)
        raise
