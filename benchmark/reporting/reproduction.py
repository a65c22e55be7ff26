"""The results page of a capacity ladder (`sweeps/reproduce.yaml`): the paper's
table and Figure 1 per rung with 95 % intervals over seeds, the re-activation
gap and BEC against capacity, the three claims checked on the numbers, the
settings, the commit and the cost of every rung, written from the store.

A rung is one architecture of the grid (`small_cnn`, `preact_resnet18-w8`,
...). The claims (stated before measuring, in the slow test
`tests/test_reproduce.py` as well):

1. Attacks: f_A's ASR >= 0.9 at a clean accuracy within 2 points of f_C, on
   every rung and attack (seed means).
2. Where a defense brings ASR below 0.2, BEC predicts re-activation: a defense
   with BEC > 0 is re-activated significantly above its gUAA control, one with
   BEC < 0 is not (one-sided paired t-test over seeds, benchmark.measures.intervals;
   rows with one seed have no test and are "undecided").
3. The paper's regime (ASR < 0.2, BEC > 0.5, WBA - gUAA > 0.3, seed means)
   appears on at least one rung.
"""
from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass, field

from benchmark.reporting.report import BACKDOORED, CLEAN, _fmt_gap

#: claim 1: the attack implants the backdoor without costing clean accuracy
ATTACK_ASR, ATTACK_ACC_DROP = 0.9, 0.02
#: a defense "brought ASR down" below this (claims 2 and 3)
REMOVED_ASR = 0.2
#: claim 3: the paper's dormant-backdoor regime
REGIME_BEC, REGIME_GAP = 0.5, 0.3
METHOD = "wba"


@dataclass
class Claim:
    number: int
    statement: str
    held: bool | None  # None: undecided (no row could test it)
    evidence: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "undecided"}[self.held]


def _by(summary: list[dict], arch: str, attack: str, model: str) -> dict | None:
    return next((a for a in summary if (a["arch"], a["attack"], a["model"]) == (arch, attack, model)), None)


def _rungs(summary: list[dict]) -> list[str]:
    return list(dict.fromkeys(a["arch"] for a in summary))


def _defended(summary: list[dict]) -> list[dict]:
    return [a for a in summary if a["model"] not in (CLEAN, BACKDOORED, "none")]


def claim_attacks(summary: list[dict]) -> Claim:
    claim = Claim(1, f"f_A's ASR >= {ATTACK_ASR} at a clean accuracy within {100 * ATTACK_ACC_DROP:.0f} points "
                     "of f_C, on every rung and attack", None)
    results = []
    for agg in (a for a in summary if a["model"] == BACKDOORED):
        clean = _by(summary, agg["arch"], agg["attack"], CLEAN)
        asr, acc = agg.get("asr_mean"), agg.get("clean_acc_mean")
        clean_acc = clean.get("clean_acc_mean") if clean else None
        if asr is None or acc is None or clean_acc is None:
            continue
        ok = asr >= ATTACK_ASR and clean_acc - acc <= ATTACK_ACC_DROP
        results.append(ok)
        claim.evidence.append(f"{agg['arch']} / {agg['attack']}: ASR {100 * asr:.1f} %, C-Acc {100 * acc:.1f} % "
                              f"vs f_C {100 * clean_acc:.1f} % ({'ok' if ok else 'fails'})")
    claim.held = all(results) if results else None
    return claim


def claim_bec_predicts(summary: list[dict]) -> Claim:
    claim = Claim(2, f"where a defense brings ASR below {REMOVED_ASR}, BEC > 0 means WBA re-activates it "
                     "significantly above its gUAA control and BEC < 0 means it does not (paired over seeds)", None)
    results = []
    for agg in _defended(summary):
        asr, bec = agg.get("asr_mean"), agg.get("bec_mean")
        if asr is None or bec is None or asr >= REMOVED_ASR:
            continue
        significant = agg.get(f"gap:{METHOD}_significant")
        where = f"{agg['arch']} / {agg['attack']} / {agg['model']}"
        gap = _fmt_gap(agg, METHOD)
        if significant is None:
            claim.evidence.append(f"{where}: BEC {bec:.2f}, re-act − gUAA {gap}: undecided")
            continue
        ok = significant == (bec > 0)
        results.append(ok)
        claim.evidence.append(f"{where}: BEC {bec:.2f}, re-act − gUAA {gap} "
                              f"({'agrees' if ok else 'disagrees'})")
    claim.held = all(results) if results else None
    return claim


def claim_regime(summary: list[dict]) -> Claim:
    claim = Claim(3, f"the paper's regime (ASR < {REMOVED_ASR}, BEC > {REGIME_BEC}, WBA − gUAA > {REGIME_GAP}) "
                     "appears on at least one rung", False)
    for agg in _defended(summary):
        asr, bec, gap = agg.get("asr_mean"), agg.get("bec_mean"), agg.get(f"gap:{METHOD}_mean")
        if asr is None or bec is None or gap is None or asr >= REMOVED_ASR:
            continue
        inside = bec > REGIME_BEC and gap > REGIME_GAP
        claim.held = claim.held or inside
        claim.evidence.append(f"{agg['arch']} / {agg['attack']} / {agg['model']}: ASR {100 * asr:.1f} %, "
                              f"BEC {bec:.2f}, WBA − gUAA {100 * gap:.1f} pts ({'in' if inside else 'outside'})")
    if not claim.evidence:
        claim.evidence.append(f"no defense brought ASR below {REMOVED_ASR}")
    return claim


def claims(summary: list[dict]) -> list[Claim]:
    return [claim_attacks(summary), claim_bec_predicts(summary), claim_regime(summary)]


# ---- cost and capacity --------------------------------------------------------------------
def parameter_count(arch: str, dm) -> int:
    from benchmark.models import build_model

    c, h, _ = dm.image_shape
    return sum(p.numel() for p in build_model(arch, dm.num_classes, c, h, dm.mean, dm.std).parameters())


def rung_costs(graph) -> dict[str, dict]:
    """Per architecture: jobs planned and done, the sum of the done jobs'
    seconds (several run at once) and the wall span from the first job's
    start to the last one's end (None before any), from the store's records."""
    out: dict[str, dict] = {}
    for node in graph.nodes.values():
        cost = out.setdefault(node.cell.spec.arch, {"planned": 0, "jobs": 0, "job_seconds": 0.0,
                                                    "start": None, "end": None})
        cost["planned"] += 1
        if not graph.store.has(node.job.kind, node.job.key):
            continue
        meta = graph.store.load(node.job.kind, node.job.key).meta
        seconds = float(meta.get("seconds") or 0.0)
        end = datetime.datetime.strptime(meta["created"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        cost["jobs"] += 1
        cost["job_seconds"] += seconds
        cost["start"] = end - seconds if cost["start"] is None else min(cost["start"], end - seconds)
        cost["end"] = end if cost["end"] is None else max(cost["end"], end)
    return out


def commit() -> str:
    """The commit the page was written at, "+ local changes" when the tree differs."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}{' + local changes' if dirty else ''}"
