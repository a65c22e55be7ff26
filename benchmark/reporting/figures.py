"""The report's figures (benchmark/reporting/report.py writes them): BEC
against ASR (the paper's Figure 1), the re-activation heatmaps and ASR
against queries, drawn from the summary of benchmark/reporting/tables.py.
Rendered through matplotlib's Figure (Agg) without pyplot: no global
backend, no display."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from benchmark.reporting.tables import BACKDOORED, CLEAN, curve_points, method_names, model_rank, ordered

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def _styles(summary: list[dict]) -> tuple[dict, dict]:
    """Marker per attack, colour per model: the references in black / grey,
    defenses from tab10 (tab20 beyond ten)."""
    attacks = ordered(a["attack"] for a in summary)
    markers = {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(attacks)}
    defenses = [m for m in ordered(a["model"] for a in summary) if m not in (CLEAN, BACKDOORED)]
    palette = matplotlib.colormaps["tab10" if len(defenses) <= 10 else "tab20"]
    colours = {m: palette(i % palette.N) for i, m in enumerate(defenses)}
    colours.update({CLEAN: "0.55", BACKDOORED: "black"})
    return markers, colours


def _legends(fig: Figure, markers: dict, colours: dict, present_models, linestyles: dict | None = None) -> None:
    """One legend outside the axes with two sections (attack = shape, model =
    colour): an entry per attack x model would be unreadable on a 7 x 9 grid,
    and two separate legends overlap once they grow."""
    def header(text):
        return Line2D([], [], linestyle="none", label=text)

    handles = [header("attack (shape)")]
    handles += [Line2D([], [], marker=mk, color="0.3", linestyle=(linestyles or {}).get(a, "none"), label=str(a))
                for a, mk in markers.items()]
    handles.append(header("model (colour)"))
    for m in (m for m in colours if m in present_models):
        ref = m in (CLEAN, BACKDOORED)
        label = {CLEAN: "clean model f_C", BACKDOORED: "backdoored f_A (no defense)"}.get(m, str(m))
        handles.append(Line2D([], [], marker="o", linestyle="none", markersize=8, label=label,
                              markerfacecolor="none" if ref else colours[m], markeredgecolor=colours[m],
                              markeredgewidth=2 if ref else 1))
    legend = fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    for text in legend.get_texts():
        if text.get_text() in ("attack (shape)", "model (colour)"):
            text.set_fontweight("bold")


def _panels(summary: list[dict]) -> list[tuple]:
    return ordered((a["dataset"], a["arch"]) for a in summary)


def _error(agg: dict, col: str, mean: float, scale: float):
    """matplotlib's [[below], [above]] error of `col` from its 95 % interval
    over seeds (benchmark.reporting.tables.summarize), scaled; None without an interval."""
    low, high = agg.get(f"{col}_low"), agg.get(f"{col}_high")
    if low is None or high is None:
        return None
    return [[scale * (mean - low)], [scale * (high - mean)]]


def _intervals_note(summary: list[dict]) -> str:
    """The figure's statement of what it averages and what its bars are."""
    if any(a.get("n_seeds", 1) > 1 for a in summary):
        return "mean over seeds; bars / ± = 95 % interval"
    return "one seed: no interval"


def _save(fig: Figure, path: Path) -> Path:
    # Figure without pyplot renders through Agg: no global backend switch, no display.
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def plot_bec_vs_asr(summary: list[dict], path: Path, title: str) -> Path:
    """Figure 1: BEC (y) against the original trigger's ASR on the model (x)."""
    markers, colours = _styles(summary)
    panels = _panels(summary) or [("no data", "")]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 4.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    present = set()
    for ax, panel in zip(axes, panels):
        for agg in (a for a in summary if (a["dataset"], a["arch"]) == panel):
            x, y = agg.get("asr_mean"), agg.get("bec_mean")
            if x is None or y is None:
                continue
            model, ref = agg["model"], agg["model"] in (CLEAN, BACKDOORED)
            present.add(model)
            xerr, yerr = _error(agg, "asr", x, 100.0), _error(agg, "bec", y, 1.0)
            if xerr is not None or yerr is not None:  # 95 % intervals over seeds
                ax.errorbar([100 * x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=colours[model],
                            elinewidth=0.9, capsize=2, alpha=0.8, zorder=2)
            ax.scatter([100 * x], [y], marker=markers[agg["attack"]], s=70 if ref else 55, zorder=3,
                       facecolors="none" if ref else [colours[model]], edgecolors=[colours[model]],
                       linewidths=2 if ref else 0.6)
        # BEC is pinned to 0 for f_C and 1 for f_A: the two levels anchor the reading.
        for level, text in ((0.0, "f_C level"), (1.0, "f_A level")):
            ax.axhline(level, color="0.7", linestyle="--", linewidth=0.8, zorder=1)
            ax.annotate(text, (0.5, level), xycoords=("axes fraction", "data"), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom",
                        fontsize=7, color="0.5")
        ax.set_xlim(-3, 103)
        ax.set_xlabel("ASR of the original trigger on the model (%)")
        ax.set_ylabel("BEC (unitless; 0 = clean, 1 = backdoored)")
        ax.set_title(" / ".join(p for p in panel if p))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: backdoor existence vs attack success ({_intervals_note(summary)})")
    _legends(fig, markers, colours, present)
    return _save(fig, path)


def plot_reactivation(summary: list[dict], methods: list[str], path: Path, title: str) -> Path:
    """Heatmaps, rows attack and columns model: the original trigger's ASR, then
    the ASR after re-activation for each method. A heatmap stays readable at
    7 attacks x 9 defenses where grouped bars would not."""
    panels = _panels(summary)
    several = len(panels) > 1
    row_keys = ordered((a["dataset"], a["arch"], a["attack"]) for a in summary)
    models = sorted(ordered(a["model"] for a in summary), key=model_rank([a["model"] for a in summary]).get)
    lookup = {(a["dataset"], a["arch"], a["attack"], a["model"]): a for a in summary}
    sources = [("asr", "original trigger")] + [(f"react_asr:{m}", f"re-activated ({m})") for m in methods]
    cmap = matplotlib.colormaps["Reds"].with_extremes(bad="0.88")
    # Two panels a row keeps the figure near a page's aspect with three methods.
    ncols = min(2, len(sources))
    nrows = math.ceil(len(sources) / ncols)
    width = max(2.5, 0.55 * len(models) + 1.6)
    height = 0.42 * max(1, len(row_keys)) + 1.9
    fig = Figure(figsize=(width * ncols + 1.2, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    image = None
    for ax, (col, name) in zip(axes, sources):
        grid = np.full((max(1, len(row_keys)), max(1, len(models))), np.nan)
        half = np.full_like(grid, np.nan)  # half-width of the 95 % interval, in points
        for i, rk in enumerate(row_keys):
            for j, model in enumerate(models):
                agg = lookup.get((*rk, model), {})
                value = agg.get(f"{col}_mean")
                if value is not None:
                    grid[i, j] = 100 * value
                if agg.get(f"{col}_low") is not None and agg.get(f"{col}_high") is not None:
                    half[i, j] = 50 * (agg[f"{col}_high"] - agg[f"{col}_low"])
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            text = "–" if np.isnan(v) else f"{v:.0f}" if np.isnan(half[i, j]) else f"{v:.0f}\n±{half[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if np.isnan(half[i, j]) else 6,
                    color="white" if not np.isnan(v) and v > 60 else "black")
        ax.set_xticks(range(len(models)), [str(m) for m in models], rotation=45, ha="right")
        ax.set_yticks(range(len(row_keys)), [f"{d}/{a}: {k}" if several else str(k) for d, a, k in row_keys])
        ax.set_xlabel("model (defense)")
        ax.set_ylabel("attack")
        ax.set_title(name)
    for ax in axes[len(sources):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes), label="ASR (%)", shrink=0.6)
    fig.suptitle(f"{title}: ASR before and after re-activation ({_intervals_note(summary)})")
    return _save(fig, path)


def plot_asr_vs_queries(summary: list[dict], rows: list[dict], path: Path, title: str) -> Path | None:
    """ASR after re-activation against the number of queries, per query method;
    None (nothing written) when no row has curve points."""
    keys = set().union(*rows) if rows else set()
    curves = {m: pts for m in method_names(keys) if (pts := curve_points(keys, m))}
    if not curves:
        return None
    markers, colours = _styles(summary)
    styles = ["-", "--", ":", "-."]
    linestyles = {a: styles[i % len(styles)] for i, a in enumerate(markers)}
    panels = _panels(summary)
    fig = Figure(figsize=(5.0 * len(curves), 4.0 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(curves), squeeze=False)
    present = set()
    for r, panel in enumerate(panels):
        for c, (method, points) in enumerate(curves.items()):
            ax = axes[r, c]
            for agg in (a for a in summary if (a["dataset"], a["arch"]) == panel):
                xy = [(n, 100 * v) for n, k in points if (v := agg.get(f"{k}_mean")) is not None]
                if not xy:
                    continue
                present.add(agg["model"])
                ax.plot(*zip(*xy), marker=markers[agg["attack"]], linestyle=linestyles[agg["attack"]],
                        color=colours[agg["model"]], markersize=5, linewidth=1.2)
                band = [(n, 100 * agg[f"{k}_low"], 100 * agg[f"{k}_high"]) for n, k in points
                        if agg.get(f"{k}_low") is not None and agg.get(f"{k}_high") is not None]
                if band:  # the 95 % interval over seeds
                    ax.fill_between(*zip(*band), color=colours[agg["model"]], alpha=0.15, linewidth=0)
            ax.set_ylim(-3, 103)
            ax.set_xlabel("queries to the model")
            ax.set_ylabel("ASR after re-activation (%)")
            ax.set_title(f"{method} — {panel[0]} / {panel[1]}")
            ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: re-activation ASR vs query budget ({_intervals_note(summary)})")
    _legends(fig, markers, colours, present, linestyles)
    return _save(fig, path)

