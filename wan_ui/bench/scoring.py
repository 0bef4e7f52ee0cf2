"""Quality columns of the benchmark: optional, lazy, scored after timing.

The baseline set (the first) saves its video in OUT/frames/ so every other set, in this process or a child
process, is compared with it (across a Ray cluster the video travels through Ray's object store to each worker's
own OUT/frames/: `reference_payload`, `install_reference`). A set is compared with it when the baseline ran the
set's reference request: the request the set would run without a distilled LoRA's steps and guidance
(`config.request_for(..., distilled=False)`), so a 4-step CFG-1 set is measured against the workload's own steps
and CFG, the video the user would have got; each row's `metrics.reference_steps` / `reference_guidance` say which
request that was.
The metric models (lpips, open_clip) load only when a row is scored (`core.quality` imports them lazily).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from wan_ui.bench.config import BenchConfig, log, request_for
from wan_ui.bench.rows import BenchRow
from wan_ui.bench.sets import parse_set
from wan_ui.core.models import resolve_model
from wan_ui.core.quality import QualityScorer, score_result

QUALITY_KEYS = ("clip_score", "lpips_vs_baseline", "psnr_vs_baseline", "ssim_vs_baseline", "lpips_temporal")
VS_BASELINE_KEYS = ("lpips_vs_baseline", "psnr_vs_baseline", "ssim_vs_baseline")
REFERENCE_KEYS = ("reference_steps", "reference_guidance")  # which request the *_vs_baseline reference ran


class QualityPlan:
    """Whether quality columns are scored, and the baseline video they compare against (saved by the first set
    in --out/frames/ so child processes share it)."""

    def __init__(self, cfg: BenchConfig, random_weights: bool, device: str):
        self.cfg = cfg
        self.folder = cfg.out / "frames"
        self.device = device
        self._scorer = None
        self.random_weights = random_weights
        if random_weights:
            self.enabled, self.reason = False, "random weights"
        elif cfg.quality is False:
            self.enabled, self.reason = False, "quality off (--no-quality)"
        else:
            self.enabled, self.reason = True, None

    def scorer(self):
        if self._scorer is None:  # the metric models load here, once per process
            self._scorer = QualityScorer(device=self.device)
        return self._scorer

    def _reference(self, request: dict):
        meta, frames = self.folder / "baseline.json", self.folder / "baseline.npy"
        if not frames.is_file():
            return None, "n/a (no baseline video)"
        if json.loads(meta.read_text()) != request:
            return None, "n/a (baseline ran another request)"
        return np.load(frames), None

    def reference_payload(self) -> tuple[np.ndarray, dict] | None:
        """(the baseline's frames, the request they ran) as saved by the baseline set, or None when it saved none:
        what a Ray worker ships back so sets on other machines are scored against it (ray_runner.py)."""
        meta, frames = self.folder / "baseline.json", self.folder / "baseline.npy"
        if not (meta.is_file() and frames.is_file()):
            return None
        return np.load(frames), json.loads(meta.read_text())

    def install_reference(self, frames: np.ndarray, request: dict) -> None:
        """Save a baseline video made elsewhere (another process or machine) where `score` looks for it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        np.save(self.folder / "baseline.npy", frames)
        (self.folder / "baseline.json").write_text(json.dumps(request))

    def reference_request(self, row: BenchRow):
        """The request whose baseline video this row is compared with (`config.request_for`, distilled=False);
        the set is rebuilt from its spec, as a child process does."""
        return request_for(self.cfg, parse_set(row.set.spec), distilled=False)[0]

    def score(self, row: BenchRow, result) -> None:
        """Score the steady-state record's video; the baseline set saves its frames for the others."""
        row.quality.enabled = self.enabled
        if not self.enabled:
            return
        try:
            is_base = row.set.is_baseline
            asked = self.reference_request(row)
            ref, why = (None, "n/a (is the baseline)") if is_base else self._reference(asked.to_dict())
            scored = dataclasses.replace(result, metrics=dataclasses.replace(row.metrics))
            score_result(scored, scorer=self.scorer(), reference=ref, reference_request=asked)
            for k in QUALITY_KEYS + REFERENCE_KEYS + ("quality_note",):
                setattr(row.metrics, k, getattr(scored.metrics, k))
            if why:
                row.quality.na.update({k: why for k in VS_BASELINE_KEYS})
            if is_base:
                self.install_reference(result.frames, row.request)
        except Exception as e:  # a metric model that cannot load must not lose the timing
            row.quality.error = f"{type(e).__name__}: {e}"[:240]
            log(f"quality scoring failed for {row.set.name!r}: {row.quality.error}")

    def mark_na(self, row: BenchRow) -> None:
        """Say why each empty quality cell is empty (the report prints the reason instead of a number)."""
        q = row.quality
        q.enabled = self.enabled and row.status == "ok"
        q.reason = self.reason
        why = ("n/a (random weights)" if self.random_weights else f"n/a ({self.reason})" if self.reason
               else "n/a (quality failed)" if q.error else "n/a")
        m = row.metrics
        note = (m.quality_note if m else None) or ""
        unavailable = [part.split(" unavailable:")[0] for part in note.split("; ")
                       if " unavailable:" in part]  # "clip_score, lpips_temporal unavailable: <reason>"
        for k in QUALITY_KEYS:
            if m is None or getattr(m, k) is None:
                missing = any(k in names.split(", ") for names in unavailable)
                q.na.setdefault(k, "n/a (metric model unavailable: see notes)" if missing else why)


def make_quality(cfg: BenchConfig, device: str) -> QualityPlan:
    return QualityPlan(cfg, resolve_model(cfg.model, device == "cuda").random_weights, device)
