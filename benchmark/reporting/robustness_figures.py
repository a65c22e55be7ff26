"""Figures of how near a defense is to failing, beside the paper's: the
re-activation ASR against the budget ε (with its gUAA control), and the ASR
after weight-space re-activation against the model's own (Min et al.'s
Figure 1). Read from `benchmark.reporting.tables.summarize`."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from benchmark.reporting.figures import _error, _intervals_note, _legends, _panels, _save, _styles
from benchmark.reporting.tables import BACKDOORED, CLEAN, epsilon_key, epsilon_points, ordered


def plot_epsilon_curves(summary: list[dict], methods: list[str], path: Path, title: str,
                        margin: float | None = None) -> Path | None:
    """Per attack (and method), re-activation ASR (solid) and its gUAA
    control (dashed) against ε, one colour per model; None without a curve.
    One budget hides how close a defense is to failing: a curve that rises
    above its control at a small ε is a backdoor one small step from waking."""
    keys = set().union(*summary) if summary else set()
    columns = {k.rsplit("_", 1)[0] for k in keys}  # summary keys are "<column>_mean", "<column>_low", ...
    curves = [(m, eps) for m in methods if len(eps := epsilon_points(columns, m)) > 1]
    if not curves:
        return None
    markers, colours = _styles(summary)
    panels = [(panel, attack, m, eps) for m, eps in curves for panel in _panels(summary)
              for attack in ordered(a["attack"] for a in summary if (a["dataset"], a["arch"]) == panel)]
    ncols = min(3, len(panels))
    fig = Figure(figsize=(5.0 * ncols, 4.2 * math.ceil(len(panels) / ncols)), layout="constrained")
    axes = fig.subplots(math.ceil(len(panels) / ncols), ncols, squeeze=False).ravel()
    present = set()
    for ax, (panel, attack, method, eps) in zip(axes, panels):
        for agg in (a for a in summary if (a["dataset"], a["arch"]) == panel and a["attack"] == attack):
            model = agg["model"]
            for kind, style in (("react_asr", "-"), ("guaa_asr", "--")):
                xs, ys = [], []
                for e in eps:
                    value = agg.get(f"{epsilon_key(kind, method, e)}_mean")
                    if value is not None:
                        xs.append(e)
                        ys.append(100 * value)
                if xs:
                    present.add(model)
                    ax.plot(xs, ys, linestyle=style, marker=markers[attack], color=colours[model],
                            linewidth=2 if model in (CLEAN, BACKDOORED) else 1.2, markersize=4)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("re-activation budget ε (pixel units, [0, 1] images)")
        ax.set_ylabel(f"ASR with δ ({method}) (%)")
        ax.set_title(" / ".join(p for p in (*panel, attack) if p))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    rule = f"; margin {margin:g}" if margin is not None else ""
    fig.suptitle(f"{title}\nASR against ε, re-activation solid, gUAA dashed ({_intervals_note(summary)}{rule})")
    _legends(fig, markers, colours, present)
    return _save(fig, path)


def plot_retuning(summary: list[dict], retunings: list[str], path: Path, title: str) -> Path:
    """Weight-space re-activation (Min et al.'s Figure 1): the ASR after
    retuning, P-ASR (y), against the model's own, O-ASR (x), one panel per
    method; a point far above the diagonal and above the clean model's and
    exact purification's is a backdoor put to sleep."""
    markers, colours = _styles(summary)
    fig = Figure(figsize=(5.0 * len(retunings), 4.4), layout="constrained")
    axes = fig.subplots(1, len(retunings), squeeze=False).ravel()
    present = set()
    for ax, method in zip(axes, retunings):
        for agg in summary:
            x, y = agg.get("asr_mean"), agg.get(f"retune_asr:{method}_mean")
            if x is None or y is None:
                continue
            model, ref = agg["model"], agg["model"] in (CLEAN, BACKDOORED)
            present.add(model)
            xerr, yerr = _error(agg, "asr", x, 100.0), _error(agg, f"retune_asr:{method}", y, 100.0)
            if xerr is not None or yerr is not None:
                ax.errorbar([100 * x], [100 * y], xerr=xerr, yerr=yerr, fmt="none", ecolor=colours[model],
                            elinewidth=0.9, capsize=2, alpha=0.8, zorder=2)
            ax.scatter([100 * x], [100 * y], marker=markers[agg["attack"]], s=70 if ref else 55, zorder=3,
                       facecolors="none" if ref else [colours[model]], edgecolors=[colours[model]],
                       linewidths=2 if ref else 0.6)
        ax.plot([0, 100], [0, 100], color="0.7", linestyle="--", linewidth=0.8, zorder=1)
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("O-ASR: the model's own ASR (%)")
        ax.set_ylabel(f"P-ASR: ASR after {method} (%)")
        ax.set_title(f"weight-space re-activation: {method}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\nASR before and after retuning ({_intervals_note(summary)})")
    _legends(fig, markers, colours, present)
    return _save(fig, path)
