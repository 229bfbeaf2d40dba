"""`--report x.html`: one self-contained page (no network, images embedded as base64 PNG) built from
the results folder's files alone. matplotlib draws the figures with its Agg backend (no display).

The per-layer error profile is the validator's layer differences in network order, on a log scale,
with the tolerance line and the first divergence marked; `validate --report` draws the same picture.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from vrconvert.converter.errors import InputError
from vrconvert.converter.evaluate import store
from vrconvert.converter.evaluate.summary import summarize
from vrconvert.converter.formats.output import atomic_path

TINY = 1e-12  # an exact match (difference 0) is drawn at this floor of the log scale

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
.why { display: inline-block; white-space: normal; text-align: left; min-width: 320px; }
td:first-child, th:first-child { text-align: left; }
.bad { color: #b00020; font-weight: 600; } .good { color: #1b5e20; }
.kv td { text-align: left; } img { max-width: 100%; }
.scroll { max-height: 600px; overflow: auto; border: 1px solid #eee; }
"""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("--report needs matplotlib: pip install 'vrconvert[evaluate]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def histogram(rel_diffs: list[float], tolerance: float) -> str:
    """Relative differences of the videos, on log-spaced bins, with the tolerance marked."""
    import numpy as np

    plt = _pyplot()
    values = np.maximum(np.asarray(rel_diffs, dtype=np.float64), TINY)
    low = min(values.min(), tolerance) / 2
    high = max(values.max(), tolerance) * 2
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.hist(values, bins=np.geomspace(low, high, 50), color="#4c72b0")
    ax.set_xscale("log")
    ax.axvline(tolerance, color="#b00020", linestyle="--", label=f"tolerance {tolerance:g}")
    ax.set_xlabel("max relative logits difference per video (log scale)")
    ax.set_ylabel("videos")
    ax.legend()
    return _png(fig)


def layer_profile(profile: dict) -> str:
    """The validator's per-layer differences as a line in network order: tolerance and first divergence marked."""
    plt = _pyplot()
    layers, tolerance = profile["layers"], profile["tolerance"]
    nonzero = [layer["max_rel_diff"] for layer in layers if layer["max_rel_diff"] > 0]
    floor = min([*nonzero, tolerance]) / 10  # an exact match (0) sits on the floor, not at 1e-300
    rel = [max(layer["max_rel_diff"], floor) for layer in layers]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    ax.plot(range(len(rel)), rel, marker=".", color="#4c72b0", linewidth=1, label="max relative difference")
    ax.set_yscale("log")
    ax.axhline(tolerance, color="#b00020", linestyle="--", label=f"tolerance {tolerance:g}")
    names = [layer["torch_module"] for layer in layers]
    groups = [n.split(".")[0] if n.startswith(("stem", "layer")) else "head" for n in names]
    starts = [i for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    ends = [*starts[1:], len(rel)]
    ax.set_xticks(starts, [""] * len(starts))  # group boundaries: grid lines
    centres = [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)]  # names at the middle: a short
    ax.set_xticks(centres, [groups[i] for i in starts], minor=True)  # stem's never covers layer1's
    ax.tick_params(axis="x", which="minor", length=0)
    ax.grid(axis="x", color="#ddd")
    first = profile.get("first_divergence")
    if first in names:
        i = names.index(first)
        ax.axvline(i, color="#ff8c00", linewidth=1.5)
        ax.annotate(
            f"first divergence: {first}",
            (i, rel[i]),
            xytext=(14, -40),
            textcoords="offset points",
            color="#b05a00",
            arrowprops={"arrowstyle": "->", "color": "#b05a00"},
        )
    ax.set_xlabel("layer records in network order")
    ax.set_ylabel("max |torch - Keras| / max |torch|")
    ax.set_title(f"per-layer error profile on {profile['input']}")
    ax.legend(loc="lower right")
    return _png(fig)


def _fmt(value, spec: str = ".2e") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "same" if value else '<span class="bad">DIFF</span>'
    if isinstance(value, float):
        return format(value, spec)
    return html.escape(str(value))


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def profile_section(profile: dict | None) -> str:
    if not profile:
        return "<p>No per-layer profile (it needs both models and a video that decoded).</p>"
    first = profile.get("first_divergence")
    keras_layer = next((d["keras_layer"] for d in profile["layers"] if d["torch_module"] == first), "?")
    verdict = (
        f'<p class="bad">First diverging layer: <b>{html.escape(first)}</b> '
        f"(torch module; Keras layer {html.escape(keras_layer)}).</p>"
        if first
        else f'<p class="good">No layer exceeds the tolerance {profile["tolerance"]:g}.</p>'
    )
    rows = [
        [
            html.escape(d["torch_module"]),
            html.escape(d["keras_layer"]),
            d["op"],
            _fmt(d["max_abs_diff"]),
            _fmt(d["max_rel_diff"]),
        ]
        for d in profile["layers"]
    ]
    return (
        (
            f"<p>Video {html.escape(profile['video'])}, input {html.escape(profile['input'])}.</p>"
            if profile.get("video")
            else f"<p>Input {html.escape(profile['input'])} (the worst case).</p>"
        )
        + verdict
        + layer_profile(profile)
        + "<details><summary>every layer record</summary><div class=scroll>"
        + _table(["torch module", "Keras layer", "op", "max abs", "max rel"], rows)
        + "</div></details>"
    )


def _page(title: str, body: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>Written {stamp}.</p>{body}</body></html>\n"
    )


def check_target(out: Path) -> None:
    """Refuses a report that could not be written, before any model runs."""
    _pyplot()
    if not Path(out).parent.is_dir():
        raise InputError(f"{Path(out).parent}: no such directory")


def _write(out: Path, text: str) -> None:
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such directory")
    with atomic_path(out, out.suffix or ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")


def _summary_rows(s: dict) -> list[list]:
    rows = [
        ["videos", s["videos"]],
        ["evaluated", s["evaluated"]],
        ["failures", f'<span class="{"bad" if s["failures"] else "good"}">{s["failures"]}</span>'],
    ]
    if s["compared"]:
        rows += [
            [
                "top-1 agreement",
                f"{s['top1_agreement']:.2%} ({s['compared'] - len(s['top1_disagreements'])}/{s['compared']})",
            ],
            ["top-5 agreement", f"{s['top5_agreement']:.2%}"],
            ["relative difference p50 / p99 / max", " / ".join(_fmt(s["rel_diff"][k]) for k in ("p50", "p99", "max"))],
        ]
        if "tolerance" in s:
            rows.append([f"videos beyond tolerance {s['tolerance']:g}", s["beyond_tolerance"]])
    for model, acc in s["accuracy"].items():
        if acc:
            rows.append(
                [f"{model} accuracy top-1 / top-5 ({acc['videos']} labelled)", f"{acc['top1']:.2%} / {acc['top5']:.2%}"]
            )
    return [[html.escape(k), v if isinstance(v, str) else _fmt(v)] for k, v in rows]


def evaluation_page(folder: str | Path, out: str | Path, tolerance: float) -> None:
    """The report of the run in `folder`: summary, histogram, worst layer profile, every video."""
    folder = Path(folder)
    _pyplot()  # a missing extra fails before any work
    s = summarize(folder, tolerance)
    records = store.read_records(folder)
    settings = json.loads((folder / store.SETTINGS).read_text()) if (folder / store.SETTINGS).exists() else {}
    profile_file = folder / store.LAYERS
    profile = json.loads(profile_file.read_text()) if profile_file.exists() else None
    models = " vs ".join(html.escape(str(settings.get(k))) for k in ("torch_file", "keras_file") if settings.get(k))
    body = [f"<p>{models}; {settings.get('clips', '?')} clip(s) of {settings.get('frames', '?')} frames per video.</p>"]
    body.append("<h2>Summary</h2>" + _table(["", ""], _summary_rows(s), "kv"))
    paired = [r for r in records if r.get("max_rel_diff") is not None]
    if paired:
        body.append("<h2>Relative differences</h2>" + histogram([r["max_rel_diff"] for r in paired], tolerance))
        worst = s["worst"][0]["key"] if s["worst"] else None
        body.append(f"<h2>Per-layer error profile of the worst video ({html.escape(str(worst))})</h2>")
        body.append(profile_section(profile))
    rows = []
    for r in sorted(records, key=lambda r: (r["ok"], -(r.get("max_rel_diff") or 0.0), r["key"])):
        t = (r.get("torch") or {}).get("top") or [{}]
        k = (r.get("keras") or {}).get("top") or [{}]
        rows.append(
            [
                html.escape(r["key"]),
                _fmt(r.get("label")),
                _fmt(t[0].get("name") or t[0].get("index")),
                _fmt(k[0].get("name") or k[0].get("index")),
                _fmt(r.get("top1_agree")),
                _fmt(r.get("top5_agree")),
                _fmt(r.get("max_rel_diff")),
                _fmt(r.get("cosine"), ".9f"),
                "" if r["ok"] else f'<span class="bad why">{html.escape(r["error"] or "")}</span>',
            ]
        )
    body.append(
        f"<h2>Every video ({len(records)})</h2><div class=scroll>"
        + _table(
            ["video", "label", "torch top-1", "Keras top-1", "top-1", "top-5", "max rel", "cosine", "failure"], rows
        )
        + "</div>"
    )
    _write(Path(out), _page("vrconvert evaluate", "".join(body)))


def validation_page(report: dict, profile: dict | None, out: str | Path) -> None:
    """`validate --report`: the validator's cases and the same per-layer picture."""
    _pyplot()
    rows = [
        [
            html.escape(c["input"]),
            _fmt(c["max_abs_diff"]),
            _fmt(c["max_rel_diff"]),
            _fmt(c["cosine"], ".9f"),
            _fmt(c["top1_agree"]),
            _fmt(c["top5_agree"]),
        ]
        for c in report["cases"]
    ]
    verdict = '<p class="good">parity PASS</p>' if report["passed"] else '<p class="bad">parity FAIL</p>'
    body = (
        f"<p>{html.escape(str(report.get('torch_file')))} vs {html.escape(str(report.get('keras_file')))}: "
        f"{html.escape(report['arch'])}, {report['num_classes']} classes, tolerance {report['tolerance']:g}.</p>"
        + verdict
        + _table(["input", "max abs", "max rel", "cosine", "top-1", "top-5"], rows)
        + "<h2>Per-layer error profile</h2>"
        + profile_section(profile)
    )
    _write(Path(out), _page("vrconvert validate", body))
