"""Leaderboard of defenses, written out: leaderboard.md (the ranking, f_A
beneath it as the reference, the per-attack numbers), leaderboard.csv and
leaderboard.png (the residual backdoor against the accuracy cost).

The ranking itself, its headline and its statistics over seeds are computed in
benchmark/reporting/ranking.py, whose docstring defines them; its names are
re-exported here, where `bdbench score` and the tests import them.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from benchmark.reporting.figures import _save
# All of ranking's public names, not only those used here: see the docstring.
from benchmark.reporting.ranking import (ALIAS, INTERVAL_FIELDS, PER_ATTACK, PER_METHOD, REFERENCE_NAME, REFERENCES,
                                         SUMMARY, grid_attacks, leaderboard, leaderboard_columns, reference)
from benchmark.reporting.report import _write_csv

HEADLINE = ("Headline = worst re-activation ASR: the highest ASR that any re-activation method in the grid "
            "reaches against the defended model, over all attacks of the grid (mean over seeds): in input space, "
            "the original trigger + a universal perturbation δ; in weight space, the original trigger after a "
            "copy of the model was fine-tuned on a small attacker-held set with a few poisoned samples (P-ASR; "
            "its controls, the clean model and exact purification, are rows of the per-attack table). Lower is better: a defense that only put the backdoor to sleep "
            "scores high even when the trigger alone no longer works. The gUAA ASR at that same attack/method "
            "is the control (the same optimisation on clean inputs, no trigger): the part of the headline "
            "above it is the backdoor, the part below is a generic adversarial perturbation. Ties are broken "
            "by the clean-accuracy cost (clean accuracy of f_A minus that of the defended model, mean over "
            "attacks). Coverage k/n: attack × method pairs with a re-activation result.")


# ---- markdown -----------------------------------------------------------------------------
def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _pct_interval(value, low, high) -> str:
    """"mean ± h" (h: half-width of the 95 % interval), the mean alone without one."""
    if value is None:
        return "–"
    return _pct(value) if low is None or high is None else f"{_pct(value)} ± {100 * (high - low) / 2:.1f}"


def _test(entry: dict) -> str:
    """Whether the headline's re-activation beats its gUAA control, paired over seeds."""
    if entry.get("worst_reactivation_asr") is None or entry.get("worst_guaa_asr") is None:
        return "–"
    p = entry.get("worst_gap_p")
    if p is None:
        return "no test (1 seed)"
    return f"{'yes' if entry.get('worst_gap_significant') else 'no'} (p {p:.3g})"


def _num3(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _cost(value) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def _name(entry: dict, candidate: str) -> str:
    # A plugin reference may contain "|", which would split the table cell.
    text = str(entry["defense"]).replace("|", "\\|")
    return f"**{text}**" if entry.get("candidate") or entry["defense"] == candidate else text


def _ranking_row(entry: dict, candidate: str) -> list[str]:
    return [str(entry["rank"]) if entry.get("rank") is not None else "–", _name(entry, candidate),
            _pct_interval(entry["worst_reactivation_asr"], entry.get("worst_reactivation_asr_low"),
                          entry.get("worst_reactivation_asr_high")),
            entry["worst_case"] or "–",
            _pct_interval(entry["worst_guaa_asr"], entry.get("worst_guaa_asr_low"), entry.get("worst_guaa_asr_high")),
            _test(entry), _pct(entry.get("worst_input_asr")), _pct(entry.get("worst_weight_asr")),
            _cost(entry["clean_acc_cost"]), _pct(entry["mean_asr"]), _num3(entry["mean_bec"]), entry["coverage"]]


def _markdown(board: list[dict], title: str, candidate: str, methods: list[str], attacks: list[str],
              reference_entry: dict | None, figure: str, retunings: list[str] = ()) -> str:
    header = ["rank", "defense", "headline: worst re-activation ASR %", "worst case (attack/method)",
              "gUAA ASR there %", "re-act > gUAA?", "input-space worst %", "weight-space worst %",
              "clean-acc cost (pp)", "mean ASR %", "mean BEC", "coverage"]
    align = "|" + "|".join(["---:", "---", "---:", "---", "---:", "---"] + ["---:"] * 6) + "|"
    lines = [f"# {title}", ""]
    if any(e.get("candidate") or e["defense"] == candidate for e in board):
        lines += [f"Candidate: **{candidate}** (in bold). Lower headline is better.", ""]
    else:
        lines += [f"Candidate {candidate!r} has no result in this grid. Lower headline is better.", ""]
    lines += ["## Ranking", "", "| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(_ranking_row(e, candidate)) + " |" for e in board]
    if reference_entry is not None:
        lines += ["", "Reference, not ranked (the backdoored model with no defense; clean-acc cost 0 by definition):",
                  "", "| " + " | ".join(header) + " |", align,
                  "| " + " | ".join(_ranking_row(reference_entry, candidate)) + " |"]
    unplotted = [str(e["defense"]) for e in board if e["worst_reactivation_asr"] is None]
    lines.append("")
    if unplotted:
        lines += [f"No re-activation result, so no headline (ranked last, not plotted): {', '.join(unplotted)}.", ""]
    lines += ["Rates in percent; clean-acc cost in percentage points (positive = accuracy lost); "
              "– = missing or undefined (BEC is undefined when f_A and f_C are too similar). "
              f"{_statistics_sentence(board)}", ""]

    cols = ["defense", "attack", "seeds", "C-Acc %", "ASR %", "BEC"]
    for m in methods:
        cols += [f"{m} re-act ASR %", f"{m} gUAA ASR %"]
    cols += [f"{r} P-ASR %" for r in retunings]
    lines += ["## Per attack", "", "Mean over seeds.", "", "| " + " | ".join(cols) + " |",
              "|" + "|".join(["---", "---"] + ["---:"] * (len(cols) - 2)) + "|"]
    entries = board + ([reference_entry] if reference_entry is not None else [])
    for e in entries:
        for a in attacks:
            cells = [_name(e, candidate), str(a), str(e.get(f"seeds:{a}", 0)), _pct(e.get(f"clean_acc:{a}")),
                     _pct(e.get(f"asr:{a}")), _num3(e.get(f"bec:{a}"))]
            for m in methods:
                cells += [_pct(e.get(f"react_asr:{m}:{a}")), _pct(e.get(f"guaa_asr:{m}:{a}"))]
            cells += [_pct(e.get(f"retune_asr:{r}:{a}")) for r in retunings]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Headline", "", HEADLINE, "", f"![leaderboard]({figure})", ""]
    return "\n".join(lines)


def _statistics_sentence(board: list[dict]) -> str:
    from benchmark.measures.intervals import INTERVAL_NAME, TEST_NAME

    seeds = sorted({e.get("worst_case_seeds") or 0 for e in board if e.get("worst_case")})
    if not seeds or seeds == [1]:
        return "One seed: the values are single measurements, with no interval and no significance test."
    return (f"± = half-width of the {INTERVAL_NAME} ({', '.join(map(str, seeds))} seeds); "
            f"re-act > gUAA?: {TEST_NAME} at the worst case.")


# ---- figure -------------------------------------------------------------------------------
def plot_leaderboard(board: list[dict], path: Path, title: str, reference_entry: dict | None = None) -> Path:
    """Scatter of the trade-off: clean-accuracy cost (x) against the headline
    (y), one labelled point per defense with a headline. The gUAA control at
    each point's worst case hangs below it, so the gap reads as the part of the
    headline that is the backdoor rather than a generic perturbation."""
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.subplots()
    plotted = [e for e in board if e["worst_reactivation_asr"] is not None and e["clean_acc_cost"] is not None]
    for e in plotted:
        x, y, g = e["clean_acc_cost"], e["worst_reactivation_asr"], e["worst_guaa_asr"]
        low, high = e.get("worst_reactivation_asr_low"), e.get("worst_reactivation_asr_high")
        if low is not None and high is not None:  # the 95 % interval over seeds
            ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="none", ecolor="0.3", elinewidth=1,
                        capsize=3, zorder=2)
        if g is not None:
            ax.plot([x, x], [g, y], color="0.75", linewidth=1, zorder=1)
            ax.scatter([x], [g], marker="_", s=80, color="0.45", zorder=2)
        if e["candidate"]:
            ax.scatter([x], [y], marker="*", s=260, color="tab:red", edgecolors="black", linewidths=0.7, zorder=4)
        else:
            ax.scatter([x], [y], marker="o", s=55, color="tab:blue", zorder=3)
        ax.annotate(str(e["defense"]), (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8,
                    fontweight="bold" if e["candidate"] else "normal", color="tab:red" if e["candidate"] else "black")
    if reference_entry is not None and reference_entry["worst_reactivation_asr"] is not None:
        x, y = reference_entry["clean_acc_cost"] or 0.0, reference_entry["worst_reactivation_asr"]
        ax.scatter([x], [y], marker="s", s=60, facecolors="none", edgecolors="black", linewidths=1.5, zorder=3)
        ax.annotate("f_A (no defense)", (x, y), xytext=(6, -10), textcoords="offset points", fontsize=8)
    handles = [
        ax.scatter([], [], marker="o", s=55, color="tab:blue", label="defense"),
        ax.scatter([], [], marker="*", s=200, color="tab:red", edgecolors="black", linewidths=0.7,
                   label="candidate"),
        ax.scatter([], [], marker="_", s=80, color="0.45", label="gUAA control at the worst case"),
    ]
    if reference_entry is not None:
        handles.append(ax.scatter([], [], marker="s", s=60, facecolors="none", edgecolors="black",
                                  linewidths=1.5, label="backdoored f_A, no defense"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.axvline(0.0, color="0.8", linestyle="--", linewidth=0.8, zorder=0)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("clean-accuracy cost (fraction, 0–1; f_A's clean accuracy minus the defended model's)")
    ax.set_ylabel("worst re-activation ASR (fraction, 0–1; lower is better)")
    ax.set_title(f"{title}: residual backdoor vs accuracy cost"
                 + ("\n(bars: 95 % interval over seeds)" if any(e.get("worst_reactivation_asr_low") is not None
                                                             for e in plotted) else ""))
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ---- entry point --------------------------------------------------------------------------
def write_leaderboard(board: list[dict], out_dir: Path, title: str, candidate: str, methods: list[str],
                      attacks: list[str], reference: dict | None = None,
                      retunings: list[str] = ()) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.csv (every field, one row per
    defense, columns in leaderboard_columns order) and leaderboard.png into
    out_dir. `reference` (from reference()) is shown beneath the ranking and
    in the figure but kept out of the CSV, which holds the ranked entries only."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods, attacks = list(methods), list(attacks)
    paths = {"markdown": out_dir / "leaderboard.md", "csv": out_dir / "leaderboard.csv",
             "figure": out_dir / "leaderboard.png"}
    cols = leaderboard_columns(methods, attacks, retunings)
    extra = sorted(set().union(*board) - set(cols)) if board else []  # never drop a field silently
    _write_csv(board, cols + extra, paths["csv"])
    plot_leaderboard(board, paths["figure"], title, reference)
    paths["markdown"].write_text(_markdown(board, title, candidate, methods, attacks, reference,
                                           paths["figure"].name, retunings))
    return paths

