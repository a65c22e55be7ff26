"""Results rows of a cell, read from the store: the one place where the
columns of the results table are assembled (report, W&B, score read them).

One row per model: the clean model f_C, the backdoored model f_A, each
defense, and with weight-space re-activation its control, exact
purification. The clean and backdoored models and their BEC must be in the store
(StoreError otherwise); a defense appears when its model and BEC are;
re-activation and control columns appear for the jobs that have run."""
from __future__ import annotations

from benchmark.measures.bec import backdoor_existence_coefficient, min_max_bec
from benchmark.errors import StoreError
from benchmark.measures.metrics import defense_effectiveness_rating
from benchmark.cell.spec import SpecBase
from benchmark.cell.stages import bec, evaluate, qra, reactivation, retune
from benchmark.cell.job import Plan, StageJob
from benchmark.cell.stages.training import CLEAN_LABEL
from benchmark.storage.store import ArtifactStore

CLEAN_ROW, BACKDOORED_ROW = "clean", "backdoored"


def model_jobs(spec: SpecBase, plan: Plan) -> dict[str, StageJob]:
    """The job holding each row's model; "none" is f_A itself."""
    jobs = {CLEAN_ROW: plan.job("train", CLEAN_LABEL), BACKDOORED_ROW: plan.job("attack", spec.attack)}
    jobs.update({d: jobs[BACKDOORED_ROW] if d == "none" else plan.job("defense", d) for d in spec.defenses})
    if spec.retunings:  # the weight-space control, a row of its own
        jobs[retune.EXACT_PURIFICATION] = plan.job("purify", retune.EXACT_PURIFICATION)
    return jobs


def cell_rows(spec: SpecBase, store: ArtifactStore, plan: Plan) -> list[dict]:
    def metrics(job: StageJob) -> dict:
        return store.load(job.kind, job.key).metrics

    def metrics_if_run(job: StageJob | None) -> dict | None:
        # Optional columns may be missing when such a job failed or has not run.
        if job is None or not store.has(job.kind, job.key):
            return None
        return metrics(job)

    models = model_jobs(spec, plan)
    labels = [CLEAN_ROW, BACKDOORED_ROW] + [
        d for d in models if d not in (CLEAN_ROW, BACKDOORED_ROW)
        and metrics_if_run(models[d]) is not None and metrics_if_run(plan.find("bec", bec.label(d))) is not None]
    sims = {label: metrics(plan.job("bec", bec.label(label)))["similarity"] for label in labels}
    minmax = min_max_bec(sims, CLEAN_ROW, BACKDOORED_ROW, aliases_of_backdoored=("none",))
    base = metrics(models[BACKDOORED_ROW])
    rows = []
    for label in labels:
        m = metrics(plan.job("evaluate", evaluate.LABEL)) if label == CLEAN_ROW else metrics(models[label])
        meta = store.load(models[label].kind, models[label].key).meta
        row = {"dataset": spec.dataset, "arch": spec.arch, "attack": spec.attack, "model": label, "seed": spec.seed,
               "clean_acc": m["test/clean_acc"], "asr": m["test/asr"], "ra": m["test/ra"], "der": None,
               "bec": backdoor_existence_coefficient(sims[label], sims[CLEAN_ROW]), "bec_minmax": minmax[label],
               "similarity": sims[label], "seconds": 0.0 if label == "none" else meta.get("seconds")}
        if label not in (CLEAN_ROW, BACKDOORED_ROW):
            row["der"] = defense_effectiveness_rating(base["test/asr"], base["test/clean_acc"],
                                                      m["test/asr"], m["test/clean_acc"])
            decided = m.get("defense") or {}
            for key, value in decided.items():
                row[f"defense:{key}"] = value
            if decided.get("unchanged"):
                row["note"] = "nothing flagged: model returned unchanged"
        for method in spec.reactivations:
            row.update(_reactivation_columns(method, label, plan, metrics_if_run))
            if spec.epsilon_curve:
                row.update(_epsilon_curve(spec, method, label, plan, metrics_if_run, row))
        for method in spec.retunings:
            # P-ASR: the model's ASR after weight-space re-activation (its O-ASR is `asr`)
            m = metrics_if_run(plan.find("retune", retune.label(method, label)))
            if m is not None:
                row.update({f"retune_asr:{method}": m["test/asr"], f"retune_acc:{method}": m["test/clean_acc"],
                            f"retune_ra:{method}": m["test/ra"]})
        m = metrics_if_run(plan.find("qra", qra.label(label))) if spec.qra else None
        if m is not None:  # QRA's ASR and targeted fooling rate, on the model and on f_C
            row.update({"qra_asr": m["asr:model"], "qra_fooling_rate": m["fooling_rate:model"],
                        "qra_asr:clean_model": m["asr:clean_model"],
                        "qra_fooling_rate:clean_model": m["fooling_rate:clean_model"]})
        rows.append(row)
    return rows


def _reactivation_columns(method: str, label: str, plan: Plan, metrics_if_run) -> dict:
    row = {}
    for use_trigger, prefix in ((True, "react"), (False, "guaa")):
        m = metrics_if_run(plan.find(reactivation.kind(use_trigger), reactivation.label(method, label)))
        if m is None:
            continue
        row[f"{prefix}_asr:{method}"] = m["test/asr"]
        if use_trigger:
            row[f"react_ra:{method}"] = m["test/ra"]
        for key, value in m.items():
            if key.startswith("test/asr@"):
                row[f"{prefix}_asr:{method}@{key.split('@', 1)[1]}"] = value
    m = metrics_if_run(plan.find("controls", reactivation.label(method, label)))
    if m is not None:
        for case, curve in m["noise_asr"].items():
            for level, value in curve.items():
                row[f"noise_asr:{method}:{case}@{level}"] = value
        for pair, value in m["feature_cka"].items():
            row[f"feature_cka:{method}:{pair}"] = value
    return row


def _epsilon_curve(spec: SpecBase, method: str, label: str, plan: Plan, metrics_if_run, row: dict) -> dict:
    """The method's ASR and its gUAA control at each budget of the curve,
    the cell's own included (`react_asr:m@eps=e`, `guaa_asr:m@eps=e`: the
    whole curve in one set of columns), and `eps_star:m`: the smallest
    budget of the curve (the cell's own included) at which re-activation ASR
    exceeds gUAA by `epsilon_margin`; None where it never does or a point
    is missing (a defense the curve did not run on has no columns)."""
    out = {}
    points = {spec.epsilon: (row.get(f"react_asr:{method}"), row.get(f"guaa_asr:{method}"))}
    for eps in spec.epsilon_curve:
        react, guaa = (metrics_if_run(plan.find(reactivation.kind(t), reactivation.label(method, label, eps)))
                       for t in (True, False))
        if react is not None:
            out[f"react_asr:{method}@eps={eps:g}"] = react["test/asr"]
        if guaa is not None:
            out[f"guaa_asr:{method}@eps={eps:g}"] = guaa["test/asr"]
        points[eps] = (react and react["test/asr"], guaa and guaa["test/asr"])
    if not out:
        return out
    own_react, own_guaa = points[spec.epsilon]
    if own_react is not None:
        out[f"react_asr:{method}@eps={spec.epsilon:g}"] = own_react
    if own_guaa is not None:
        out[f"guaa_asr:{method}@eps={spec.epsilon:g}"] = own_guaa
    out[f"eps_star:{method}"] = next(
        (eps for eps, (react, guaa) in sorted(points.items())
         if react is not None and guaa is not None and react - guaa >= spec.epsilon_margin), None)
    return out


def stored_rows(cells) -> tuple[list[dict], list[str]]:
    """The rows of every cell whose reference models are in the store, and
    the names of those left out (some job failed or has not run): what the
    report, the results page and `bdbench score` read."""
    rows, missing = [], []
    for cell in cells:
        try:
            rows += cell.rows()
        except (StoreError, KeyError):
            missing.append(cell.name)
    return rows, missing
