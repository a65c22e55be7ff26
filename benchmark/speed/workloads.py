"""The five timed workloads of `python -m benchmark.speed.bench`, each as the
suite's real path beside a plain-PyTorch loop doing the same work
(benchmark/speed/loops.py has what they share and how work is counted)."""
from __future__ import annotations

from typing import Callable

import torch

from benchmark.cell.stages.reactivation import SEARCH_PRECISION, attack_target
from lightning_modules.attacks.base import AttackModule
from lightning_modules.base import BackdoorStage
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.norms import project
from lightning_modules.reactivation.wba import reactivation_loss

from benchmark.speed.loops import SEED, TARGET_LABEL, Bench, Pair

# ---- 1. attack training (f_A) ---------------------------------------------------------------------

def attack_training(bench: Bench) -> Pair:
    s, dm = bench.sizes, bench.dm
    lr = 0.01  # the paper's training lr

    def suite(indices):
        model = bench.new_model()
        module = AttackModule(model, dm.num_classes, bench.trigger, bench.poison_idx, dm.num_train, TARGET_LABEL,
                              lr=lr, augment=dm.augment)
        loader = dm.loader(dm.train_set(indices), shuffle=True, batch_size=s.train_batch, seed=SEED)
        return bench.timed(model, lambda: bench.trainers.fit(module, loader, 1))

    def plain(indices):
        model = bench.new_model()
        loader = dm.loader(dm.train_set(indices), shuffle=True, batch_size=s.train_batch, seed=SEED)
        poison_mask = torch.zeros(dm.num_train, dtype=torch.bool)
        poison_mask[bench.poison_idx] = True
        poison_mask = poison_mask.to(bench.device)

        def run():
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(loader))
            for x, y, idx in loader:
                poisoned = poison_mask[idx]
                if bench.cuda:  # whole-batch, sync-free: the suite's GPU path for row-wise triggers
                    x = torch.where(poisoned[:, None, None, None], bench.trigger(x), x)
                    y = torch.where(poisoned, torch.full_like(y, TARGET_LABEL), y)
                elif poisoned.any():  # only the poisoned rows: the suite's CPU path
                    x, y = x.clone(), y.clone()
                    x[poisoned] = bench.trigger(x[poisoned])
                    y[poisoned] = TARGET_LABEL
                bench.plain_step(model, opt, sched, x, y)

        return bench.timed(model, run)

    warm = bench.subset(max(2 * s.train_batch, int(s.warmup_fraction * s.train_images)))
    suite(warm), plain(warm)
    return Pair("attack training", "training step", lambda: suite(None), lambda: plain(None))


# ---- 2. defense training (FT on the clean subset) --------------------------------------------------

def defense_training(bench: Bench) -> Pair:
    s, dm = bench.sizes, bench.dm
    # the ratio's ceil() may round one image up; the sizes promise exactly defense_subset
    clean_idx = dm.clean_subset_indices(s.defense_subset / dm.num_train, SEED)[:s.defense_subset]
    clean_set = dm.train_set(clean_idx)

    def build(epochs):
        model = bench.new_model()
        return model, DEFENSES.get("ft")(model, dm.num_classes, TARGET_LABEL, dm.augment,
                                         epochs=epochs, batch_size=s.defense_batch)

    def suite(epochs):
        model, module = build(epochs)

        def run():  # benchmark.cell.stages.defense.train_defense, minus loading f_A
            def fit(m, dataset):
                loader = dm.loader(dataset, shuffle=True, batch_size=m.hparams.batch_size, seed=SEED)
                bench.trainers.fit(m, loader, m.hparams.epochs)

            module.prepare(clean_set, fit)
            fit(module, clean_set)
            module.finalize()

        return bench.timed(model, run)

    def plain(epochs):
        model, module = build(epochs)  # the module only supplies FT's hyperparameters
        h = module.hparams
        loader = dm.loader(clean_set, shuffle=True, batch_size=h.batch_size, seed=SEED)

        def run():
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=h.epochs * len(loader))
            for _ in range(h.epochs):
                for x, y, _ in loader:
                    bench.plain_step(model, opt, sched, x, y)

        return bench.timed(model, run)

    warm_epochs = max(1, round(s.warmup_fraction * s.defense_epochs))
    suite(warm_epochs), plain(warm_epochs)
    return Pair("defense training (FT)", "training step", lambda: suite(s.defense_epochs),
                lambda: plain(s.defense_epochs))


# ---- 3. WBA: white-box delta updates -----------------------------------------------------------------

# The attacker's samples are drawn from the poisoned indices as drawn (the
# suite's `attacker_samples: poisoned`): speed does not depend on which
# images they are, and the sizes count exactly that many.


def wba_steps(bench: Bench) -> Pair:
    s, dm = bench.sizes, bench.dm
    cls = REACTIVATIONS.get("wba")
    attacker_idx = dm.attacker_indices(bench.poison_idx, s.wba_samples, SEED)
    data = dm.attacker_set(attacker_idx, bench.trigger)
    victim = bench.new_model()  # frozen by the method; shared by both sides (its weights never change)

    def build(epochs):
        params = {"epochs": epochs, "inner_steps": s.wba_inner_steps, "batch_size": s.wba_batch,
                  "num_samples": s.wba_samples}
        # benchmark.cell.stages.reactivation.reactivation_module with the cell's defaults
        return cls(attack_target(cls, victim, params, None), dm.image_shape, TARGET_LABEL, epsilon=0.05,
                   norm="linf", seed=SEED, **params)

    def loader(h):
        return dm.loader(data, shuffle=True, batch_size=min(h.batch_size, len(data)), drop_last=True, seed=SEED)

    def suite(epochs):
        # a stage receives the victim on the device; Lightning's teardown of the
        # previous fit left it on the CPU
        victim.to(bench.device)
        module = build(epochs)
        h = module.hparams
        return bench.timed(victim, lambda: bench.trainers.fit(module, loader(h), h.epochs,
                                                               precision=SEARCH_PRECISION))

    def plain(epochs):
        module = build(epochs)  # hyperparameters and the seeded initial delta
        h = module.hparams
        model = victim.to(bench.device).eval().requires_grad_(False)  # back on the device if the fit moved it
        delta = module.delta.detach().clone().to(bench.device).requires_grad_(True)
        batches = loader(h)

        def run():
            opt = torch.optim.SGD([delta], lr=h.lr)
            for _ in range(h.epochs):
                for x, _, _ in batches:
                    for _ in range(h.inner_steps):
                        loss = reactivation_loss(model((x + delta).clamp(0.0, 1.0)), h.target_label,
                                                 h.lambda_ce, h.lambda_other)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        with torch.no_grad():
                            delta.copy_(project(delta, h.norm, h.epsilon))

        return bench.timed(model, run)

    suite(1), plain(1)
    return Pair("WBA delta updates", "delta update", lambda: suite(s.wba_epochs), lambda: plain(s.wba_epochs))


# ---- 4. QBRA: oracle queries -------------------------------------------------------------------------------

def qbra_queries(bench: Bench) -> Pair:
    s, dm = bench.sizes, bench.dm
    cls = REACTIVATIONS.get("qbra")
    attacker_idx = dm.attacker_indices(bench.poison_idx, s.query_samples, SEED)
    data = dm.attacker_set(attacker_idx, bench.trigger)
    victim = bench.new_model()

    def suite(queries):
        # stop_asr=1 never stops early (the batch ASR cannot exceed 1), so the
        # whole budget is spent as on a victim that resists
        params = {"num_samples": s.query_samples, "batch_size": s.query_samples, "max_queries": queries,
                  "stop_asr": 1.0}
        oracle = attack_target(cls, victim, params, None)
        module = cls(oracle, dm.image_shape, TARGET_LABEL, epsilon=0.05, norm="linf", seed=SEED, **params)
        h = module.hparams
        loader = dm.loader(data, shuffle=True, batch_size=min(h.batch_size, len(data)), drop_last=True, seed=SEED)
        side = bench.timed(victim, lambda: bench.trainers.fit(module, loader, h.epochs, precision=SEARCH_PRECISION))
        side.extra["oracle_queries"] = oracle.queries
        return side

    def plain(queries):
        model = victim.eval()  # on the device still: the oracle holds it, Lightning never moved it
        loader = dm.loader(data, shuffle=True, batch_size=len(data), drop_last=True, seed=SEED)
        delta = torch.zeros((1, *dm.image_shape), device=bench.device)

        @torch.no_grad()
        def run():
            x = next(iter(loader))[0]
            for _ in range(queries):
                model((x + delta).clamp(0.0, 1.0)).float().softmax(dim=1)
            return {"oracle_queries": queries}

        return bench.timed(model, run)

    warm = max(2, int(s.warmup_fraction * s.queries))
    suite(warm), plain(warm)
    return Pair("QBRA queries", "query", lambda: suite(s.queries), lambda: plain(s.queries))


# ---- 5. evaluation (C-Acc, ASR, RA) ----------------------------------------------------------------

def evaluation(bench: Bench) -> Pair:
    dm = bench.dm
    model = bench.new_model()
    clean_loader = dm.loader(dm.clean_test_set())
    poisoned_loader = dm.loader(dm.poisoned_test_set(bench.trigger, TARGET_LABEL))

    def suite():
        model.to(bench.device)  # where a stage receives it (a test run's teardown moves it to the CPU)
        stage = BackdoorStage(model, dm.num_classes, TARGET_LABEL)
        return bench.timed(model, lambda: bench.trainers.evaluate(stage, clean_loader, poisoned_loader))

    def plain():
        model.to(bench.device).eval()  # back on the device if the test run moved it

        @torch.no_grad()
        def run():
            # counts stay on the device and are read once at the end (no per-batch host sync)
            correct = torch.zeros((), dtype=torch.long, device=bench.device)
            clean_total = 0
            for x, y, _ in clean_loader:
                correct += (model(x).argmax(dim=1) == y).sum()
                clean_total += len(y)
            hits = robust = non_target = torch.zeros((), dtype=torch.long, device=bench.device)
            for x, y, _ in poisoned_loader:
                preds, keep = model(x).argmax(dim=1), y != TARGET_LABEL
                hits = hits + (preds[keep] == TARGET_LABEL).sum()
                robust = robust + (preds[keep] == y[keep]).sum()
                non_target = non_target + keep.sum()
            n = max(int(non_target), 1)
            return {"test/clean_acc": int(correct) / max(clean_total, 1), "test/asr": int(hits) / n,
                    "test/ra": int(robust) / n}

        return bench.timed(model, run)

    suite(), plain()  # warm-up: the test sets are small, one pass each
    return Pair("evaluation", "batch", suite, plain)


#: workload name -> what builds and warms it up (the names key the rates of `bench.estimate_grid`)
WORKLOADS: dict[str, Callable[[Bench], Pair]] = {
    "attack": attack_training,
    "defense": defense_training,
    "wba": wba_steps,
    "qbra": qbra_queries,
    "evaluation": evaluation,
}
