"""The figures of a run, computed from its results file alone (never from a run's memory).

A video whose logits held NaN or Inf (`nonfinite`) counts as a failure beyond tolerance and a
top-1 disagreement; the relative-difference percentiles are over the finite ones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vrconvert.converter.evaluate.store import read_records

WORST = 10
MODELS = ("torch", "keras")


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def accuracy(records: list[dict], model: str) -> dict | None:
    """Top-1 and top-5 accuracy of one model over the labelled videos it classified."""
    labelled = [r for r in records if r.get(model) and r.get("label_index") is not None]
    if not labelled:
        return None
    top1 = sum(r[model]["top"][0]["index"] == r["label_index"] for r in labelled)
    top5 = sum(r["label_index"] in {t["index"] for t in r[model]["top"]} for r in labelled)
    return {"videos": len(labelled), "top1": top1 / len(labelled), "top5": top5 / len(labelled)}


def _nonfinite(record: dict) -> bool:
    return bool(record.get("nonfinite")) or not math.isfinite(record["max_rel_diff"])


def summarize(folder: str | Path, tolerance: float | None = None, worst: int = WORST) -> dict:
    """Videos, failures, agreement, accuracies, relative-difference percentiles, the worst videos."""
    records = read_records(folder)
    ok = [r for r in records if r["ok"]]
    paired = [r for r in ok if r.get("max_rel_diff") is not None]
    bad = [r for r in paired if _nonfinite(r)]
    finite = [r for r in paired if not _nonfinite(r)]
    rel = np.array([r["max_rel_diff"] for r in finite], dtype=np.float64)
    agree1 = [r for r in paired if r.get("top1_agree") is True and not _nonfinite(r)]
    agree5 = [r for r in paired if r.get("top5_agree") is True and not _nonfinite(r)]
    agreed = {id(r) for r in agree1}
    unlabelled = [r["key"] for r in records if r.get("label") is not None and r.get("label_index") is None]
    out = {
        "videos": len(records),
        "evaluated": len(ok),
        "failures": len(records) - len(ok),
        "failed": [{"key": r["key"], "error": r.get("error")} for r in records if not r["ok"]],
        "labelled": sum(r.get("label_index") is not None for r in ok),
        "unknown_labels": unlabelled,
        "compared": len(paired),
        "nonfinite": len(bad),
        "top1_agreement": _rate(len(agree1), len(paired)),
        "top5_agreement": _rate(len(agree5), len(paired)),
        "top1_disagreements": [r["key"] for r in paired if id(r) not in agreed],
        "accuracy": {m: accuracy(ok, m) for m in MODELS if any(r.get(m) for r in ok)},
        "rel_diff": {
            "p50": float(np.percentile(rel, 50)) if rel.size else None,
            "p99": float(np.percentile(rel, 99)) if rel.size else None,
            "max": float(rel.max()) if rel.size else None,
        },
        "worst": [
            {k: r.get(k) for k in ("key", "max_rel_diff", "max_abs_diff", "cosine", "top1_agree", "top5_agree")}
            for r in sorted(finite, key=lambda r: -r["max_rel_diff"])[:worst]
        ],
    }
    if tolerance is not None:
        out["tolerance"] = tolerance
        out["beyond_tolerance"] = int((rel > tolerance).sum()) + len(bad)
    return out
