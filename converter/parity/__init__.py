"""Do two models compute the same function? The figures (`compare`), where the models run (`runtime`)
and the validator with layer-level localisation (`validate`).

`parity.Case`, `parity.compare` and friends are re-exported so callers can say `parity.compare(...)`."""

from vrconvert.converter.parity.compare import DEFAULT_TOLERANCE, Case, compare, nonfinite, random_clip

__all__ = ["DEFAULT_TOLERANCE", "Case", "compare", "nonfinite", "random_clip"]
