"""The HTML robustness report: one self-contained page (inline CSS and PNG charts).

``render_html`` fills ``templates/report.html.j2`` (jinja2, autoescaped) from a report
document (``harness.robustness``) and draws its charts with matplotlib (Agg, no
display): throughput and RSS over time per trial, latency percentiles, throughput per
target and, over several runs, the trends. Charts thin their series so a report of
hundreds of trials stays a small file. Never prints; needs no network to view.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.records import TrialRecord
from harness.robustness import LoadedRun, cell_text

_TEMPLATES = Path(__file__).resolve().parent / "templates"
#: trials drawn per target in the over-time charts (the rest are left out, said so)
MAX_LINES = 40
#: points per drawn series
MAX_POINTS = 120
#: targets drawn in the over-time charts
MAX_PANELS = 16
#: width and height of one panel of the over-time charts, inches
PANEL_INCHES = (3.2, 2.2)


def _png(fig: Any, *, fit: bool = True) -> str:
    """A matplotlib figure as a data: URI (and the figure closed). ``fit`` crops the
    image to what was drawn (an extra drawing pass); a figure laid out with fixed
    margins (``_grid_margins``) does without."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight" if fit else None)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    step = max(1, math.ceil(len(points) / MAX_POINTS))
    return list(points[::step])


def _rates(series: Sequence[tuple[float, int]]) -> list[tuple[float, float]]:
    """Ops/s over windows of at least a twentieth of the trial (progress lines of several
    workers arrive close together: rates between neighbours would be noise)."""
    if len(series) < 2:
        return []
    window = (series[-1][0] - series[0][0]) / 20
    out = []
    t0, n0 = series[0]
    for t1, n1 in itertools.islice(series, 1, None):
        if t1 - t0 >= window and t1 > t0 and n1 >= n0:
            out.append((t1, (n1 - n0) / (t1 - t0)))
            t0, n0 = t1, n1
    return out


def _grid_margins(fig: Any, rows: int, cols: int) -> None:
    """Fixed margins for a grid of small panels (7-8 pt titles, ticks and labels), in
    inches turned into the figure's fractions: what ``tight_layout`` would find, without
    the drawing passes it and a cropped save take (most of a large report's time)."""
    width, height = fig.get_size_inches()

    def between(gap: float, room: float, n: int) -> float:  # a gap as a share of a panel
        return gap / max((room - (n - 1) * gap) / n, 0.1)

    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width,
                        bottom=0.45 / height, top=1 - 0.3 / height,
                        wspace=between(0.75, width - 0.75, cols),
                        hspace=between(0.75, height - 0.75, rows))


def _over_time(by_target: dict[str, list[TrialRecord]], what: str) -> str | None:
    """Small multiples, one panel per target, one faint line per trial."""
    import matplotlib.pyplot as plt

    panels = []
    for target, records in list(by_target.items())[:MAX_PANELS]:
        lines = []
        for r in records[:MAX_LINES]:
            obs = r.observation
            if what == "rss":
                pts = [(s.t_s, s.rss / (1 << 20)) for s in obs.samples]
                if obs.result and obs.result.peak_rss:  # the driver's own peak, at its end
                    pts.append((obs.wall_s, obs.result.peak_rss / (1 << 20)))
            else:
                pts = [(t, v / 1e6) for t, v in _rates(obs.progress_series)]
            if pts:
                lines.append(_thin(pts))
        if lines:
            panels.append((target, lines, len(records)))
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES[0] * cols,
                                                  PANEL_INCHES[1] * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (target, lines, total) in zip(axes.flat, panels, strict=False):
        for pts in lines:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#3465a4", alpha=0.35,
                    linewidth=0.8, marker="." if len(pts) < 3 else "")
        shown = f" ({len(lines)} of {total})" if total > len(lines) else ""
        ax.set_title(f"{target}{shown}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("MiB" if what == "rss" else "M ops/s", fontsize=7)
    _grid_margins(fig, rows, cols)
    return _png(fig, fit=False)


# Legends go right of the plot: loc="best" searches the data for a free spot, slowly
# for big series, and matplotlib warns when that search took over a second (it did on a
# loaded machine, and the warning is an error in the tests)
_OUTSIDE: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}


def _latency_chart(doc: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    lat = doc["op_latency_ns"]
    if not lat:
        return None
    targets = list(lat)
    keys = [k for k in ("p50", "p99", "p999", "max") if any(k in lat[t] for t in targets)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(targets) + 2), 2.8))
    width = 0.8 / max(1, len(keys))
    for i, k in enumerate(keys):
        ax.bar([x + i * width for x in range(len(targets))],
               [max(lat[t].get(k, 0), 1) for t in targets], width, label=k)
    ax.set_yscale("log")
    ax.set_ylabel("ns per op (median over trials)", fontsize=8)
    ax.set_xticks([x + width * (len(keys) - 1) / 2 for x in range(len(targets))])
    ax.set_xticklabels(targets, rotation=30, ha="right", fontsize=7)
    ax.legend(**_OUTSIDE, fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _throughput_chart(doc: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    data = [(t, v["values"]) for t, v in doc["throughput_ops_per_s"].items() if v.get("values")]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(data) + 2), 2.8))
    ax.boxplot([[x / 1e6 for x in vals] for _, vals in data], showfliers=True)
    ax.set_xticks(range(1, len(data) + 1))
    ax.set_xticklabels([t for t, _ in data], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("M ops/s per trial", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _trend_charts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    trends = doc["trends"]
    n = len(trends["runs"])
    if n < 2:
        return []
    out = []
    labels = [r[-24:] for r in trends["runs"]]
    fig, ax = plt.subplots(figsize=(7, 3))
    for target, series in trends["throughput"].items():
        ax.plot(range(n), [math.nan if v is None else v / 1e6 for v in series], marker="o",
                label=target)
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=6)
    ax.set_ylabel("median M ops/s", fontsize=8)
    ax.legend(**_OUTSIDE, fontsize=6)
    fig.tight_layout()
    out.append(("Throughput per target over runs", _png(fig)))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for row, by_target in sorted(trends["detection"].items()):
        for target, series in by_target.items():
            if any(v is not None and v < 1 for v in series):
                ax.plot(range(n), [math.nan if v is None else v for v in series], marker="o",
                        label=f"{row} @ {target}")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=6)
    ax.set_ylabel("detection rate", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**_OUTSIDE, fontsize=6)
    else:
        ax.text(0.5, 0.5, "every fault detected in every run", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    out.append(("Detection rates below 100% over runs", _png(fig)))
    return out


def render_html(doc: dict[str, Any], runs: Sequence[LoadedRun]) -> str:
    """The report page for ``doc`` (built from ``runs``, whose records give the series)."""
    import matplotlib

    matplotlib.use("Agg")
    import jinja2

    latest = runs[-1] if runs else None
    by_target: dict[str, list[TrialRecord]] = defaultdict(list)
    for r in latest.records if latest else ():
        by_target[r.target].append(r)
    charts = []
    for title, uri in (("Throughput over time, per trial", _over_time(by_target, "ops")),
                       ("RSS over time, per trial", _over_time(by_target, "rss")),
                       ("Throughput per trial, by target", _throughput_chart(doc)),
                       ("Operation latency percentiles", _latency_chart(doc)),
                       *_trend_charts(doc)):
        if uri:
            charts.append({"title": title, "uri": uri})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined)
    env.filters["cell_text"] = cell_text
    return env.get_template("report.html.j2").render(doc=doc, charts=charts)
