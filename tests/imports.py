"""Which modules an import loads, read in a fresh interpreter (this process has loaded everything already)."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_by(imports: str, candidates: tuple[str, ...]) -> list[str]:
    """The `candidates` in sys.modules after `import <imports>` (comma-separated) in a new Python process."""
    code = f"import sys, json, {imports}; print(json.dumps([m for m in {list(candidates)!r} if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
