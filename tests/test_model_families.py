"""One cell abstraction for every model family: the classifier and CLIP
cells are the same `Cell`, planned by the same code, differing only through
their `ModelFamily`; specs round-trip through their dicts by family; the
modules that moved keep their old import paths."""
from __future__ import annotations

import dataclasses
import importlib

import pytest

from benchmark.cell import Cell, CellSpec, ClipCellSpec, spec_from_dict
from benchmark.cell.family import FAMILY_MODULES, ModelFamily, family
from benchmark.cell.spec import SpecBase
from benchmark.errors import ConfigError
from benchmark.storage.store import ArtifactStore
from tests.conftest import fast_spec
from tests.test_clip_cell import tiny_spec

SHARED_KINDS = {"evaluate", "bec", "reactivation", "guaa", "defense"}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("families")
    store = ArtifactStore(tmp / "store")
    classifier = Cell(fast_spec(defenses=("ft",)), store, data_dir=tmp / "data", accelerator="cpu", progress=False)
    clip = Cell(tiny_spec(defenses=("ft",)), store, data_dir=tmp / "data", accelerator="cpu", progress=False)
    return classifier, clip


def test_both_families_are_one_cell_class_with_one_plan(cells):
    classifier, clip = cells
    assert type(classifier) is type(clip) is Cell
    assert (classifier.family.kind, clip.family.kind) == ("classifier", "clip")
    assert isinstance(classifier.family, ModelFamily) and isinstance(clip.family, ModelFamily)
    for cell in cells:
        kinds = {job.kind for job in cell.jobs}
        assert SHARED_KINDS <= kinds
        labels = {f"{job.kind}/{job.label}" for job in cell.jobs}
        assert {"defense/ft", "bec/S(f_A, ft)", "bec/S(f_A, clean)", "reactivation/wba vs ft",
                "guaa/wba vs ft", "reactivation/wba vs backdoored"} <= labels
    # the family decides how f_C and f_A are made: CLIP's f_A starts from f_C
    clip_attack = clip.job("attack", "badnets")
    assert set(clip_attack.deps) == {"clean"}
    assert "clean" not in classifier.job("attack", "badnets").deps
    assert clip.name.startswith("clip/") and not classifier.name.startswith("clip/")


def test_the_classifier_view_is_what_shared_stages_measure(cells):
    classifier, clip = cells
    from benchmark.models.clip_model import ClipModel, ZeroShotClassifier

    spec = clip.ctx.model_spec()
    trainable = clip.ctx.plan_trainable(spec)
    assert isinstance(trainable, ClipModel)
    assert isinstance(clip.ctx.plan_model(spec), ZeroShotClassifier)
    layers = clip.ctx.plan_model(spec).bec_layers
    assert layers, "BEC needs named layers in the classifier view"
    plain = classifier.ctx.model_spec()
    assert type(classifier.ctx.plan_model(plain)) is type(classifier.ctx.plan_trainable(plain))


@pytest.mark.parametrize("spec", [fast_spec(), tiny_spec()], ids=["classifier", "clip"])
def test_specs_round_trip_through_their_dicts_by_family(spec):
    data = spec.to_dict()
    again = spec_from_dict(data)
    assert type(again) is type(spec) and again == spec
    # the default family writes no kind, so dicts written before families existed still read
    assert ("kind" in data) == (spec.kind != "classifier")


def test_shared_fields_are_declared_once_and_families_only_add_or_redefault():
    shared = [f.name for f in dataclasses.fields(SpecBase)]
    for spec_class in (CellSpec, ClipCellSpec):
        names = [f.name for f in dataclasses.fields(spec_class)]
        assert names[:len(shared)] == shared
    assert CellSpec().clean_subset == "any" and ClipCellSpec().clean_subset == "non_poisoned"
    assert "epochs" in {f.name for f in dataclasses.fields(CellSpec)} - set(shared)
    assert "pretrained" in {f.name for f in dataclasses.fields(ClipCellSpec)} - set(shared)


def test_an_unknown_family_is_a_one_line_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model family 'speech'.*classifier, clip"):
        spec_from_dict({"kind": "speech"})
    assert set(FAMILY_MODULES) == {"classifier", "clip"}
    assert family("clip").spec_class is ClipCellSpec


def test_clip_defender_draws_from_any_pair_when_asked(tmp_path):
    """CLIP's defender holds never-poisoned pairs by default (CleanCLIP's
    separate clean set); `clean_subset: any` is the classifiers' rule, and
    is part of the defense's key."""
    store = ArtifactStore(tmp_path / "store")
    kwargs = dict(data_dir=tmp_path / "data", accelerator="cpu", progress=False)
    spec = dict(defenses=("ft",), reactivations=(), clean_ratio=0.9)
    default = Cell(tiny_spec(**spec), store, **kwargs)
    anyone = Cell(tiny_spec(clean_subset="any", **spec), store, **kwargs)
    poisoned = set(default.poison_idx.tolist())
    assert not poisoned & set(default.clean_idx.tolist())
    assert poisoned & set(anyone.clean_idx.tolist())
    assert default.job("defense", "ft").key != anyone.job("defense", "ft").key


@pytest.mark.parametrize("old,new", [
    ("benchmark.schema", "benchmark.extension.schema"),
    ("benchmark.contract", "benchmark.extension.contract"),
    ("benchmark.store", "benchmark.storage.store"),
    ("benchmark.report", "benchmark.reporting.report"),
    ("benchmark.bec", "benchmark.measures.bec"),
    ("benchmark.stages.bec", "benchmark.cell.stages.bec"),
    ("benchmark.spec", "benchmark.cell.families.classifier"),
])
def test_moved_modules_keep_their_old_import_paths(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_the_readme_plugin_imports_still_work():
    from benchmark.contract import check_defense_contract
    from benchmark.schema import NonNegativeInt, PositiveFloat, PositiveInt
    from benchmark.spec import CellSpec as OldCellSpec

    assert OldCellSpec is CellSpec
    assert callable(check_defense_contract) and PositiveInt and PositiveFloat and NonNegativeInt
