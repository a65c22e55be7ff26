"""Code fingerprints in store keys: editing the code of a stage recomputes
that stage and everything downstream of it, and nothing else."""
from pathlib import Path

import pytest

import benchmark.storage.fingerprint as fingerprint
from tests.test_plugins import USER_DEFENSE


def _keys(cell) -> dict[str, str]:
    return {f"{job.kind}/{job.label}": job.key for job in cell.jobs}


def _changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {label for label in before if before[label] != after[label]}


def _edited(monkeypatch, suffix: str):
    """Every file ending in `suffix` reads as edited (a comment appended)."""
    original = fingerprint.read_source

    def read(path: Path) -> str:
        text = original(path)
        return text + "\n# edited\n" if str(path).replace("\\", "/").endswith(suffix) else text

    monkeypatch.setattr(fingerprint, "read_source", read)


def _downstream(defense: str) -> set[str]:
    return {f"defense/{defense}", f"bec/S(f_A, {defense})", f"reactivation/wba vs {defense}",
            f"guaa/wba vs {defense}", f"controls/wba vs {defense}"}


@pytest.mark.parametrize("edited,expected", [
    ("lightning_modules/defenses/nad.py", _downstream("nad")),
    # NAD's teacher is FT's fine-tuning (nad.py imports it), so editing FT
    # recomputes both; nothing upstream.
    ("lightning_modules/defenses/ft.py", _downstream("ft") | _downstream("nad")),
    ("benchmark/reporting/report.py", set()),                       # not part of any stage
    ("sweeps/executor.py", set()),
    ("lightning_modules/defenses/nc.py", set()),          # a defense this cell does not run
    ("benchmark/measures/bec.py", {"bec/S(f_A, clean)", "bec/S(f_A, backdoored)", "bec/S(f_A, ft)", "bec/S(f_A, nad)",
                          "controls/wba vs ft", "controls/wba vs nad"}),
])
def test_editing_a_file_recomputes_exactly_its_stages(edited, expected, make_cell, monkeypatch, tmp_path):
    before = _keys(make_cell(defenses=("ft", "nad")))
    _edited(monkeypatch, edited)
    after = _keys(make_cell(defenses=("ft", "nad")))
    assert _changed(before, after) == expected


def test_editing_shared_code_recomputes_all_it_feeds(make_cell, monkeypatch):
    before = _keys(make_cell(defenses=("ft", "nad")))
    _edited(monkeypatch, "lightning_modules/defenses/base.py")
    changed = _changed(before, _keys(make_cell(defenses=("ft", "nad"))))
    assert {"defense/ft", "defense/nad", "reactivation/wba vs nad"} <= changed
    assert not changed & {"train/clean model", "attack/badnets", "bec/S(f_A, clean)", "reactivation/wba vs clean"}
    monkeypatch.undo()
    _edited(monkeypatch, "benchmark/models/small_cnn.py")  # the architecture: everything
    assert _changed(before, _keys(make_cell(defenses=("ft", "nad")))) == set(before)


def test_editing_a_plugin_recomputes_its_stages_only(make_cell, tmp_path):
    path = tmp_path / "head_reset.py"
    path.write_text(USER_DEFENSE)
    ref = f"{path}:HeadReset"
    params = {"ft": {"epochs": 1}, ref: {"epochs": 1}}
    before = _keys(make_cell(defenses=("ft", ref), defense_params=params))
    assert _keys(make_cell(defenses=("ft", ref), defense_params=params)) == before  # stable when nothing changes
    path.write_text(USER_DEFENSE.replace("std=0.01", "std=0.02"))
    after = _keys(make_cell(defenses=("ft", ref), defense_params=params))
    assert _changed(before, after) == {f"defense/{ref}", f"bec/S(f_A, {ref})", f"reactivation/wba vs {ref}",
                                       f"guaa/wba vs {ref}", f"controls/wba vs {ref}"}


def test_fingerprint_follows_a_plugins_sibling_imports(tmp_path):
    from benchmark.extension.plugins import load_reference

    (tmp_path / "helpers_for_fp.py").write_text("SCALE = 1\n")
    (tmp_path / "uses_helper.py").write_text("import helpers_for_fp\n" + USER_DEFENSE)
    cls, module = load_reference(f"{tmp_path / 'uses_helper.py'}:HeadReset", "defense")
    first = fingerprint.code_fingerprint(cls, module)
    (tmp_path / "helpers_for_fp.py").write_text("SCALE = 2\n")
    assert fingerprint.code_fingerprint(cls, module) != first


@pytest.mark.parametrize("edited", ["benchmark/triggers/ssba.py", "lightning_modules/attacks/wanet.py",
                                    "benchmark/triggers/low_frequency.py"])
def test_editing_another_attack_changes_nothing(edited, make_cell, monkeypatch):
    # Attacks and triggers register by discovery: a BadNets cell does not
    # depend on the code of the other attacks.
    before = _keys(make_cell(defenses=("ft",)))
    _edited(monkeypatch, edited)
    assert _changed(before, _keys(make_cell(defenses=("ft",)))) == set()


def test_editing_a_prepared_trigger_recomputes_from_its_stage(make_cell, monkeypatch):
    from tests.conftest import FAST_TRIGGER_PARAMS

    kwargs = dict(attack="lf", defenses=("ft",), trigger_params=FAST_TRIGGER_PARAMS["lf"])
    before = _keys(make_cell(**kwargs))
    _edited(monkeypatch, "benchmark/triggers/low_frequency.py")
    changed = _changed(before, _keys(make_cell(**kwargs)))
    assert {"trigger/lf", "attack/lf", "defense/ft", "reactivation/wba vs ft"} <= changed
    assert "train/clean model" not in changed  # f_C, which the trigger is computed on, stays
