"""The build half of the teacher-output cache (``unikd cache-teacher``): it replays the training stream
through the teacher (:mod:`.replay`, which composes the engine's builders) and writes the files
(:mod:`.writer`). It sits above the engine; the read half, :mod:`unikd.cache`, is a leaf below it."""

from __future__ import annotations

from unikd.cache.build.replay import build_teacher_cache, choose_storage, default_cache_dir
from unikd.cache.build.writer import write_cache

__all__ = ["build_teacher_cache", "choose_storage", "default_cache_dir", "write_cache"]
