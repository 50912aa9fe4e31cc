"""Teacher-output cache that stays exact under data augmentation.

``unikd cache-teacher`` (:func:`build_teacher_cache`) runs the teacher over the exact augmented views of E
epochs of the training stream and stores its logits by (epoch, dataset index); ``teacher.cache=DIR`` in
``unikd train`` replays them (:func:`open_teacher_cache`) after checking the manifest against the run.
"""

from __future__ import annotations

from unikd.cache.build import build_teacher_cache, choose_storage, open_teacher_cache, run_identity
from unikd.cache.manifest import CacheMismatchError, read_manifest
from unikd.cache.reader import TeacherCache
from unikd.cache.storage import bytes_per_sample, decode_topk, encode_topk
from unikd.cache.writer import write_cache

__all__ = [
    "CacheMismatchError",
    "TeacherCache",
    "build_teacher_cache",
    "bytes_per_sample",
    "choose_storage",
    "decode_topk",
    "encode_topk",
    "open_teacher_cache",
    "read_manifest",
    "run_identity",
    "write_cache",
]
