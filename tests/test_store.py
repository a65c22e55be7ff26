import json
import pickle

import pytest
import torch

from benchmark.errors import StoreError
from benchmark.storage.store import ArtifactStore, stage_key


def test_key_depends_on_kind_config_and_inputs_not_on_dict_order():
    k = stage_key("attack", {"a": 1, "b": 2}, {"x": "k1"})
    assert k == stage_key("attack", {"b": 2, "a": 1}, {"x": "k1"})
    assert k != stage_key("defense", {"a": 1, "b": 2}, {"x": "k1"})
    assert k != stage_key("attack", {"a": 1, "b": 3}, {"x": "k1"})
    assert k != stage_key("attack", {"a": 1, "b": 2}, {"x": "k2"})


def test_cache_hit_does_not_recompute(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def run():
        calls.append(1)
        return {"test/asr": 0.5}, {"w": torch.arange(4.0)}

    a, cached_a = store.get_or_run("attack", {"p": 1}, {}, run)
    b, cached_b = store.get_or_run("attack", {"p": 1}, {}, run)
    assert calls == [1] and (cached_a, cached_b) == (False, True)
    assert b.metrics == {"test/asr": 0.5} and torch.equal(b.tensors()["w"], torch.arange(4.0))


def test_failed_stage_leaves_no_artifact_and_no_temporary(tmp_path):
    store = ArtifactStore(tmp_path)

    def crash():
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        store.get_or_run("attack", {"p": 1}, {}, crash)
    key = stage_key("attack", {"p": 1}, {})
    assert not store.has("attack", key)
    assert not (tmp_path / ".tmp").exists() or not any((tmp_path / ".tmp").iterdir())


def test_crash_while_writing_tensors_leaves_nothing_half_written(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    import benchmark.storage.store as mod

    def broken_save(tensors, path):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(mod, "save_file", broken_save)
    with pytest.raises(OSError):
        store.save("attack", "k" * 24, {}, {}, {}, {"w": torch.zeros(1)})
    assert not (tmp_path / "attack" / ("k" * 24)).exists()
    assert not any((tmp_path / ".tmp").iterdir())


def test_corrupted_meta_is_a_clear_error_and_is_left_in_place(tmp_path):
    store = ArtifactStore(tmp_path)
    art, _ = store.get_or_run("attack", {"p": 1}, {}, lambda: ({"m": 1}, None))
    (art.path / "meta.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupted meta.json.*delete that directory"):
        store.get_or_run("attack", {"p": 1}, {}, lambda: ({"m": 1}, None))
    assert (art.path / "meta.json").read_text() == "{not json"


def test_foreign_meta_is_rejected(tmp_path):
    store = ArtifactStore(tmp_path)
    key = stage_key("attack", {"p": 1}, {})
    (tmp_path / "attack" / key).mkdir(parents=True)
    (tmp_path / "attack" / key / "meta.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(StoreError, match="not written by this suite"):
        store.load("attack", key)


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle executed')",))


def test_a_pickle_in_place_of_weights_is_never_executed(tmp_path):
    store = ArtifactStore(tmp_path)
    art, _ = store.get_or_run("attack", {"p": 1}, {}, lambda: ({}, {"w": torch.zeros(2)}))
    (art.path / "tensors.safetensors").write_bytes(pickle.dumps(_Boom()))
    fresh = store.load("attack", art.key)
    with pytest.raises(StoreError, match="unreadable tensors.safetensors"):
        fresh.tensors()
