"""Writes a capacity ladder's results page (docs/results-fashion-mnist.md for
`sweeps/reproduce.yaml`) and its figures from the store:
`python -m sweeps results-page GRID --page PATH` (`make reproduce` runs it).
The numbers and verdicts come from benchmark.reporting.report.summarize and
benchmark.reporting.reproduction; nothing on the page is typed by hand."""
from __future__ import annotations

import os
import time
from pathlib import Path

from matplotlib.figure import Figure

from benchmark.reporting.figures import _save, _styles, plot_bec_vs_asr, plot_reactivation
from benchmark.reporting.report import BACKDOORED, CLEAN, _fmt, _fmt_gap, seeds_sentence, summarize
from benchmark.reporting.reproduction import (METHOD, REGIME_BEC, REGIME_GAP, REMOVED_ASR, claims, commit,
                                    parameter_count, rung_costs)

TABLE = [("clean_acc", "C-Acc %", True), ("asr", "ASR %", True), ("bec", "BEC", False),
         (f"react_asr:{METHOD}", "WBA ASR %", True), (f"guaa_asr:{METHOD}", "gUAA ASR %", True)]


def plot_capacity(summary: list[dict], params: dict[str, int], path: Path, title: str) -> Path:
    """Re-activation gap (WBA − gUAA, points) and BEC against parameter count,
    one line per attack × defense that brought ASR below REMOVED_ASR on some
    rung; filled markers where it did on that rung, hollow where it did not;
    bars are 95 % intervals over seeds."""
    markers, colours = _styles(summary)
    chosen = sorted({(a["attack"], a["model"]) for a in summary if a["model"] not in (CLEAN, BACKDOORED, "none")
                     and a.get("asr_mean") is not None and a["asr_mean"] < REMOVED_ASR},
                    key=lambda k: (k[0], k[1]))
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    gap_ax, bec_ax = fig.subplots(1, 2)
    dashes = {a: ("-", "--", ":", "-.")[i % 4] for i, a in enumerate(dict.fromkeys(a["attack"] for a in summary))}
    for attack, model in chosen:
        points = [a for a in summary if (a["attack"], a["model"]) == (attack, model) and a["arch"] in params]
        points.sort(key=lambda a: params[a["arch"]])
        for ax, col, scale in ((gap_ax, f"gap:{METHOD}", 100.0), (bec_ax, "bec", 1.0)):
            xy = [(params[a["arch"]], scale * a[f"{col}_mean"], a) for a in points if a.get(f"{col}_mean") is not None]
            if not xy:
                continue
            ax.plot([x for x, _, _ in xy], [y for _, y, _ in xy], color=colours[model], linewidth=1.1,
                    linestyle=dashes[attack])
            for x, y, a in xy:
                removed = a.get("asr_mean") is not None and a["asr_mean"] < REMOVED_ASR
                ax.scatter([x], [y], marker=markers[attack], s=55, zorder=3, edgecolors=[colours[model]],
                           facecolors=[colours[model]] if removed else "none")
                low, high = a.get(f"{col}_low"), a.get(f"{col}_high")
                if low is not None:
                    ax.errorbar([x], [y], yerr=[[y - scale * low], [scale * high - y]], fmt="none",
                                ecolor=colours[model], capsize=2, elinewidth=0.9)
            ax.annotate(f"{model} / {attack}", (xy[-1][0], xy[-1][1]), xytext=(5, 0), textcoords="offset points",
                        fontsize=7, color=colours[model])
    gap_ax.axhline(100 * REGIME_GAP, color="0.6", linestyle=":", linewidth=0.9)
    bec_ax.axhline(REGIME_BEC, color="0.6", linestyle=":", linewidth=0.9)
    for ax in (gap_ax, bec_ax):
        ax.axhline(0.0, color="0.75", linewidth=0.8)
        ax.set_xscale("log")
        if params:  # room for the labels beside the first and last rung
            ax.set_xlim(min(params.values()) / 1.6, max(params.values()) * 2.5)
        ax.set_xlabel("parameters of the model (log scale)")
        ax.grid(alpha=0.3)
        for arch, n in params.items():
            ax.annotate(arch, (n, 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                        rotation=90, fontsize=6, color="0.45", va="bottom", ha="center")
    gap_ax.set_ylabel("WBA ASR − gUAA ASR (points)")
    gap_ax.set_title(f"re-activation gap (dotted: the regime's {100 * REGIME_GAP:.0f} points)")
    bec_ax.set_ylabel("BEC (0 = clean, 1 = backdoored)")
    bec_ax.set_title(f"backdoor existence (dotted: the regime's {REGIME_BEC})")
    if not chosen:
        gap_ax.text(0.5, 0.5, f"no defense brought ASR below {REMOVED_ASR}", transform=gap_ax.transAxes,
                    ha="center")
    fig.suptitle(f"{title}: defenses that brought ASR below {REMOVED_ASR} (filled: on that rung), "
                 "95 % intervals over seeds")
    return _save(fig, path)


def _duration(seconds: float) -> str:
    minutes = seconds / 60.0
    return f"{minutes:.0f} min" if minutes >= 10 else f"{minutes:.1f} min"


def _rung_table(grid, summary: list[dict], params: dict[str, int], costs: dict[str, dict]) -> list[str]:
    lines = ["| rung | parameters | epochs (f_C, f_A) | seeds | attacks | defenses | jobs | job time | wall time |",
             "|---|---:|---:|---|---|---|---:|---:|---:|"]
    for arch in grid.archs:
        attacks, seeds, defenses, cell = grid.arch_settings(arch)
        cost = costs.get(arch, {})
        done = cost.get("jobs", 0)
        lines.append(f"| {arch} | {params[arch]:,} | {cell.get('epochs')} | {', '.join(map(str, seeds))} | "
                     f"{', '.join(attacks)} | {', '.join(defenses)} | {done} of {cost.get('planned', 0)} | "
                     f"{_duration(cost['job_seconds']) if done else '–'} | "
                     f"{_duration(cost['end'] - cost['start']) if done else '–'} |")
    return lines


def _panel(summary: list[dict], arch: str) -> list[str]:
    header = ["attack", "model", "seeds"] + [h for _, h, _ in TABLE] + ["WBA − gUAA (pts)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(TABLE) + 1)) + "|"]
    for agg in (a for a in summary if a["arch"] == arch):
        cells = [agg["attack"], agg["model"], str(agg["n_seeds"])] + [_fmt(agg, c, pct) for c, _, pct in TABLE]
        lines.append("| " + " | ".join(cells + [_fmt_gap(agg, METHOD)]) + " |")
    return lines


def _per_seed(rows: list[dict]) -> list[str]:
    """Every seed of the defenses that brought ASR below REMOVED_ASR on some
    seed: the numbers behind the intervals and the paired test."""
    chosen = {(r["arch"], r["attack"], r["model"]) for r in rows if r["model"] not in (CLEAN, BACKDOORED, "none")
              and r.get("asr") is not None and r["asr"] < REMOVED_ASR}
    if not chosen:
        return []
    lines = ["## Per seed", "", f"The defenses that brought ASR below {REMOVED_ASR} on some seed, seed by seed.", "",
             "| rung | attack | model | seed | C-Acc % | ASR % | BEC | WBA ASR % | gUAA ASR % |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    for r in sorted((r for r in rows if (r["arch"], r["attack"], r["model"]) in chosen),
                    key=lambda r: (r["arch"], r["attack"], r["model"], r["seed"])):
        bec = r.get("bec")
        lines.append(f"| {r['arch']} | {r['attack']} | {r['model']} | {r['seed']} | {pct(r.get('clean_acc'))} | "
                     f"{pct(r.get('asr'))} | {'–' if bec is None else f'{bec:.3f}'} | "
                     f"{pct(r.get(f'react_asr:{METHOD}'))} | {pct(r.get(f'guaa_asr:{METHOD}'))} |")
    return lines + [""]


def _agreement(summary: list[dict], archs: list[str]) -> list[str]:
    """One plain sentence per rung: which defenses removed the trigger's
    effect, and whether any of them sits in the paper's regime."""
    out = []
    for arch in archs:
        rows = [a for a in summary if a["arch"] == arch and a["model"] not in (CLEAN, BACKDOORED, "none")]
        low = [a for a in rows if a.get("asr_mean") is not None and a["asr_mean"] < REMOVED_ASR]
        if not low:
            out.append(f"- **{arch}**: no defense brought ASR below {REMOVED_ASR}; the paper's question "
                       "(is a removed backdoor only dormant?) has no case to answer on this rung.")
            continue
        parts = []
        for a in low:
            bec, gap = a.get("bec_mean"), a.get(f"gap:{METHOD}_mean")
            dormant = bec is not None and gap is not None and bec > REGIME_BEC and gap > REGIME_GAP
            control = next((c.get(f"react_asr:{METHOD}_mean") for c in summary if c["model"] == CLEAN
                            and (c["arch"], c["attack"]) == (arch, a["attack"])), None)
            parts.append(f"{a['model']} on {a['attack']} (BEC {'–' if bec is None else f'{bec:.2f}'}, "
                         f"WBA − gUAA {'–' if gap is None else f'{100 * gap:.0f}'} pts, WBA on the clean model "
                         f"{'–' if control is None else f'{100 * control:.0f} %'}: "
                         f"{'dormant, as in the paper' if dormant else 'not the paper regime'})")
        out.append(f"- **{arch}**: ASR below {REMOVED_ASR} after " + "; ".join(parts) + ".")
    return out


def write_results_page(graph, page: Path, title: str = "Results on Fashion-MNIST") -> Path:
    """Read the grid's rows from the store, write `page` and its figures
    (beside it, under figures/<grid name>/); returns the page's path."""
    from benchmark.cell.rows import stored_rows

    grid = graph.grid
    rows, _ = stored_rows(graph.cells)  # cells not run yet: the rung table says how many jobs are done
    summary = summarize(rows)
    dm = graph.cells[0].ctx.dm
    params = {arch: parameter_count(arch, dm) for arch in grid.archs}
    costs = rung_costs(graph)
    page = Path(page)
    figures = page.parent / "figures" / grid.name
    figures.mkdir(parents=True, exist_ok=True)
    fig1 = plot_bec_vs_asr(summary, figures / "bec_vs_asr.png", grid.name)
    heat = plot_reactivation(summary, [METHOD], figures / "reactivation_asr.png", grid.name)
    capacity = plot_capacity(summary, params, figures / "capacity.png", grid.name)
    rel = lambda p: os.path.relpath(p, page.parent)  # noqa: E731 - links relative to the page
    verdicts = claims(summary)
    total = sum(c["job_seconds"] for c in costs.values())
    spans = [c for c in costs.values() if c["jobs"]]
    wall = (max(c["end"] for c in spans) - min(c["start"] for c in spans)) if spans else 0.0
    lines = [f"# {title}: is a removed backdoor only asleep, and at what capacity?", "",
             f"Written by `make reproduce` (`python -m sweeps results-page {grid.path}`) from the store, "
             f"{time.strftime('%Y-%m-%d')}, at commit `{commit()}`. Grid: [`{grid.path}`](../{grid.path}) "
             f"({len(graph)} jobs, {sum(c['jobs'] for c in costs.values())} in the store; wall time "
             f"{_duration(wall)}, job time {_duration(total)} with {grid.executor['cpu_workers']} jobs at once).",
             "", seeds_sentence(summary), "", "## The claims, checked on these numbers", ""]
    for claim in verdicts:
        lines += [f"{claim.number}. **{claim.statement}: {claim.verdict}.**"]
        lines += [f"   - {e}" for e in claim.evidence]
    lines += ["", "## What agrees with the paper and what does not", "",
              "The paper (PreAct-ResNet18 and others on CIFAR-10, Tiny-ImageNet, GTSRB) finds that defenses which "
              "bring the trigger's ASR down leave the backdoor in the model: BEC stays high and a small universal "
              "perturbation on top of the trigger (WBA) re-activates it far above the same search without the "
              "trigger (gUAA). Here, rung by rung:", ""]
    lines += _agreement(summary, grid.archs)
    lines += ["", "## The ladder", ""] + _rung_table(grid, summary, params, costs)
    lines += ["", "Job time: the sum of every job's own seconds; wall time: first job's start to last job's end "
                  "(both from the store's records, so a resumed run counts only the work it did).", ""]
    for arch in grid.archs:
        lines += [f"## {arch}", ""] + _panel(summary, arch) + [""]
    lines += _per_seed(rows)
    lines += ["BEC = (S(f_A, f_D) − S(f_A, f_C)) / (1 − S(f_A, f_C)); WBA ASR: the trigger plus the universal "
              "perturbation found with white-box access (ε = 0.05, L∞); gUAA ASR: the same search on clean inputs "
              "without the trigger; WBA − gUAA: paired by seed.", "",
              "## Figures", "", "Figure 1 of the paper per rung: BEC against ASR.", "",
              f"![BEC vs ASR]({rel(fig1)})", "",
              "ASR of the trigger and after WBA.", "", f"![re-activation]({rel(heat)})", "",
              "The re-activation gap and BEC against capacity.", "", f"![capacity]({rel(capacity)})", "",
              "## Settings", "", f"The grid file at commit `{commit()}`:", "", "```yaml",
              Path(grid.path).read_text().rstrip(), "```", ""]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines))
    return page


__all__ = ["plot_capacity", "write_results_page"]
