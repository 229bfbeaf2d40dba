"""The check for lower-precision artifacts (int8, bf16): the artifact against the float32 torch model on
held-out real clips, through the validator's one comparison. A lower-precision artifact cannot meet
float32's relative tolerance, so the verdict is the logits' cosine against a bound (`--min-cosine`), with
the largest relative error and top-1/top-5 agreement reported beside it.

Which (format, precision) pairs exist is one table: each other pair is refused in one line that says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vrconvert.converter import parity
from vrconvert.converter.errors import InputError

PRECISIONS = ("f32", "bf16", "int8")
# The default bounds on the logits' cosine against torch float32, per precision (README, "int8 and bf16").
DEFAULT_MIN_COSINE = {"int8": 0.999, "bf16": 0.9999}
# (format, precision) -> why it is refused; a pair not listed is supported (f32 everywhere).
REFUSED = {
    ("saved_model", "int8"): "--int8 is for OpenVINO (.xml) and ONNX (.onnx), not a SavedModel",
    ("saved_model", "bf16"): "--precision bf16 is for OpenVINO (.xml), not a SavedModel",
    ("litert", "bf16"): "--precision bf16 is for OpenVINO (.xml); LiteRT computes CONV_3D in float32",
    ("onnx", "bf16"): (
        "--precision bf16 is for OpenVINO (.xml): onnxruntime's CPU provider has no bfloat16 Conv kernel "
        "(a bfloat16 Conv fails with NOT_IMPLEMENTED)"
    ),
}


def check_supported(fmt: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if (fmt, precision) in REFUSED:
        raise InputError(REFUSED[(fmt, precision)])


def openvino_bf16_missing() -> str | None:
    """Why this CPU cannot check a bf16 artifact, or None: OpenVINO reads a bf16 request back as f32 on a
    CPU without bf16 units (its OPTIMIZATION_CAPABILITIES lack BF16), so a check here would measure f32."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in capabilities:
        return None
    return (
        "--precision bf16: this CPU has no bf16 units (OpenVINO's CPU capabilities: "
        f"{', '.join(capabilities)}), so OpenVINO would compute in f32 and the bf16 check cannot be made here; "
        "export on a CPU with avx512_bf16 or AMX"
    )


@dataclass(frozen=True, kw_only=True)
class Quality:
    """The check's figures: one case per held-out clip, the bound and what was calibrated and kept."""

    precision: str
    runtime: str
    min_cosine: float
    cases: list[parity.Case]
    calibration: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    tool: str = ""

    @property
    def worst(self) -> parity.Case:
        return min(self.cases, key=lambda c: c.cosine)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.worst.cosine >= self.min_cosine

    def summary(self) -> dict:
        n = len(self.cases)
        return {
            "clips": n,
            "min_cosine": self.worst.cosine,
            "max_rel_diff": max(c.max_rel_diff for c in self.cases),
            "top1_agreement": sum(c.top1_agree for c in self.cases) / n,
            "top5_agreement": sum(c.top5_agree for c in self.cases) / n,
            "torch_seconds": float(np.median([c.torch_seconds for c in self.cases])),
            "artifact_seconds": float(np.median([c.keras_seconds for c in self.cases])),
        }

    def as_dict(self) -> dict:
        return {
            "precision": self.precision,
            "runtime": self.runtime,
            "bound": self.min_cosine,
            "passed": self.passed,
            "summary": self.summary(),
            "calibration": self.calibration,
            "kept_float": self.kept_float,
            "tool": self.tool,
            "cases": [c.as_dict() for c in self.cases],
        }


def check(variant, torch_model, runner, clips: dict[str, np.ndarray], settings, **details) -> Quality:
    """Runs the artifact and torch float32 on `clips` (torch layout, or uint8 frames) and grades it."""
    from vrconvert.converter.parity import validate as validator

    report = validator.check_runner(variant, torch_model, runner, clips, settings, np.inf)
    return Quality(runtime=runner.runtime, cases=report.cases, **details)


def table(quality: Quality) -> list[str]:
    """The check as printed lines: one row per held-out clip, then the summary and the verdict."""
    width = max(len(c.input) for c in quality.cases)
    lines = [f"{'held-out clip':<{width}}  {'cosine':>10}  max rel  top-1  top-5  torch s  artifact s"]
    for c in quality.cases:
        lines.append(
            f"{c.input:<{width}}  {c.cosine:10.6f}  {c.max_rel_diff:7.1e}  {'same' if c.top1_agree else 'DIFF':>5}  "
            f"{'same' if c.top5_agree else 'DIFF':>5}  {c.torch_seconds:7.2f}  {c.keras_seconds:10.2f}"
        )
    s = quality.summary()
    lines.append(
        f"{quality.precision} vs torch float32 on {s['clips']} held-out clip(s): min cosine {s['min_cosine']:.6f}, "
        f"max relative error {s['max_rel_diff']:.1e}, top-1 agreement {100 * s['top1_agreement']:.0f}%, "
        f"top-5 agreement {100 * s['top5_agreement']:.0f}%"
    )
    verdict = "PASS" if quality.passed else "FAIL"
    sign = ">=" if quality.passed else "<"
    lines.append(f"quality {verdict}: min cosine {s['min_cosine']:.6f} {sign} bound {quality.min_cosine:g}")
    return lines
