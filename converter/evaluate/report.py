"""`--report x.html`: one self-contained page (no network, images embedded as base64 PNG) built from
the results folder's files alone. matplotlib draws the figures with its Agg backend (no display).

The page is one Jinja2 template with autoescape on: every value from the folder (video names, labels,
errors, layer names) is escaped by default, so a tampered results file or a forgotten field cannot
inject markup. Only the figures, made here, are marked safe.

The per-layer error profile is the validator's layer differences in network order, on a log scale,
with the tolerance line and the first divergence marked; `validate --report` draws the same picture.
"""

from __future__ import annotations

import base64
import io
import math
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

TEMPLATE = """\
{%- macro cell(v) -%}
{%- if v is none -%}–{%- elif v is sameas true -%}same{%- elif v is sameas false -%}<span class="bad">DIFF</span>
{%- elif v is float -%}{{ v | sci }}{%- else -%}{{ v }}{%- endif -%}
{%- endmacro -%}
{%- macro profile_section(profile) -%}
{%- if not profile -%}<p>No per-layer profile (it needs both models and a video that decoded).</p>
{%- else -%}
{%- if profile.video %}<p>Video {{ profile.video }}, input {{ profile.input }}.</p>
{%- else %}<p>Input {{ profile.input }} (the worst case).</p>{% endif -%}
{%- if profile.first_divergence %}<p class="bad">First diverging layer: <b>{{ profile.first_divergence }}</b> (torch module; Keras layer {{ profile.keras_layer }}).</p>
{%- else %}<p class="good">No layer exceeds the tolerance {{ profile.tolerance | g }}.</p>{% endif -%}
{{ profile.figure }}<details><summary>every layer record</summary><div class=scroll><table class="">
<tr><th>torch module</th><th>Keras layer</th><th>op</th><th>max abs</th><th>max rel</th></tr>
{%- for d in profile.layers %}<tr><td>{{ d.torch_module }}</td><td>{{ d.keras_layer }}</td><td>{{ d.op }}</td><td>{{ cell(d.max_abs_diff) }}</td><td>{{ cell(d.max_rel_diff) }}</td></tr>{% endfor -%}
</table></div></details>
{%- endif -%}
{%- endmacro -%}
<!doctype html><html lang=en><head><meta charset=utf-8><title>{{ title }}</title><style>{{ style }}</style></head>
<body><h1>{{ title }}</h1><p>Written {{ stamp }}.</p>
{%- if kind == "evaluate" %}
<p>{{ models | join(" vs ") }}; {{ settings.clips }} clip(s) of {{ settings.frames }} frames per video.</p>
<h2>Summary</h2><table class="kv"><tr><th></th><th></th></tr>
{%- for name, value, cls in summary %}<tr><td>{{ name }}</td><td>{% if cls %}<span class="{{ cls }}">{{ cell(value) }}</span>{% else %}{{ cell(value) }}{% endif %}</td></tr>{% endfor -%}
</table>
{%- if histogram %}
<h2>Relative differences</h2>{{ histogram }}
<h2>Per-layer error profile of the worst video ({{ worst }})</h2>{{ profile_section(profile) }}
{%- endif %}
<h2>Every video ({{ videos | length }})</h2><div class=scroll><table class="">
<tr><th>video</th><th>label</th><th>torch top-1</th><th>Keras top-1</th><th>top-1</th><th>top-5</th><th>max rel</th><th>cosine</th><th>failure</th></tr>
{%- for v in videos %}<tr><td>{{ v.key }}</td><td>{{ cell(v.label) }}</td><td>{{ cell(v.torch) }}</td><td>{{ cell(v.keras) }}</td><td>{{ cell(v.top1) }}</td><td>{{ cell(v.top5) }}</td><td>{{ cell(v.rel) }}</td><td>{% if v.cosine is float %}{{ "%.9f" | format(v.cosine) }}{% else %}{{ cell(v.cosine) }}{% endif %}</td><td>{% if v.error is not none %}<span class="bad why">{{ v.error }}</span>{% endif %}</td></tr>{% endfor -%}
</table></div>
{%- elif kind == "finetune" %}
<p>{{ run.arch }} from {{ run.weights }}: {{ run.classes | length }} classes ({{ run.classes | join(", ") }}), {{ run.train_clips }} training and {{ run.val_clips }} validation clips of {{ run.frames }} frames at {{ run.size }}x{{ run.size }}.</p>
<h2>Curves</h2>{{ figure }}
<h2>Every epoch</h2><table class=""><tr><th>epoch</th><th>loss</th><th>accuracy</th><th>val loss</th><th>val accuracy</th><th>seconds</th></tr>
{%- for e in epochs %}<tr><td>{{ e.epoch }}</td><td>{{ cell(e.loss) }}</td><td>{{ cell(e.accuracy) }}</td><td>{{ cell(e.val_loss) }}</td><td>{{ cell(e.val_accuracy) }}</td><td>{{ "%.1f" | format(e.seconds) }}</td></tr>{% endfor -%}
</table>
{%- else %}
<p>{{ report.torch_file }} vs {{ report.keras_file }}: {{ report.arch }}, {{ report.num_classes }} classes, tolerance {{ report.tolerance | g }}.</p>
{%- if report.passed %}<p class="good">parity PASS</p>{% else %}<p class="bad">parity FAIL{% if nonfinite %}: {{ nonfinite }} NaN/Inf logits{% endif %}</p>{% endif %}
<table class=""><tr><th>input</th><th>max abs</th><th>max rel</th><th>cosine</th><th>top-1</th><th>top-5</th><th>NaN/Inf</th></tr>
{%- for c in report.cases %}<tr><td>{{ c.input }}</td><td>{{ cell(c.max_abs_diff) }}</td><td>{{ cell(c.max_rel_diff) }}</td><td>{% if c.cosine is float %}{{ "%.9f" | format(c.cosine) }}{% else %}{{ cell(c.cosine) }}{% endif %}</td><td>{{ cell(c.top1_agree) }}</td><td>{{ cell(c.top5_agree) }}</td><td>{{ c.nonfinite or 0 }}</td></tr>{% endfor -%}
</table>
<h2>Per-layer error profile</h2>{{ profile_section(profile) }}
{%- endif %}
</body></html>
"""


def _environment():
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError:
        raise InputError("--report needs Jinja2: pip install 'vrconvert[evaluate]'") from None
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["sci"] = lambda v: format(v, ".2e")
    env.filters["g"] = lambda v: format(v, "g")
    return env, Markup


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("--report needs matplotlib: pip install 'vrconvert[evaluate]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig):
    """A figure as an <img> with the PNG inline: the only markup the page trusts (made here, base64 only)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    _, markup = _environment()
    return markup(f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">')


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, int | float) and math.isfinite(v)]


def histogram(rel_diffs: list[float], tolerance: float):
    """Relative differences of the videos, on log-spaced bins, with the tolerance marked (NaN and Inf,
    failures in any case, are counted in the summary, not drawn)."""
    import numpy as np

    plt = _pyplot()
    values = np.maximum(np.asarray(_finite(rel_diffs) or [0.0], dtype=np.float64), TINY)
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


def layer_profile(profile: dict):
    """The validator's per-layer differences as a line in network order: tolerance and first divergence marked."""
    plt = _pyplot()
    layers, tolerance = profile["layers"], profile["tolerance"]
    nonzero = [v for v in _finite(layer["max_rel_diff"] for layer in layers) if v > 0]
    floor = min([*nonzero, tolerance]) / 10  # an exact match (0) sits on the floor, not at 1e-300
    ceiling = max([*nonzero, tolerance]) * 10  # NaN or Inf is drawn at the top
    rel = [max(v, floor) if math.isfinite(v) else ceiling for v in (float(layer["max_rel_diff"]) for layer in layers)]
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


def _profile(profile: dict | None) -> dict | None:
    """The template's view of a per-layer profile: the figure drawn, the first divergence's Keras layer."""
    if not profile:
        return None
    first = profile.get("first_divergence")
    keras_layer = next((d["keras_layer"] for d in profile["layers"] if d["torch_module"] == first), "?")
    return {
        "video": profile.get("video"),
        "input": profile["input"],
        "tolerance": profile["tolerance"],
        "first_divergence": first,
        "keras_layer": keras_layer,
        "layers": profile["layers"],
        "figure": layer_profile(profile) if profile["layers"] else "",
    }


def _render(**values) -> str:
    env, _ = _environment()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return env.from_string(TEMPLATE).render(style=STYLE, stamp=stamp, **values)


def check_target(out: Path) -> None:
    """Refuses a report that could not be written, before any model runs."""
    _pyplot()
    _environment()
    if not Path(out).parent.is_dir():
        raise InputError(f"{Path(out).parent}: no such directory")


def _write(out: Path, text: str) -> None:
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such directory")
    with atomic_path(out, out.suffix or ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")


def _summary_rows(s: dict) -> list[tuple]:
    rows = [
        ("videos", s["videos"], None),
        ("evaluated", s["evaluated"], None),
        ("failures", s["failures"], "bad" if s["failures"] else "good"),
    ]
    if s["compared"]:
        agreed = s["compared"] - len(s["top1_disagreements"])
        rows += [
            ("top-1 agreement", f"{s['top1_agreement']:.2%} ({agreed}/{s['compared']})", None),
            ("top-5 agreement", f"{s['top5_agreement']:.2%}", None),
            (
                "relative difference p50 / p99 / max",
                " / ".join(
                    "–" if s["rel_diff"][k] is None else f"{s['rel_diff'][k]:.2e}" for k in ("p50", "p99", "max")
                ),
                None,
            ),
        ]
        if s.get("nonfinite"):
            rows.append(("videos with NaN/Inf logits", s["nonfinite"], "bad"))
        if "tolerance" in s:
            rows.append((f"videos beyond tolerance {s['tolerance']:g}", s["beyond_tolerance"], None))
    for model, acc in s["accuracy"].items():
        if acc:
            rows.append(
                (
                    f"{model} accuracy top-1 / top-5 ({acc['videos']} labelled)",
                    f"{acc['top1']:.2%} / {acc['top5']:.2%}",
                    None,
                )
            )
    return rows


def _video_rows(records: list[dict]) -> list[dict]:
    def top1(r, model):
        top = (r.get(model) or {}).get("top") or [{}]
        return top[0].get("name") or top[0].get("index")

    def order(r):
        rel = r.get("max_rel_diff") or 0.0
        return (r["ok"], -(rel if math.isfinite(rel) else math.inf), r["key"])

    return [
        {
            "key": r["key"],
            "label": r.get("label"),
            "torch": top1(r, "torch"),
            "keras": top1(r, "keras"),
            "top1": r.get("top1_agree"),
            "top5": r.get("top5_agree"),
            "rel": r.get("max_rel_diff"),
            "cosine": r.get("cosine"),
            "error": None if r["ok"] else (r.get("error") or ""),
        }
        for r in sorted(records, key=order)
    ]


def evaluation_page(folder: str | Path, out: str | Path, tolerance: float) -> None:
    """The report of the run in `folder`: summary, histogram, worst layer profile, every video."""
    folder = Path(folder)
    _pyplot()  # a missing extra fails before any work
    s = summarize(folder, tolerance)
    records = store.read_records(folder)
    settings = store.read_settings(folder) or {}
    paired = [r for r in records if r.get("max_rel_diff") is not None]
    text = _render(
        kind="evaluate",
        title="vrconvert evaluate",
        models=[str(settings[k]) for k in ("torch_file", "keras_file") if settings.get(k)],
        settings={"clips": settings.get("clips", "?"), "frames": settings.get("frames", "?")},
        summary=_summary_rows(s),
        histogram=histogram([r["max_rel_diff"] for r in paired], tolerance) if paired else None,
        worst=s["worst"][0]["key"] if s["worst"] else None,
        profile=_profile(store.read_profile(folder)) if paired else None,
        videos=_video_rows(records),
    )
    _write(Path(out), text)


def validation_page(report: dict, profile: dict | None, out: str | Path) -> None:
    """`validate --report`: the validator's cases and the same per-layer picture."""
    _pyplot()
    nonfinite = sum(c.get("nonfinite") or 0 for c in report["cases"])
    _write(
        Path(out),
        _render(
            kind="validate", title="vrconvert validate", report=report, profile=_profile(profile), nonfinite=nonfinite
        ),
    )


def training_curves(epochs: list[dict]):
    """Loss and accuracy per epoch, training and validation, side by side."""
    plt = _pyplot()
    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(11, 3.6))
    numbers = [e["epoch"] for e in epochs]
    for ax, key in ((loss, "loss"), (accuracy, "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = [e.get(prefix + key) for e in epochs]
            if any(v is not None for v in values):
                ax.plot(numbers, [math.nan if v is None else v for v in values], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    accuracy.set_ylim(-0.02, 1.02)
    return _png(fig)


def training_page(run: dict, epochs: list[dict], out: str | Path) -> None:
    """`vrconvert finetune`'s page: the run's settings, the curves and the per-epoch figures."""
    _write(
        Path(out),
        _render(kind="finetune", title="vrconvert finetune", run=run, epochs=epochs, figure=training_curves(epochs)),
    )
