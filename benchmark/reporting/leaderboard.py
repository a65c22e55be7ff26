"""Leaderboard of defenses: which one leaves the least backdoor to wake up.

The paper's claim is that a defense which lowers the attack success rate (ASR)
of the original trigger can still leave the backdoor in the model, dormant: a
small universal perturbation δ added on top of the trigger re-activates it.
So the trigger's ASR after the defense is not the number to rank by; what
matters is how much ASR an attacker gets back.

Headline (column "worst_reactivation_asr", lower is better):

    worst_reactivation_asr(D) = max over attacks a and re-activation methods m
                                of react_asr(D, a, m)

where react_asr(D, a, m) is the ASR of the original trigger plus the δ that
method m found against defense D's model under attack a, first averaged over
seeds. It is the worst case in the grid on purpose: a defense has removed the
backdoor only if even the strongest re-activation attack, on the attack where
it works best, cannot bring it back; an average would let one dormant backdoor
hide behind several removed ones. "worst_case" names that attack/method pair
(the first in grid order on a tie) and "coverage" = k/n says how many of the
n attack x method pairs had a re-activation result: a headline over fewer
pairs is a weaker claim. Without any result the headline is None and the
defense is ranked last.

"worst_guaa_asr" is the control at that same attack/method: gUAA runs the same
optimisation on clean inputs, without the trigger, so it measures how much ASR
a generic universal adversarial perturbation reaches on its own. A headline
well above its gUAA is the backdoor coming back; a headline close to it is
mostly the model's ordinary adversarial fragility.

Ties on the headline go to the defense with the lower "clean_acc_cost": the
mean over attacks of (clean accuracy of the undefended backdoored model f_A
minus that of the defended model), i.e. the accuracy the defense costs.

Rows are those of a grid (see benchmark.reporting.report): the models "clean",
"backdoored" and its alias "none" are references, never ranked; reference()
gives f_A's numbers in the same fields so a reader sees what the defenses
start from (its re-activation ASR is usually near 1). Attacks are keyed by
name, or by "dataset/arch/attack" when the rows span several datasets or
architectures, so that different settings are never averaged together.
Missing values (absent key, None, NaN) are skipped, never raise.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib.figure import Figure

from benchmark.reporting.figures import _save
from benchmark.reporting.report import BACKDOORED, CLEAN, _ordered, _write_csv

ALIAS = "none"  # the "no defense" entry of a grid: f_A itself
REFERENCES = (CLEAN, BACKDOORED, ALIAS)
REFERENCE_NAME = "backdoored f_A (no defense)"
PER_ATTACK = ("clean_acc", "asr", "bec")
PER_METHOD = ("react_asr", "guaa_asr")
SUMMARY = ["rank", "defense", "candidate", "worst_reactivation_asr", "worst_case", "worst_guaa_asr",
           "clean_acc_cost", "mean_asr", "mean_bec", "coverage"]
# The statistics of the headline's worst case over its seeds (benchmark.measures.intervals):
# the 95 % intervals of its re-activation and gUAA ASR, and the one-sided paired
# test that re-activation beats gUAA there (None with one seed).
INTERVAL_FIELDS = ["worst_reactivation_asr_low", "worst_reactivation_asr_high", "worst_guaa_asr_low",
                   "worst_guaa_asr_high", "worst_gap_p", "worst_gap_significant", "worst_case_seeds"]
HEADLINE = ("Headline = worst re-activation ASR: the highest ASR that any re-activation method in the grid "
            "reaches against the defended model, over all attacks of the grid (original trigger + universal "
            "perturbation δ, mean over seeds). Lower is better: a defense that only put the backdoor to sleep "
            "scores high even when the trigger alone no longer works. The gUAA ASR at that same attack/method "
            "is the control (the same optimisation on clean inputs, no trigger): the part of the headline "
            "above it is the backdoor, the part below is a generic adversarial perturbation. Ties are broken "
            "by the clean-accuracy cost (clean accuracy of f_A minus that of the defended model, mean over "
            "attacks). Coverage k/n: attack × method pairs with a re-activation result.")


# ---- aggregation ------------------------------------------------------------------------
def _attack_key(rows: list[dict]):
    several = len(_ordered((r.get("dataset"), r.get("arch")) for r in rows)) > 1
    if several:
        return lambda r: f"{r.get('dataset')}/{r.get('arch')}/{r.get('attack')}"
    return lambda r: str(r.get("attack"))


def grid_attacks(rows: list[dict]) -> list[str]:
    """The grid's attacks in the order of the rows, keyed as the leaderboard keys them."""
    key = _attack_key(rows)
    return _ordered(key(r) for r in rows)


def _seed_means(rows: list[dict], methods: list[str]) -> dict[tuple[str, str], dict]:
    """(attack, model) -> each metric's mean over that pair's seeds (finite
    values only; None without one), "<metric>_low"/"_high" its 95 %
    interval (None below two seeds), per method "gap_p:<m>" /
    "gap_significant:<m>" the paired test of re-activation over gUAA, and
    "seeds" = rows in the group: read from benchmark.reporting.report.summarize, which
    groups the rows the same way (dataset, arch, attack, model)."""
    from benchmark.reporting.report import summarize

    key = _attack_key(rows)
    metrics = list(PER_ATTACK) + [f"{kind}:{m}" for m in methods for kind in PER_METHOD]
    out = {}
    for agg in summarize(rows):
        entry = {"seeds": agg["n_seeds"]}
        for col in metrics:
            for stat, field in (("mean", col), ("low", f"{col}_low"), ("high", f"{col}_high")):
                entry[field] = agg.get(f"{col}_{stat}")
        for m in methods:
            entry[f"gap_p:{m}"] = agg.get(f"gap:{m}_p")
            entry[f"gap_significant:{m}"] = agg.get(f"gap:{m}_significant")
        out[(key(agg), str(agg["model"]))] = entry
    return out


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _entry(name: str, per_attack: dict[str, dict | None], base_acc: dict[str, float | None],
           methods: list[str], attacks: list[str], candidate: bool) -> dict:
    """One leaderboard entry from the seed means of a model under each attack
    (None where the model has no row for that attack)."""
    entry = {"rank": None, "defense": name, "candidate": candidate}
    costs, asrs, becs = [], [], []
    worst, worst_case, worst_guaa, covered = None, None, None, 0
    worst_stats: dict = {}
    for a in attacks:
        agg = per_attack.get(a) or {}
        entry[f"seeds:{a}"] = agg.get("seeds", 0)
        for col in PER_ATTACK:
            entry[f"{col}:{a}"] = agg.get(col)
        if agg.get("clean_acc") is not None and base_acc.get(a) is not None:
            costs.append(base_acc[a] - agg["clean_acc"])
        asrs.append(agg.get("asr"))
        becs.append(agg.get("bec"))
        for m in methods:
            react, guaa = agg.get(f"react_asr:{m}"), agg.get(f"guaa_asr:{m}")
            entry[f"react_asr:{m}:{a}"], entry[f"guaa_asr:{m}:{a}"] = react, guaa
            if react is None:
                continue
            covered += 1
            # Strictly greater: on a tie the first pair in grid order stays the worst case.
            if worst is None or react > worst:
                worst, worst_case, worst_guaa = react, f"{a}/{m}", guaa
                worst_stats = {"worst_reactivation_asr_low": agg.get(f"react_asr:{m}_low"),
                               "worst_reactivation_asr_high": agg.get(f"react_asr:{m}_high"),
                               "worst_guaa_asr_low": agg.get(f"guaa_asr:{m}_low"),
                               "worst_guaa_asr_high": agg.get(f"guaa_asr:{m}_high"),
                               "worst_gap_p": agg.get(f"gap_p:{m}"),
                               "worst_gap_significant": agg.get(f"gap_significant:{m}"),
                               "worst_case_seeds": agg.get("seeds", 0)}
    entry.update(worst_reactivation_asr=worst, worst_case=worst_case, worst_guaa_asr=worst_guaa,
                 clean_acc_cost=_mean(costs), mean_asr=_mean(asrs), mean_bec=_mean(becs),
                 coverage=f"{covered}/{len(attacks) * len(methods)}")
    entry.update({k: worst_stats.get(k) for k in INTERVAL_FIELDS})
    return entry


def _backdoored_means(means: dict, attacks: list[str]) -> dict[str, dict | None]:
    """f_A's seed means per attack; the "none" alias stands in for an attack
    whose grid has no "backdoored" row, since it is the same model."""
    return {a: means.get((a, BACKDOORED)) or means.get((a, ALIAS)) for a in attacks}


def leaderboard(rows: list[dict], candidate: str, methods: list[str]) -> list[dict]:
    """One entry per defense in the rows (every model but the references),
    ranked by worst_reactivation_asr ascending (None last), ties by
    clean_acc_cost ascending, then by first appearance in the rows."""
    methods = list(methods)
    attacks = grid_attacks(rows)
    means = _seed_means(rows, methods)
    reference_means = _backdoored_means(means, attacks)
    base_acc = {a: (agg or {}).get("clean_acc") for a, agg in reference_means.items()}
    defenses = [m for m in _ordered(str(r.get("model")) for r in rows) if m not in REFERENCES]
    board = [_entry(d, {a: means.get((a, d)) for a in attacks}, base_acc, methods, attacks, d == candidate)
             for d in defenses]

    def order(entry):
        head, cost = entry["worst_reactivation_asr"], entry["clean_acc_cost"]
        return (head is None, head if head is not None else 0.0, cost is None, cost if cost is not None else 0.0)

    board.sort(key=order)  # stable: equal keys keep the rows' order
    for i, entry in enumerate(board, start=1):
        entry["rank"] = i if entry["worst_reactivation_asr"] is not None else None
    return board


def reference(rows: list[dict], methods: list[str]) -> dict | None:
    """f_A (no defense) in the leaderboard's fields, unranked; None when the
    rows have no backdoored model. Its clean_acc_cost is 0 by definition."""
    methods = list(methods)
    attacks = grid_attacks(rows)
    per_attack = _backdoored_means(_seed_means(rows, methods), attacks)
    if not any(per_attack.values()):
        return None
    base_acc = {a: (agg or {}).get("clean_acc") for a, agg in per_attack.items()}
    return _entry(REFERENCE_NAME, per_attack, base_acc, methods, attacks, candidate=False)


def leaderboard_columns(methods: list[str], attacks: list[str]) -> list[str]:
    """CSV column order: the summary fields, then per attack its seed count,
    clean accuracy, ASR, BEC and each method's re-activation / gUAA ASR."""
    cols = list(SUMMARY) + INTERVAL_FIELDS
    for a in attacks:
        cols += [f"seeds:{a}"] + [f"{col}:{a}" for col in PER_ATTACK]
        cols += [f"{kind}:{m}:{a}" for m in methods for kind in PER_METHOD]
    return cols


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
            _test(entry), _cost(entry["clean_acc_cost"]), _pct(entry["mean_asr"]), _num3(entry["mean_bec"]),
            entry["coverage"]]


def _markdown(board: list[dict], title: str, candidate: str, methods: list[str], attacks: list[str],
              reference_entry: dict | None, figure: str) -> str:
    header = ["rank", "defense", "headline: worst re-activation ASR %", "worst case (attack/method)",
              "gUAA ASR there %", "re-act > gUAA?", "clean-acc cost (pp)", "mean ASR %", "mean BEC", "coverage"]
    align = "|" + "|".join(["---:", "---", "---:", "---", "---:", "---"] + ["---:"] * 4) + "|"
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
    lines += ["## Per attack", "", "Mean over seeds.", "", "| " + " | ".join(cols) + " |",
              "|" + "|".join(["---", "---"] + ["---:"] * (len(cols) - 2)) + "|"]
    entries = board + ([reference_entry] if reference_entry is not None else [])
    for e in entries:
        for a in attacks:
            cells = [_name(e, candidate), str(a), str(e.get(f"seeds:{a}", 0)), _pct(e.get(f"clean_acc:{a}")),
                     _pct(e.get(f"asr:{a}")), _num3(e.get(f"bec:{a}"))]
            for m in methods:
                cells += [_pct(e.get(f"react_asr:{m}:{a}")), _pct(e.get(f"guaa_asr:{m}:{a}"))]
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
                      attacks: list[str], reference: dict | None = None) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.csv (every field, one row per
    defense, columns in leaderboard_columns order) and leaderboard.png into
    out_dir. `reference` (from reference()) is shown beneath the ranking and
    in the figure but kept out of the CSV, which holds the ranked entries only."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods, attacks = list(methods), list(attacks)
    paths = {"markdown": out_dir / "leaderboard.md", "csv": out_dir / "leaderboard.csv",
             "figure": out_dir / "leaderboard.png"}
    cols = leaderboard_columns(methods, attacks)
    extra = sorted(set().union(*board) - set(cols)) if board else []  # never drop a field silently
    _write_csv(board, cols + extra, paths["csv"])
    plot_leaderboard(board, paths["figure"], title, reference)
    paths["markdown"].write_text(_markdown(board, title, candidate, methods, attacks, reference,
                                           paths["figure"].name))
    return paths

