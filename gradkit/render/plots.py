"""The pictures of the visual views, drawn by matplotlib from the report's numbers.

Each function takes report data (never a submission's text: labels are the grader's own words
and the assignment's names) and returns one figure as SVG text to inline in a page, or as PNG
bytes (``fmt="png"``) for platforms that want an image file. Output is deterministic: the SVG's
ids are salted per figure (several figures share one page, so their ids must differ), and no
date or software version is written into either format.

matplotlib is imported here, and this module only when an HTML view is asked for.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # never a window, whatever MPLBACKEND says

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from gradkit.report import GradientPicture, TrainingCurve  # noqa: E402

Format = Literal["svg", "png"]

#: the page's colours, so pictures and text agree
INK = "#1f2328"
MUTED = "#57606a"
STUDENT = "#cf222e"
REFERENCE = "#0969da"
GRID = "#d0d7de"
#: cells up to this many get their value written in them
ANNOTATE_UP_TO = 24

_STYLE = {
    "svg.fonttype": "none",  # text stays text: small, selectable, no per-figure glyph ids
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "text.color": INK,
}


def _render(figure: Figure, name: str, fmt: Format) -> str | bytes:
    out = io.BytesIO() if fmt == "png" else io.StringIO()
    with matplotlib.rc_context({**_STYLE, "svg.hashsalt": f"gradkit-{name}"}):
        if fmt == "png":
            figure.savefig(out, format="png", dpi=110, metadata={"Software": None})
        else:
            figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    if fmt == "png":
        return out.getvalue()  # type: ignore[return-value]
    text = out.getvalue()
    # inline in HTML: no XML declaration or DOCTYPE, a title for screen readers
    start = text.index("<svg")
    return text[start:]


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(width, height), layout="constrained")
    # room for a browser's font, which may run wider than the one matplotlib measured
    figure.get_layout_engine().set(w_pad=6 / 72, h_pad=8 / 72)
    return figure


def _axes(width: float, height: float, left: float = 0.62, bottom: float = 0.5,
          right: float = 0.15, top: float = 0.15):
    """A figure with one axes placed by margins in inches: per-student pictures are drawn in
    every grading process, and a layout engine would double what each costs."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(width, height))
        ax = figure.add_axes((left / width, bottom / height, 1 - (left + right) / width,
                              1 - (bottom + top) / height))
    return figure, ax


def _cell_text(value: float) -> str:
    return "0" if value == 0 else f"{value:.3g}"


PANELS = ("expected", "yours", "difference")


def _panels(picture: GradientPicture) -> list[tuple[str, list[list[float]], float, str]]:
    """(title, values, colour limit, colour map) of each panel: expected and yours on one
    scale, their difference on its own."""
    difference = [[a - e for a, e in zip(ra, re)]
                  for ra, re in zip(picture.actual, picture.expected)]
    shared = max(max(abs(v) for r in picture.expected + picture.actual for v in r), 1e-300)
    spread = max(max(abs(v) for r in difference for v in r), 1e-300)
    return [(f"expected {picture.quantity}", picture.expected, shared, "RdBu_r"),
            (f"your {picture.quantity}", picture.actual, shared, "RdBu_r"),
            ("yours - expected", difference, spread, "PuOr_r")]


def _heatmap(ax, picture: GradientPicture, title: str, values: list[list[float]], limit: float,
             cmap: str):
    rows, columns = len(values), len(values[0])
    mesh = ax.pcolormesh(values, cmap=cmap, vmin=-limit, vmax=limit, edgecolors="white",
                         linewidth=0.6)
    ax.set_title(title)
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xticks([c + 0.5 for c in range(columns)], [str(c) for c in range(columns)])
    ax.set_yticks([r + 0.5 for r in range(rows)], [str(r) for r in range(rows)])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    row, column = picture.worst_index
    ax.add_patch(Rectangle((column, row), 1, 1, fill=False, edgecolor=INK, linewidth=2.2))
    if rows * columns <= ANNOTATE_UP_TO:
        for r in range(rows):
            for c in range(columns):
                strong = abs(values[r][c]) > 0.6 * limit
                ax.text(c + 0.5, r + 0.5, _cell_text(values[r][c]), ha="center", va="center",
                        fontsize=7, color="white" if strong else INK)
    return mesh


@dataclass(frozen=True)
class HeatCell:
    value: float
    text: str
    colour: str  # "#rrggbb" from the panel's colour map
    light_text: bool  # the colour is dark: write the number in white
    worst: bool  # the entry that differs most


@dataclass(frozen=True)
class HeatPanel:
    """One heat map as data, for a page to lay out as a grid of coloured cells."""

    name: str  # expected, yours, difference
    title: str
    cells: list[list[HeatCell]]
    scale: str  # the colour map, as a CSS linear-gradient from -limit to +limit
    limit: str  # the colour scale's end, as text


def heat_panels(picture: GradientPicture) -> list[HeatPanel]:
    """Expected, yours and the difference as cells coloured by matplotlib's colour maps (the
    first two on one scale); a page draws them as tables, so the numbers stay text and a page
    costs no figure. ``gradient_heatmaps`` draws the same as an image."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    row, column = picture.worst_index
    out = []
    for name, (title, values, limit, cmap) in zip(PANELS, _panels(picture)):
        colours = colormaps[cmap]

        def cell(r: int, c: int, value: float) -> HeatCell:
            return HeatCell(value, _cell_text(value), to_hex(colours(0.5 + 0.5 * value / limit)),
                            abs(value) > 0.6 * limit, (r, c) == (row, column))

        cells = [[cell(r, c, v) for c, v in enumerate(line)] for r, line in enumerate(values)]
        stops = ", ".join(to_hex(colours(i / 8)) for i in range(9))
        out.append(HeatPanel(name, title, cells, f"linear-gradient(to right, {stops})",
                             f"{limit:.3g}"))
    return out


def gradient_heatmaps(picture: GradientPicture, fmt: Format = "png") -> str | bytes:
    """Expected, yours and the difference as heat maps side by side in one image (for a
    platform that shows images); the first two share one colour scale, the worst entry is
    outlined in each."""
    rows, columns = len(picture.expected), len(picture.expected[0])
    width, height = min(3.4, 0.6 * columns + 1.3), min(4.2, 0.45 * rows + 1.2)
    with matplotlib.rc_context(_STYLE):
        figure = _figure(3 * width - 0.6, height)
        axes = figure.subplots(1, 3)
        meshes = [_heatmap(ax, picture, *panel) for ax, panel in zip(axes, _panels(picture))]
        figure.colorbar(meshes[1], ax=list(axes[:2]), shrink=0.85, pad=0.02)
        figure.colorbar(meshes[2], ax=axes[2], shrink=0.85, pad=0.02)
    return _render(figure, f"gradient-{picture.parameter}", fmt)


#: the last figure of each per-student kind, kept to draw the next student's numbers on:
#: kind -> (what the figure was built for, the figure and its artists). A `gradkit grade`
#: grading process draws two pictures a student; building the axes, ticks and legend anew each
#: time was half of what a picture cost. Only what differs between students is set on it, and
#: the SVG is the same text a fresh figure gives (tests/test_render_html.py checks).
_REUSED: dict[str, tuple[tuple, tuple]] = {}


def _reused(kind: str, key: tuple, build):
    """The figure of ``kind`` built by ``build()`` for ``key``, reused while ``key`` is the same
    (one per kind: a new key replaces it)."""
    held = _REUSED.get(kind)
    if held is None or held[0] != key:
        with matplotlib.rc_context(_STYLE):
            held = _REUSED[kind] = (key, build())
    return held[1]


def loss_curves(curve: TrainingCurve, fmt: Format = "svg") -> str | bytes:
    """The student's loss and the reference's at each checkpoint of the training loop."""

    def build():
        figure, ax = _axes(5.6, 3.0)
        ax.plot(curve.steps, curve.reference_loss, marker="o", color=REFERENCE,
                label="reference", linewidth=2)
        student, = ax.plot(curve.steps, [float("nan")] * len(curve.steps), marker="s",
                           color=STUDENT, label="your function", linewidth=2, linestyle="--")
        ax.set_xlabel("training step")
        ax.set_ylabel(curve.loss)
        ax.grid(True, color=GRID, linewidth=0.6)
        ax.legend(frameon=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        return figure, ax, student

    # the steps where the student's loss is not a number are marked on the axis: no point of
    # the line is drawn there, and an empty stretch must not read as a gap in the checkpoints
    missing = tuple(v is None or not math.isfinite(v) for v in curve.student_loss)

    def build_marked():
        figure, ax, student = build()
        if any(missing):
            ax.scatter([s for s, m in zip(curve.steps, missing) if m], [0] * sum(missing),
                       marker="x", color=STUDENT, s=40, clip_on=False, zorder=4,
                       label="yours: not a number")
            ax.legend(frameon=False)
        return figure, ax, student

    figure, ax, student = _reused("loss", (tuple(curve.steps), tuple(curve.reference_loss),
                                           curve.loss, missing), build_marked)
    with matplotlib.rc_context(_STYLE):
        student.set_ydata([float("nan") if m else v for v, m in zip(curve.student_loss, missing)])
        ax.relim()
        ax.set_autoscale_on(True)
        ax.autoscale_view()
        ax.set_ylim(bottom=0)
    return _render(figure, "loss", fmt)


def predictions(curve: TrainingCurve, fmt: Format = "svg") -> str | bytes:
    """P on each row (each output of each row) after training, with its label and the
    threshold; a prediction that is not a number is marked with a cross at the axis."""
    rows = list(range(len(curve.predictions)))
    shown = [p if p is not None else float("nan") for p in curve.predictions]
    # a bar with no finite height takes no room on the axes: which ones have none is part of
    # what a figure is built for
    missing = tuple(not math.isfinite(p) for p in shown)
    outputs = curve.outputs
    ticks = [str(r) for r in rows] if outputs == 1 else \
        [f"{r // outputs}.{r % outputs}" for r in rows]

    def build():
        figure, ax = _axes(5.6, 2.8, top=0.45)
        bars = ax.bar(rows, [float("nan") if m else 0.0 for m in missing], color=STUDENT,
                      alpha=0.75, label="your P", width=0.6)
        ax.scatter(rows, curve.labels, marker="_", s=420 if len(rows) <= 8 else 160,
                   linewidths=3, color=INK, label="label Y", zorder=3)
        ax.axhline(curve.threshold, color=MUTED, linewidth=1, linestyle=":",
                   label=f"threshold {curve.threshold:g}")
        if any(missing):
            ax.scatter([r for r, m in zip(rows, missing) if m], [0] * sum(missing), marker="x",
                       color=STUDENT, s=40, zorder=4, clip_on=False, label="not a number")
        ax.set_xticks(rows, ticks, fontsize=9 if len(rows) <= 16 else 7)
        ax.set_xlabel("row of the training data" if outputs == 1 else
                      "row.output of the training data")
        ax.set_ylim(-0.05, 1.1)
        ax.set_ylabel("prediction")
        ax.legend(frameon=False, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        return figure, bars

    figure, bars = _reused("predictions", (tuple(curve.labels), curve.threshold, missing,
                                           outputs), build)
    with matplotlib.rc_context(_STYLE):
        for bar, height in zip(bars, shown):
            bar.set_height(height)
    return _render(figure, "predictions", fmt)


def score_histogram(scores: Sequence[float], max_score: Optional[float], bins: int = 10,
                    fmt: Format = "svg") -> str | bytes:
    """How many students scored in each tenth of the maximum (or of the scores' range)."""
    top = max_score or max(scores or [1.0]) or 1.0
    edges = [top * i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for score in scores:
        counts[min(bins - 1, max(0, int(bins * score / top)))] += 1
    with matplotlib.rc_context(_STYLE):
        figure = _figure(5.6, 2.8)
        ax = figure.subplots()
        ax.bar(edges[:-1], counts, width=top / bins, align="edge", color=REFERENCE,
               edgecolor="white")
        ax.set_xlim(0, top)
        ax.set_xlabel(f"score (of {top:g})")
        ax.set_ylabel("students")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, axis="y", color=GRID, linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return _render(figure, "scores", fmt)


def check_failures(counts: Sequence[tuple[str, int]], students: int,
                   fmt: Format = "svg") -> str | bytes:
    """How many students failed each check, one bar per check."""
    labels = [label for label, _ in counts][::-1]
    values = [n for _, n in counts][::-1]
    with matplotlib.rc_context(_STYLE):
        figure = _figure(5.6, 0.32 * len(labels) + 1.0)
        ax = figure.subplots()
        ax.barh(labels, values, color=STUDENT, alpha=0.8, height=0.6)
        ax.set_xlim(0, max(students, 1))
        ax.set_xlabel(f"students who failed it (of {students})")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, axis="x", color=GRID, linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return _render(figure, "checks", fmt)
