"""Config-level helpers of the cache: storage choice, default folders, required settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cache_fakes import identity

from unikd.cache.build import choose_storage, default_cache_dir
from unikd.cache.source import require_teacher as _require_teacher


def _cfg(**teacher):
    t = {"model": "resnet32x4", "checkpoint": "t.pt", "cache": None, **teacher}
    return SimpleNamespace(teacher=SimpleNamespace(**t), data=SimpleNamespace(loader="memory"))


def test_storage_full_up_to_1024_classes_then_topk():
    assert choose_storage(100) == {"mode": "full", "dtype": "fp16", "k": None}
    assert choose_storage(1024, dtype="fp32") == {"mode": "full", "dtype": "fp32", "k": None}
    assert choose_storage(1025) == {"mode": "topk", "dtype": "fp16", "k": 20}
    assert choose_storage(100, topk=20) == {"mode": "topk", "dtype": "fp16", "k": 20}
    with pytest.raises(ValueError, match="topk=100"):
        choose_storage(100, topk=100)


def test_default_folder_is_shared_by_equal_runs_only(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIKD_CACHE", str(tmp_path))
    store = choose_storage(100)
    a = default_cache_dir(_cfg(), identity(), store)
    assert a.parent == tmp_path / "teacher-cache" and a.name.startswith("resnet32x4-seed0-")
    assert default_cache_dir(_cfg(), identity(), store) == a
    assert default_cache_dir(_cfg(), identity(seed=1), store) != a
    assert default_cache_dir(_cfg(), identity(), choose_storage(100, dtype="fp32")) != a
    assert default_cache_dir(_cfg(cache=str(tmp_path / "x")), identity(), store) == tmp_path / "x"


@pytest.mark.parametrize(("teacher", "match"), [({"model": None}, "teacher.model"),
                                                 ({"checkpoint": None}, "teacher.checkpoint")])
def test_teacher_settings_are_required(teacher, match):
    with pytest.raises(ValueError, match=match):
        _require_teacher(_cfg(**teacher), "unikd cache-teacher")


def test_memory_loader_is_required():
    cfg = _cfg()
    cfg.data.loader = "torch"
    with pytest.raises(ValueError, match="data.loader=memory"):
        _require_teacher(cfg, "unikd cache-teacher")
