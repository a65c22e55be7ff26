"""Leaderboard of defenses, its ranking: which one leaves the least backdoor
to wake up (benchmark/reporting/leaderboard.py writes it out).

The paper's claim is that a defense which lowers the attack success rate (ASR)
of the original trigger can still leave the backdoor in the model, dormant: a
small universal perturbation δ added on top of the trigger re-activates it.
So the trigger's ASR after the defense is not the number to rank by; what
matters is how much ASR an attacker gets back.

Headline (column "worst_reactivation_asr", lower is better):

    worst_reactivation_asr(D) = max(worst_input_asr(D), worst_weight_asr(D))
    worst_input_asr(D)  = max over attacks a and re-activation methods m
                          of react_asr(D, a, m)
    worst_weight_asr(D) = max over attacks a and weight-space methods r
                          of retune_asr(D, a, r)

where react_asr(D, a, m) is the ASR of the original trigger plus the δ that
method m found against defense D's model under attack a (input space, Zhu et
al.), and retune_asr(D, a, r) the ASR of the original trigger after method r
fine-tuned a copy of D's model on a small attacker-held set (weight space,
Min et al.'s P-ASR), each first averaged over seeds. Both parts are shown
beside the headline. It is the worst case in the grid on purpose: a defense has removed the
backdoor only if even the strongest re-activation attack, on the attack where
it works best, cannot bring it back; an average would let one dormant backdoor
hide behind several removed ones. "worst_case" names that attack/method pair
(the first in grid order on a tie; "(weight)" marks a weight-space method) and "coverage" = k/n says how many of the
n attack x method pairs had a re-activation result: a headline over fewer
pairs is a weaker claim. Without any result the headline is None and the
defense is ranked last.

"worst_guaa_asr" is the control at that same attack/method (input space; a
weight-space worst case has its controls as rows of their own: RA on the
clean model and on exact purification): gUAA runs the same
optimisation on clean inputs, without the trigger, so it measures how much ASR
a generic universal adversarial perturbation reaches on its own. A headline
well above its gUAA is the backdoor coming back; a headline close to it is
mostly the model's ordinary adversarial fragility.

Ties on the headline go to the defense with the lower "clean_acc_cost": the
mean over attacks of (clean accuracy of the undefended backdoored model f_A
minus that of the defended model), i.e. the accuracy the defense costs.

Rows are those of a grid (see benchmark.reporting.tables): the models "clean",
"backdoored" and its alias "none" are references, never ranked; reference()
gives f_A's numbers in the same fields so a reader sees what the defenses
start from (its re-activation ASR is usually near 1). Attacks are keyed by
name, or by "dataset/arch/attack" when the rows span several datasets or
architectures, so that different settings are never averaged together.
Missing values (absent key, None, NaN) are skipped, never raise.
"""
from __future__ import annotations

import statistics

from benchmark.reporting.tables import BACKDOORED, CLEAN, ordered, retuning_names, summarize

ALIAS = "none"  # the "no defense" entry of a grid: f_A itself
#: the weight-space control (benchmark/cell/stages/retune.py): a reference row, never ranked
EXACT_PURIFICATION = "exact-purification"
REFERENCES = (CLEAN, BACKDOORED, ALIAS, EXACT_PURIFICATION)
REFERENCE_NAME = "backdoored f_A (no defense)"
PER_ATTACK = ("clean_acc", "asr", "bec")
PER_METHOD = ("react_asr", "guaa_asr")
SUMMARY = ["rank", "defense", "candidate", "worst_reactivation_asr", "worst_case", "worst_guaa_asr",
           "worst_input_asr", "worst_weight_asr", "clean_acc_cost", "mean_asr", "mean_bec", "coverage"]
# The statistics of the headline's worst case over its seeds (benchmark.measures.intervals):
# the 95 % intervals of its re-activation and gUAA ASR, and the one-sided paired
# test that re-activation beats gUAA there (None with one seed).
INTERVAL_FIELDS = ["worst_reactivation_asr_low", "worst_reactivation_asr_high", "worst_guaa_asr_low",
                   "worst_guaa_asr_high", "worst_gap_p", "worst_gap_significant", "worst_case_seeds"]


# ---- aggregation ------------------------------------------------------------------------
def _attack_key(rows: list[dict]):
    several = len(ordered((r.get("dataset"), r.get("arch")) for r in rows)) > 1
    if several:
        return lambda r: f"{r.get('dataset')}/{r.get('arch')}/{r.get('attack')}"
    return lambda r: str(r.get("attack"))


def grid_attacks(rows: list[dict]) -> list[str]:
    """The grid's attacks in the order of the rows, keyed as the leaderboard keys them."""
    key = _attack_key(rows)
    return ordered(key(r) for r in rows)


def _seed_means(rows: list[dict], methods: list[str], retunings: list[str] = ()) -> dict[tuple[str, str], dict]:
    """(attack, model) -> each metric's mean over that pair's seeds (finite
    values only; None without one), "<metric>_low"/"_high" its 95 %
    interval (None below two seeds), per method "gap_p:<m>" /
    "gap_significant:<m>" the paired test of re-activation over gUAA, and
    "seeds" = rows in the group: read from benchmark.reporting.tables.summarize, which
    groups the rows the same way (dataset, arch, attack, model)."""
    key = _attack_key(rows)
    metrics = list(PER_ATTACK) + [f"{kind}:{m}" for m in methods for kind in PER_METHOD]
    metrics += [f"retune_asr:{r}" for r in retunings]
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
           methods: list[str], attacks: list[str], candidate: bool, retunings: list[str] = ()) -> dict:
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
    worst_input = worst
    worst_weight = None
    for a in attacks:
        agg = per_attack.get(a) or {}
        for r in retunings:
            retuned = entry[f"retune_asr:{r}:{a}"] = agg.get(f"retune_asr:{r}")
            if retuned is None:
                continue
            covered += 1
            worst_weight = retuned if worst_weight is None else max(worst_weight, retuned)
            # the input-space case stays the worst on a tie (its gUAA control is in the table)
            if worst is None or retuned > worst:
                worst, worst_case, worst_guaa = retuned, f"{a}/{r} (weight)", None
                worst_stats = {"worst_reactivation_asr_low": agg.get(f"retune_asr:{r}_low"),
                               "worst_reactivation_asr_high": agg.get(f"retune_asr:{r}_high"),
                               "worst_case_seeds": agg.get("seeds", 0)}
    entry.update(worst_reactivation_asr=worst, worst_case=worst_case, worst_guaa_asr=worst_guaa,
                 worst_input_asr=worst_input, worst_weight_asr=worst_weight,
                 clean_acc_cost=_mean(costs), mean_asr=_mean(asrs), mean_bec=_mean(becs),
                 coverage=f"{covered}/{len(attacks) * (len(methods) + len(retunings))}")
    entry.update({k: worst_stats.get(k) for k in INTERVAL_FIELDS})
    return entry


def _backdoored_means(means: dict, attacks: list[str]) -> dict[str, dict | None]:
    """f_A's seed means per attack; the "none" alias stands in for an attack
    whose grid has no "backdoored" row, since it is the same model."""
    return {a: means.get((a, BACKDOORED)) or means.get((a, ALIAS)) for a in attacks}


def leaderboard(rows: list[dict], candidate: str, methods: list[str],
                retunings: list[str] | None = None) -> list[dict]:
    """One entry per defense in the rows (every model but the references),
    ranked by worst_reactivation_asr ascending (None last), ties by
    clean_acc_cost ascending, then by first appearance in the rows.
    `retunings`: the weight-space methods (default: those in the rows)."""
    methods = list(methods)
    retunings = _retunings(rows, retunings)
    attacks = grid_attacks(rows)
    means = _seed_means(rows, methods, retunings)
    reference_means = _backdoored_means(means, attacks)
    base_acc = {a: (agg or {}).get("clean_acc") for a, agg in reference_means.items()}
    defenses = [m for m in ordered(str(r.get("model")) for r in rows) if m not in REFERENCES]
    board = [_entry(d, {a: means.get((a, d)) for a in attacks}, base_acc, methods, attacks, d == candidate,
                    retunings) for d in defenses]

    def order(entry):
        head, cost = entry["worst_reactivation_asr"], entry["clean_acc_cost"]
        return (head is None, head if head is not None else 0.0, cost is None, cost if cost is not None else 0.0)

    board.sort(key=order)  # stable: equal keys keep the rows' order
    for i, entry in enumerate(board, start=1):
        entry["rank"] = i if entry["worst_reactivation_asr"] is not None else None
    return board


def reference(rows: list[dict], methods: list[str], retunings: list[str] | None = None) -> dict | None:
    """f_A (no defense) in the leaderboard's fields, unranked; None when the
    rows have no backdoored model. Its clean_acc_cost is 0 by definition."""
    methods = list(methods)
    retunings = _retunings(rows, retunings)
    attacks = grid_attacks(rows)
    per_attack = _backdoored_means(_seed_means(rows, methods, retunings), attacks)
    if not any(per_attack.values()):
        return None
    base_acc = {a: (agg or {}).get("clean_acc") for a, agg in per_attack.items()}
    return _entry(REFERENCE_NAME, per_attack, base_acc, methods, attacks, candidate=False, retunings=retunings)


def _retunings(rows: list[dict], given: list[str] | None) -> list[str]:
    return list(given) if given is not None else retuning_names(set().union(*rows) if rows else set())


def leaderboard_columns(methods: list[str], attacks: list[str], retunings: list[str] = ()) -> list[str]:
    """CSV column order: the summary fields, then per attack its seed count,
    clean accuracy, ASR, BEC, each method's re-activation / gUAA ASR and each
    weight-space method's P-ASR."""
    cols = list(SUMMARY) + INTERVAL_FIELDS
    for a in attacks:
        cols += [f"seeds:{a}"] + [f"{col}:{a}" for col in PER_ATTACK]
        cols += [f"{kind}:{m}:{a}" for m in methods for kind in PER_METHOD]
        cols += [f"retune_asr:{r}:{a}" for r in retunings]
    return cols
