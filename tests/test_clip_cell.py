"""A CLIP cell on tiny synthetic caption data: the whole stage graph (f_C,
poisoning, CleanCLIP and FT, BEC, WBA / QBRA / TBRA and gUAA), the defense
contract for every registered CLIP defense, frozen towers under
re-activation, the grid kind and spec validation."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark.cell import Cell
from benchmark.cell.stages import clip_training
from benchmark.cell import ClipCellSpec, spec_from_dict
from benchmark.errors import ConfigError, UnknownNameError
from benchmark.storage.store import ArtifactStore
from lightning_modules.clip.defenses import CLIP_DEFENSES

FAST_DEFENSES = {"cleanclip": {"epochs": 1, "batch_size": 32, "warmup_steps": 2, "text_operations": ["rs", "rd"]},
                 "ft": {"epochs": 1, "batch_size": 32, "warmup_steps": 2}}
FAST_REACTIVATIONS = {"wba": {"epochs": 1, "num_samples": 32, "batch_size": 16},
                      "qbra": {"max_queries": 20, "num_samples": 32, "batch_size": 32, "curve": [10, 20]},
                      "tbra": {"epochs": 1, "num_samples": 32, "batch_size": 16}}


def tiny_spec(**overrides) -> ClipCellSpec:
    fields = dict(dataset="synthetic_captions", arch="tiny", attack="badnets", defenses=("cleanclip", "ft"),
                  pretrain_epochs=2, pretrain_lr=1e-3, pretrain_batch_size=64, pretrain_warmup=4,
                  poison_epochs=2, poison_lr=5e-4, poison_batch_size=64, poison_warmup=2, poison_rate=0.1,
                  clean_ratio=0.3, reactivations=("wba",), bec_samples=64, bec_rank_samples=64,
                  trigger_params={"size": 4}, defense_params=FAST_DEFENSES,
                  reactivation_params={"wba": FAST_REACTIVATIONS["wba"]},
                  data_params={"num_train": 256, "num_test": 128, "size": 16})
    fields.update(overrides)
    return ClipCellSpec(**fields)


def make(tmp_path, **overrides) -> Cell:
    return Cell(tiny_spec(**overrides), ArtifactStore(tmp_path / "store"), data_dir=tmp_path / "data",
                    accelerator="cpu", progress=False)


def test_a_tiny_clip_cell_runs_every_stage_and_resumes_from_the_store(tmp_path):
    cell = make(tmp_path, reactivations=("wba", "qbra", "tbra"), reactivation_params=FAST_REACTIVATIONS)
    kinds = sorted({job.kind for job in cell.jobs})
    assert kinds == ["attack", "bec", "defense", "evaluate", "guaa", "reactivation", "train"]
    rows = {row["model"]: row for row in cell.run()}
    assert list(rows) == ["clean", "backdoored", "cleanclip", "ft"]
    # S(f_A, f_A) = 1; BEC is 0 / 1 for the references, or undefined (None)
    # when the few poisoning steps left f_A too close to f_C to normalise
    assert rows["backdoored"]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= rows["clean"]["similarity"] <= 1.0 + 1e-6
    if rows["clean"]["bec"] is not None:
        assert rows["clean"]["bec"] == pytest.approx(0.0, abs=1e-9)
        assert rows["backdoored"]["bec"] == pytest.approx(1.0, abs=1e-5)
    for name in ("cleanclip", "ft"):
        row = rows[name]
        for column in ("clean_acc", "asr", "similarity", "react_asr:wba", "guaa_asr:wba", "react_asr:qbra",
                       "guaa_asr:qbra", "react_asr:tbra", "guaa_asr:tbra"):
            assert row[column] is not None, column
            if isinstance(row[column], float) and column != "similarity":
                assert 0.0 <= row[column] <= 1.0
    poisoned = cell.store.load("attack", cell.job("attack", "badnets").key)
    assert poisoned.metrics["poisoned_pairs"] == len(cell.poison_idx) == round(0.1 * 256)
    # the ASR on the poisoned training pairs: their images with the trigger,
    # the non-target ones, scored by f_A's zero-shot classifier
    idx = cell.poison_idx[cell.dm.train_labels[cell.poison_idx] != cell.spec.target_label]
    victim = cell.ctx.load_model(poisoned).eval()
    with torch.no_grad():
        preds = victim(cell.ctx.trigger(cell.dm.train_images[idx].float() / 255)).argmax(1)
    assert poisoned.metrics["poisoned_train_asr"] == pytest.approx(
        (preds == cell.spec.target_label).float().mean().item(), abs=1e-6)
    # planned again from the same spec: same keys, nothing to run
    again = make(tmp_path, reactivations=("wba", "qbra", "tbra"), reactivation_params=FAST_REACTIVATIONS)
    assert [j.key for j in again.jobs] == [j.key for j in cell.jobs]
    assert all(again.store.has(j.kind, j.key) for j in again.jobs)


def test_poisoned_pairs_get_the_trigger_and_a_caption_naming_the_target(tmp_path):
    cell = make(tmp_path, reactivations=())
    ctx = cell.ctx
    captions = clip_training.training_captions(ctx)
    target = cell.dm.class_names[cell.spec.target_label]
    poisoned = set(cell.poison_idx.tolist())
    for i, caption in enumerate(captions):
        if i in poisoned:
            assert target in caption
        else:
            assert caption == cell.dm.captions[i]
    # the poisoning module triggers exactly the poisoned rows of a batch
    from lightning_modules.clip.poisoning import ClipPoisoning

    model = ctx.new_model(ctx.model_spec())
    module = ClipPoisoning(model, model.tokenize(captions), ctx.trigger, clip_training.poison_mask(ctx))
    idx = torch.arange(64)
    x = cell.dm.train_images[idx].float() / 255
    out, tokens = module.prepare_batch(x, idx)
    changed = (out != x).flatten(1).any(1)
    assert changed.tolist() == [i in poisoned for i in range(64)]
    assert torch.equal(tokens, model.tokenize(captions[:64]).to(torch.int32))


@pytest.mark.parametrize("name", CLIP_DEFENSES.names())
def test_a_clip_defense_sees_only_the_clean_pairs_never_the_trigger(tmp_path, name):
    """The contract of every registered CLIP defense: its training batches are
    images of the defender's clean subset, re-indexed, with their own clean
    captions; the trigger is never applied while it runs."""
    cell = make(tmp_path, defenses=(name,), reactivations=(), defense_params={name: FAST_DEFENSES.get(name, {})})
    attack = cell.job("attack", "badnets")
    for job in cell.jobs:
        if job.kind in ("train", "attack"):
            cell.execute(job)
    ctx, dm = cell.ctx, cell.dm
    calls = []
    real_trigger = ctx.trigger

    class CountingTrigger:
        def __getattr__(self, item):
            return getattr(real_trigger, item)

        def __call__(self, images):
            calls.append(len(images))
            return real_trigger(images)

    ctx.__dict__["trigger"] = CountingTrigger()
    seen = []
    fit = ctx.trainers.fit

    def watching_fit(module, loader, epochs, **kwargs):
        for x, _, positions in loader:
            seen.append((x.clone(), positions.clone()))
        token_tables = {k: v for k, v in module.named_buffers() if "tokens" in k and "class" not in k}
        assert "poison_mask" not in dict(module.named_buffers())
        captions = [dm.captions[i] for i in ctx.clean_idx.tolist()]
        assert torch.equal(token_tables["tokens"], module.model.tokenize(captions).to(torch.int32))
        return fit(module, loader, epochs, **kwargs)

    ctx.trainers.fit = watching_fit
    cell.train_defense(name, cell.store.load(attack.kind, attack.key))
    assert seen, "the defense never trained"
    assert calls == []
    clean_images = dm.train_images[ctx.clean_idx].float() / 255
    for x, positions in seen:
        assert int(positions.max()) < len(ctx.clean_idx)
        torch.testing.assert_close(x, clean_images[positions])


def test_reactivation_keeps_both_towers_frozen_and_in_eval_mode(tmp_path):
    from lightning_modules.reactivation import REACTIVATIONS

    cell = make(tmp_path, reactivations=("wba",))
    for job in cell.jobs:
        if job.kind in ("train", "attack"):
            cell.execute(job)
    ctx = cell.ctx
    victim = ctx.load_model(cell.store.load("attack", cell.job("attack", "badnets").key))
    before = {k: v.clone() for k, v in victim.clip.clip.state_dict().items()}
    module = REACTIVATIONS.get("wba")(victim, cell.dm.image_shape, 0, epsilon=0.05, norm="linf", seed=0,
                                      epochs=2, num_samples=32, batch_size=16)
    idx = cell.dm.attacker_indices(cell.poison_idx, 32, 0)
    data = cell.dm.attacker_set(idx, ctx.trigger)
    modes = []  # the image tower's mode at every forward during the search
    victim.clip.clip.visual.register_forward_hook(lambda m, i, o: modes.append(m.training))
    ctx.trainers.fit(module, cell.dm.loader(data, shuffle=True, batch_size=16, drop_last=True, seed=0), 2,
                     precision="32-true")
    assert not any(p.requires_grad for p in victim.parameters())
    assert modes and not any(modes)
    for k, v in victim.clip.clip.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} moved"
    assert module.delta.abs().max() <= 0.05 + 1e-6
    assert module.delta.abs().sum() > 0


def test_the_clip_grid_kind_plans_clip_cells(tmp_path):
    from sweeps.graph import build_graph
    from sweeps.grid import load_grid

    grid = load_grid("sweeps/clip-tiny.yaml")
    grid.store, grid.data_dir = tmp_path / "store", tmp_path / "data"
    assert grid.kind == "clip"
    [spec] = grid.cells()
    assert isinstance(spec, ClipCellSpec)
    assert isinstance(spec_from_dict(spec.to_dict()), ClipCellSpec)
    graph = build_graph(grid)
    assert {node.job.kind for node in graph.nodes.values()} >= {"train", "attack", "defense", "bec", "reactivation"}


@pytest.mark.parametrize("overrides, message", [
    ({"defenses": ("nad",)}, "CLIP defense 'nad'"),
    ({"defenses": ("none",)}, "'none' is not a CLIP defense"),
    ({"dataset": "synthetic"}, "has no captions"),
    ({"attack": "wanet"}, "CLIP attack 'wanet'"),
    ({"defense_params": {"cleanclip": {"epochs": -1}}}, "epochs=-1 is not allowed"),
    ({"defense_params": {"ft": {"inmodal_weight": 1.0}}}, "unknown parameter 'inmodal_weight'"),
    ({"trigger_params": {"size": 0}}, "size=0 is not allowed"),
])
def test_bad_clip_cell_values_are_one_line_errors(overrides, message):
    spec = tiny_spec(**overrides)
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        spec.validate()


def test_spec_fields_round_trip_through_their_dict():
    spec = tiny_spec()
    data = spec.to_dict()
    assert data["kind"] == "clip"
    again = ClipCellSpec.from_dict(data)
    assert dataclasses.asdict(again) == dataclasses.asdict(spec)
