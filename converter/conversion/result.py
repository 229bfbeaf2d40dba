"""What a conversion did, for the CLI's human and JSON output."""

from __future__ import annotations

from dataclasses import dataclass, field

from vrconvert.converter.parity import validate as validator


@dataclass(kw_only=True)
class Result:
    """What a conversion did, for the CLI's human and JSON output."""

    src: str
    dst: str
    arch: str
    num_classes: int
    num_params: int
    source_format: str
    source_dtypes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hash_check: str | None = None
    seconds: float = 0.0
    parity: validator.Report | None = None  # None when the check was skipped (or not applicable)

    @property
    def passed(self) -> bool | None:
        return None if self.parity is None else self.parity.passed

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "parity"}
        report = self.parity.as_dict() if self.parity else {"passed": None}
        out.update(
            {k: v for k, v in report.items() if k not in ("arch", "num_classes", "torch_file", "keras_file", "seconds")}
        )
        if self.parity:
            out["parity_seconds"] = self.parity.seconds
        return out
