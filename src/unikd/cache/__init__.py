"""Teacher-output cache that stays exact under data augmentation.

``unikd cache-teacher`` (:func:`unikd.cache.build.build_teacher_cache`) runs the teacher over the exact
augmented views of E epochs of the training stream and stores its logits by (epoch, dataset index);
``teacher.cache=DIR`` in ``unikd train`` replays them (:func:`open_teacher_cache`) after checking the
manifest against the run and the checksums of the files.

This package's top level is the *reading* side, a leaf that imports nothing from :mod:`unikd.engine`.
Building composes the engine and lives in :mod:`unikd.cache.build` (``build_teacher_cache``,
``choose_storage``) and :mod:`unikd.cache.build.writer` (``write_cache``); import it from there.
"""

from __future__ import annotations

from unikd.cache.manifest import CacheMismatchError, read_manifest
from unikd.cache.reader import TeacherCache
from unikd.cache.source import open_teacher_cache, run_identity
from unikd.cache.storage import bytes_per_sample, decode_topk, encode_topk

__all__ = [
    "CacheMismatchError",
    "TeacherCache",
    "bytes_per_sample",
    "decode_topk",
    "encode_topk",
    "open_teacher_cache",
    "read_manifest",
    "run_identity",
]
