"""The first decode of an image archive reports progress when the ``unikd`` logger is at INFO."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

from data_files import make_imagefolder

from unikd.data import create_dataset


def test_first_decode_prints_progress_then_the_cache_is_silent(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    make_imagefolder(tmp_path / "src", counts={"train": 3, "test": 1})
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "set", arcname="set")
    log = logging.getLogger("unikd")
    old = log.level
    log.setLevel(logging.INFO)
    try:
        create_dataset("imagefolder", root=archive, cache_dir=tmp_path / "cache")
        err = capsys.readouterr().err
        assert "reading set.tar.gz 12 " in err  # 3 classes x (3 train + 1 test) images read
        assert "decoding set.tar.gz (once; cached) 12/12 " in err
        create_dataset("imagefolder", root=archive, cache_dir=tmp_path / "cache")
        assert capsys.readouterr().err == ""  # served from the decode cache
        log.setLevel(logging.WARNING)  # a program that does not log at INFO (another test may have set INFO)
        create_dataset("imagefolder", root=archive, cache_dir=tmp_path / "cache2")
        assert capsys.readouterr().err == ""  # library use without INFO logging stays silent
    finally:
        log.setLevel(old)
