"""Which modules an import loads, read in a fresh interpreter (this process has loaded everything already).
`loaded_by` waits for the answer; `Probe` starts the interpreter now and is read later (tests/background.py), so a
module can start it with its first test and read it in the test that asserts on it."""

from __future__ import annotations

import json
import sys

from background import Started


class Probe:
    """The `candidates` in sys.modules after `import <imports>` (comma-separated) in a new Python process,
    started now; `loaded()` waits for the list."""

    def __init__(self, imports: str, candidates: tuple[str, ...], timeout_s: float = 120):
        code = (f"import sys, json, {imports}; "
                f"print(json.dumps([m for m in {list(candidates)!r} if m in sys.modules]))")
        self.started = Started([sys.executable, "-c", code], timeout_s)

    def loaded(self) -> list[str]:
        proc = self.started.result()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        self.started.close()


def loaded_by(imports: str, candidates: tuple[str, ...]) -> list[str]:
    """The `candidates` in sys.modules after `import <imports>` (comma-separated) in a new Python process."""
    probe = Probe(imports, candidates)
    try:
        return probe.loaded()
    finally:
        probe.close()
