"""Figures of a results.json with matplotlib (Agg): accuracy heatmap, forgetting curves, IF rates, comparisons.

Each figure has a builder returning a :class:`matplotlib.figure.Figure` (no pyplot, no global state) and an
``*_svg`` shortcut returning an inline SVG string for HTML pages (the report and the leaderboard use these).
:func:`save_figure` writes the PNG, SVG and PDF files papers need.

Choices:

- Text stays text in SVG (``svg.fonttype = 'none'``) so the printed values can be found in the page, copied
  and searched; PDF embeds TrueType (``pdf.fonttype = 42``) so the text stays editable in papers.
- Re-running gives identical bytes: a fixed ``svg.hashsalt``, no date in the SVG/PDF metadata, fixed fonts;
  ids in inline SVGs are prefixed so several figures can share one HTML page.
- Heatmap colour: each column is scaled by ``max(100, column max)`` so percent columns use 0–100 and a CIDEr
  x100 column (which can exceed 100) uses its own range; printed values are always the stored ones.
- Names from results files are untrusted: ``$`` is escaped (mathtext) and the SVG writer escapes ``< > &``.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..formats.results import as_results
from ..errors import CvitError
from ..files import atomic_write_bytes
from .formatting import escape_mpl, fmt_value
from ..schedule import ZERO_SHOT, Stage
from .runs import (
    Run,
    column_scales,
    diagonal_task,
    make_runs,
    upstream_row_labels,
)

FIGURE_FORMATS = ("png", "svg", "pdf")
COMPARISON_KEYS = ("AP", "MAP", "BWT", "MIF")
PNG_DPI = 150

STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "cvit-bench",
    "pdf.fonttype": 42,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.unicode_minus": False,  # ASCII minus: the page text then matches the tables
    "path.simplify": False,
}
# Tableau-10: distinguishable, colour-blind tolerant; cycled by index so colours are stable across figures.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")
DIAGONAL_COLOR = "#d62728"

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """The report's rcParams, applied only inside the block (other users of matplotlib are not affected)."""
    with matplotlib.rc_context(STYLE):
        yield


def _styled(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with figure_style():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_runs(results_or_runs: Sequence[dict[str, Any] | Run] | dict[str, Any] | Run) -> list[Run]:
    if isinstance(results_or_runs, (dict, Run)):
        results_or_runs = [results_or_runs]
    plain = [(None, r) for r in results_or_runs if isinstance(r, dict)]
    if len(plain) == len(results_or_runs):
        return make_runs(plain)
    if len(plain) == 0:
        return list(results_or_runs)  # type: ignore[arg-type]
    raise TypeError("pass either results dicts or Run records, not a mix")


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _task_tick(task: str, scale: str) -> str:
    return escape_mpl(task) + ("\n(CIDEr x100)" if scale == "cider_x100" else "")


def _stage_tick(label: str, tasks: list[str]) -> str:
    if Stage.try_parse(label) == ZERO_SHOT:
        return "0: zero-shot"
    learned = diagonal_task(label, tasks)
    return f"{escape_mpl(label)}: {escape_mpl(learned)}" if learned else escape_mpl(label)


# ---------------------------------------------------------------------------------------------------- heatmap
@_styled
def heatmap_figure(results: dict[str, Any], title: str | None = None) -> Figure:
    """Accuracy matrix: rows = after stage (zero-shot row first when present), columns = tasks.

    Every non-null cell prints its value (2 decimals); null cells stay blank (not drawn); the diagonal (the
    score right after learning the task) is outlined.
    """
    m = as_results(results).matrix
    tasks, stages = list(m.tasks), list(m.stages)
    values = np.array([[_nan(v) for v in row] for row in m.values], dtype=float).reshape(len(stages), len(tasks))
    scales = column_scales(results)
    with np.errstate(all="ignore"):
        col_max = np.array([np.nanmax(values[:, j]) if np.isfinite(values[:, j]).any() else 0.0
                            for j in range(len(tasks))])
    norm = values / np.maximum(100.0, col_max)[None, :]
    fig = _new_figure(1.0 * len(tasks) + 2.0, 0.38 * len(stages) + 1.5)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["YlGnBu"]
    ax.pcolormesh(np.ma.masked_invalid(norm), cmap=cmap, vmin=0.0, vmax=1.0, edgecolors="white", linewidth=0.5)
    for i, label in enumerate(stages):
        for j in range(len(tasks)):
            if np.isfinite(values[i, j]):
                dark = norm[i, j] > 0.55
                ax.text(j + 0.5, i + 0.5, fmt_value(values[i, j]), ha="center", va="center",
                        fontsize=7, color="white" if dark else "black")
        learned = diagonal_task(label, tasks)
        if learned is not None:
            ax.add_patch(Rectangle((tasks.index(learned), i), 1, 1, fill=False, edgecolor=DIAGONAL_COLOR,
                                   linewidth=1.6, zorder=3))
    ax.set_xlim(0, len(tasks))
    ax.set_ylim(len(stages), 0)
    ax.set_xticks([j + 0.5 for j in range(len(tasks))],
                  [_task_tick(t, scales[t]) for t in tasks], rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks([i + 0.5 for i in range(len(stages))], [_stage_tick(s, tasks) for s in stages])
    ax.tick_params(length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after stage")
    ax.set_title(escape_mpl(title) if title else "accuracy matrix (diagonal outlined)")
    return fig


@_styled
def similarity_figure(record: dict[str, Any], title: str | None = None) -> Figure:
    """He et al.'s task-similarity matrix (``results.json`` ``task_similarity``): tasks × tasks, values 0–1."""
    tasks = list(record["tasks"])
    values = np.array(record["matrix"], dtype=float).reshape(len(tasks), len(tasks))
    fig = _new_figure(0.9 * len(tasks) + 2.2, 0.7 * len(tasks) + 1.4)
    ax = fig.add_subplot()
    ax.pcolormesh(values, cmap=matplotlib.colormaps["magma"], vmin=0.0, vmax=1.0, edgecolors="white", linewidth=0.5)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            ax.text(j + 0.5, i + 0.5, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if values[i, j] > 0.6 else "white")
    ticks = [escape_mpl(t) for t in tasks]
    ax.set_xlim(0, len(tasks))
    ax.set_ylim(len(tasks), 0)
    ax.set_xticks([j + 0.5 for j in range(len(tasks))], ticks, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks([i + 0.5 for i in range(len(tasks))], ticks)
    ax.tick_params(length=0)
    ax.set_title(escape_mpl(title) if title else "task similarity (image × instruction × output)")
    return fig


# -------------------------------------------------------------------------------------------------- forgetting
def forgetting_series(results: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    """``{task: (stages, scores)}``: each task's score from the stage it was learned to the last stage.

    Task ``i`` (1-based) is learned at stage ``i``; null cells become NaN (a gap in the line).
    """
    m = as_results(results).matrix
    tasks = list(m.tasks)
    rows = dict(m.rows())
    upstream = sorted(st.index for st in map(Stage.try_parse, upstream_row_labels(results)) if st and st.is_upstream)
    series = {}
    for i, task in enumerate(tasks, start=1):
        xs = [t for t in upstream if t >= i]
        if xs:
            series[task] = (xs, [_nan(rows[str(t)][i - 1]) for t in xs])
    return series


def _stage_axis(ax: Any, stages: list[int]) -> None:
    if stages:
        ax.set_xticks(stages, [str(s) for s in stages])
        ax.set_xlim(min(stages) - 0.3, max(stages) + 0.3)
    ax.set_xlabel("after stage")


@_styled
def forgetting_figure(results: dict[str, Any], title: str | None = None) -> Figure:
    """One run: one line per task, its score across the stages from the stage it was learned."""
    series = forgetting_series(results)
    fig = _new_figure(5.2, 3.0)
    ax = fig.add_subplot()
    all_stages: set[int] = set()
    for k, (task, (xs, ys)) in enumerate(series.items()):
        ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, color=PALETTE[k % len(PALETTE)],
                label=escape_mpl(task))
        all_stages.update(xs)
    _stage_axis(ax, sorted(all_stages))
    ax.set_ylabel("score (percent or CIDEr x100)")
    ax.set_title(escape_mpl(title) if title else "forgetting curves")
    if series:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    return fig


def curve_runs(runs: Sequence[Run]) -> list[Run]:
    """The runs that have a forgetting curve: at least two upstream rows."""
    return [r for r in runs if len(upstream_row_labels(r.results)) >= 2]


@_styled
def forgetting_overlay_figure(runs: Sequence[Run | dict[str, Any]], title: str | None = None) -> Figure:
    """Several runs: one panel per task, one line per run (same colour per run in every panel).

    Runs with fewer than two upstream rows (a Multitask or Zero-shot reference) have no curve and are left out.
    """
    runs = curve_runs(_as_runs(runs))
    tasks: list[str] = []
    for run in runs:
        tasks.extend(t for t in run.record.matrix.tasks if t not in tasks)
    ncols = min(3, max(1, len(tasks)))
    nrows = max(1, math.ceil(len(tasks) / ncols))
    fig = _new_figure(2.6 * ncols + 1.6, 2.1 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    per_run = [forgetting_series(run.results) for run in runs]
    for idx, task in enumerate(tasks):
        ax = axes[idx // ncols][idx % ncols]
        stages: set[int] = set()
        for k, (run, series) in enumerate(zip(runs, per_run)):
            if task in series:
                xs, ys = series[task]
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, color=PALETTE[k % len(PALETTE)],
                        label=escape_mpl(run.label))
                stages.update(xs)
        _stage_axis(ax, sorted(stages))
        ax.set_title(escape_mpl(task))
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    for idx in range(len(tasks), nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle(escape_mpl(title) if title else "forgetting curves by task")
    return fig


# ---------------------------------------------------------------------------------------------------- IF rates
def if_rate_bars(results: dict[str, Any]) -> list[tuple[str, float | None, bool]]:
    """``[(name, IF rate, is_downstream)]``: upstream tasks on the final row, then downstream entries.

    Upstream rates come from ``if_rates`` (same shape as the matrix), else from the final row's cells.
    """
    record = as_results(results)
    label = record.final_stage
    tasks = list(record.matrix.tasks)
    rates: dict[str, float | None] = {t: None for t in tasks}
    if_rates = record.if_rates
    if if_rates is not None and label in if_rates.stages:
        rates.update({t: v for t, v in if_rates.row_by_task(label).items() if t in rates})
    cells = results.get("cells") or {}
    for t in tasks:
        if rates[t] is None:
            rates[t] = (cells.get(f"{label}/{t}") or {}).get("if_rate")
    bars = [(t, rates[t], False) for t in tasks]
    for name, entry in (results.get("downstream") or {}).items():
        if isinstance(entry, dict) and "if_rate" in entry:
            bars.append((name, entry.get("if_rate"), True))
    return bars


@_styled
def if_rates_figure(results: dict[str, Any], title: str | None = None) -> Figure:
    """Instruction-following rate per task on the final model (downstream tasks hatched); values printed."""
    bars = if_rate_bars(results)
    fig = _new_figure(0.7 * len(bars) + 2.0, 2.8)
    ax = fig.add_subplot()
    for x, (name, rate, downstream) in enumerate(bars):
        if rate is None:
            continue
        ax.bar(x, rate, width=0.7, color=PALETTE[1] if downstream else PALETTE[0],
               hatch="//" if downstream else None, edgecolor="white" if not downstream else "#444444",
               linewidth=0.5)
        ax.text(x, rate + 1.5, fmt_value(rate), ha="center", va="bottom", fontsize=6.5)
    ax.set_xticks(range(len(bars)), [escape_mpl(n) + (" (down)" if d else "") for n, _, d in bars],
                  rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, len(bars) - 0.4)
    ax.set_ylim(0, 110)
    ax.set_ylabel("IF rate (%)")
    ax.set_title(escape_mpl(title) if title else "instruction following on the final model")
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    return fig


# -------------------------------------------------------------------------------------------------- comparison
@_styled
def comparison_figure(runs: Sequence[Run | dict[str, Any]], title: str | None = None,
                      keys: Sequence[str] = COMPARISON_KEYS) -> Figure:
    """AP, MAP, BWT and MIF side by side: one group of bars per aggregate, one bar per run; values printed."""
    runs = _as_runs(runs)
    n = max(1, len(runs))
    width = 0.8 / n
    fig = _new_figure(1.4 * len(keys) + 0.45 * n + 2.2, 3.0)
    ax = fig.add_subplot()
    for k, run in enumerate(runs):
        summary = run.results.get("summary") or {}
        for g, key in enumerate(keys):
            value = summary.get(key)
            x = g - 0.4 + width * (k + 0.5)
            if value is None:
                continue
            ax.bar(x, value, width=width * 0.92, color=PALETTE[k % len(PALETTE)], label=escape_mpl(run.label))
            ax.text(x, value, fmt_value(value), ha="center", va="bottom" if value >= 0 else "top",
                    fontsize=5.5, rotation=90 if n > 3 else 0)
    ax.axhline(0, color="#333333", linewidth=0.6)
    ax.set_xticks(range(len(keys)), list(keys))
    ax.set_ylabel("value")
    ax.set_title(escape_mpl(title) if title else "comparison of methods")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    return fig


# ------------------------------------------------------------------------------------------------ serialising
@_styled
def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure in ``fmt`` (png/svg/pdf) with no date metadata, so identical inputs give identical bytes."""
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=PNG_DPI, metadata=metadata[fmt])
    return buf.getvalue()


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Write ``stem.png``, ``stem.svg`` and ``stem.pdf`` (atomically); return the paths in that order."""
    check_formats(formats)
    stem = Path(stem)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write_bytes(path, figure_bytes(fig, fmt))
        paths.append(path)
    return paths


def export_figure(fig: Figure, stem: str | Path, prefix: str, label: str | None = None,
                  formats: Sequence[str] = FIGURE_FORMATS) -> tuple[list[Path], str]:
    """:func:`save_figure` plus the inline SVG (made from the same bytes as ``stem.svg`` when it is written)."""
    check_formats(formats)
    stem = Path(stem)
    paths = []
    svg = figure_bytes(fig, "svg")
    for fmt in FIGURE_FORMATS:
        if fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt}")
            atomic_write_bytes(path, svg if fmt == "svg" else figure_bytes(fig, fmt))
            paths.append(path)
    return paths, inline_svg(svg, prefix, label=label)


def check_formats(formats: Sequence[str]) -> None:
    unknown = sorted(set(formats) - set(FIGURE_FORMATS))
    if unknown:
        raise CvitError(f"unknown figure format(s) {', '.join(unknown)}; valid: {', '.join(FIGURE_FORMATS)}")


_ID_ATTR = re.compile(r'\bid="([^"]+)"')
_ID_REF = re.compile(r'(url\(#|href="#)([^")]+)')


def inline_svg(svg: str | bytes, prefix: str, css_class: str = "cvit-figure", label: str | None = None) -> str:
    """Make a standalone SVG embeddable in HTML: drop the XML prolog and metadata, prefix ids and references
    (several figures share one page), add a class and an accessible label (escaped)."""
    text = svg.decode("utf-8") if isinstance(svg, bytes) else svg
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)
    text = _ID_ATTR.sub(lambda mt: f'id="{safe}-{mt.group(1)}"', text)
    text = _ID_REF.sub(lambda mt: f"{mt.group(1)}{safe}-{mt.group(2)}", text)
    attrs = f' class="{css_class}" role="img"'
    if label:
        attrs += ' aria-label="' + (label.replace("&", "&amp;").replace('"', "&quot;")
                                    .replace("<", "&lt;").replace(">", "&gt;")) + '"'
    return text.replace("<svg", "<svg" + attrs, 1).strip() + "\n"


def figure_svg(fig: Figure, prefix: str, label: str | None = None) -> str:
    return inline_svg(figure_bytes(fig, "svg"), prefix, label=label)


def heatmap_svg(results: dict[str, Any], prefix: str = "heatmap", title: str | None = None) -> str:
    """Inline SVG of :func:`heatmap_figure` (for HTML pages: the report, a leaderboard entry)."""
    return figure_svg(heatmap_figure(results, title), prefix, label="accuracy matrix heatmap")


def forgetting_svg(results: dict[str, Any], prefix: str = "forgetting", title: str | None = None) -> str:
    """Inline SVG of :func:`forgetting_figure`."""
    return figure_svg(forgetting_figure(results, title), prefix, label="forgetting curves")


def if_rates_svg(results: dict[str, Any], prefix: str = "if-rates", title: str | None = None) -> str:
    """Inline SVG of :func:`if_rates_figure`."""
    return figure_svg(if_rates_figure(results, title), prefix, label="instruction-following rates")


def comparison_svg(runs: Sequence[Run | dict[str, Any]], prefix: str = "comparison") -> str:
    """Inline SVG of :func:`comparison_figure`."""
    return figure_svg(comparison_figure(runs), prefix, label="comparison of methods")


def forgetting_overlay_svg(runs: Sequence[Run | dict[str, Any]], prefix: str = "forgetting-overlay") -> str:
    """Inline SVG of :func:`forgetting_overlay_figure`."""
    return figure_svg(forgetting_overlay_figure(runs), prefix, label="forgetting curves of several runs")
