"""The schemas of the results folder's files: what a line of `results.jsonl`, `run.json` and
`layers.json` may hold. The folder is input like any other (a resumed run and the report read it back,
and anyone may have edited it), so every value is checked for type and bounds here, and anything else
is a one-line InputError (exit 2), never a KeyError deep inside a summary.

A schema is a dict field -> (types, required); a nested record is a schema of its own. Fields the
schema does not know are dropped, so nothing unchecked reaches the summary or the report.
"""

from __future__ import annotations

import json
import math

from vrconvert.converter import limits
from vrconvert.converter.errors import InputError

NUMBER = (int, float)
TEXT = (str,)
NONE = (type(None),)
COUNT_MOST = 1 << 31  # an index, a count of clips or a label index


def _number(value, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, NUMBER):
        raise InputError(f"{where} is {limits.brief(value)}, not a number")
    return value


def _integer(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -COUNT_MOST <= value <= COUNT_MOST:
        raise InputError(f"{where} is {limits.brief(value)}, not an integer")
    return value


def _text(value, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where} is {limits.brief(value)}, not text")
    return value


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{where} is {limits.brief(value)}, not true or false")
    return value


def _optional(check):
    def run(value, where):
        return None if value is None else check(value, where)

    return run


def _list(check, most: int, least: int = 0):
    def run(value, where):
        if not isinstance(value, list) or not least <= len(value) <= most:
            raise InputError(f"{where} is {limits.brief(value)}, not a list of {least} to {most} items")
        return [check(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return run


def _record(schema: dict):
    def run(value, where):
        if not isinstance(value, dict):
            raise InputError(f"{where} is {limits.brief(value)}, not an object")
        out = {}
        for name, (check, required) in schema.items():
            if name not in value:
                if required:
                    raise InputError(f"{where} has no {name!r}")
                continue
            out[name] = check(value[name], f"{where}.{name}")
        return out

    return run


def _seconds(value, where):
    if not isinstance(value, dict) or len(value) > 16:
        raise InputError(f"{where} is {limits.brief(value)}, not an object of timings")
    return {_text(k, where): _number(v, f"{where}.{k}") for k, v in value.items()}


TOP = _record({"index": (_integer, True), "name": (_optional(_text), False), "probability": (_number, True)})
MODEL = _optional(_record({"top": (_list(TOP, 1000, least=1), True)}))
RECORD = _record(
    {
        "key": (_text, True),
        "ok": (_flag, True),
        "video": (_optional(_text), False),
        "label": (_optional(_text), False),
        "label_index": (_optional(_integer), False),
        "error": (_optional(_text), False),
        "worker": (_optional(_text), False),
        "seconds": (_seconds, False),
        "clips": (_list(_text, 100_000), False),
        "torch": (MODEL, False),
        "keras": (MODEL, False),
        "max_abs_diff": (_optional(_number), False),
        "max_rel_diff": (_optional(_number), False),
        "cosine": (_optional(_number), False),
        "nonfinite": (_optional(_integer), False),
        "clips_top1_agree": (_optional(_flag), False),
        "clips_top5_agree": (_optional(_flag), False),
        "top1_agree": (_optional(_flag), False),
        "top5_agree": (_optional(_flag), False),
        "worst_clip": (_optional(_integer), False),
    }
)
SETTINGS = _record(
    {
        "torch_file": (_optional(_text), False),
        "keras_file": (_optional(_text), False),
        "clips": (_integer, False),
        "frames": (_integer, False),
        "size": (_list(_integer, 2, least=2), False),
        "keras_backend": (_text, False),
    }
)
LAYER = _record(
    {
        "torch_module": (_text, True),
        "keras_layer": (_text, True),
        "op": (_text, True),
        "max_abs_diff": (_number, True),
        "max_rel_diff": (_number, True),
    }
)
PROFILE = _record(
    {
        "video": (_optional(_text), False),
        "input": (_text, True),
        "tolerance": (_number, True),
        "layers": (_list(LAYER, limits.H5_OBJECTS), True),
        "first_divergence": (_optional(_text), False),
    }
)


def _json(data: bytes, where: str):
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InputError(f"{where}: not JSON ({limits.brief(str(exc))})") from None


def record(line: bytes, where: str) -> dict:
    """One line of results.jsonl, checked against the record schema."""
    out = RECORD(_json(line, where), where)
    if not out["ok"] and out.get("error") is None:
        out["error"] = "failed (no reason recorded)"
    if out.get("max_rel_diff") is not None and not math.isfinite(out["max_rel_diff"]):
        out["nonfinite"] = out.get("nonfinite") or 1  # NaN or Inf compares as a failure, never agreement
    return out


def settings(data: bytes, where: str) -> dict:
    return SETTINGS(_json(data, where), where)


def profile(data: bytes, where: str) -> dict:
    return PROFILE(_json(data, where), where)
