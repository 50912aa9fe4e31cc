"""Pretrained weights: the config keys ``pretrained`` (student) and ``teacher.pretrained``.

- ``torchvision:``/``timm:`` models load their library's own weights through the library's download
  mechanism (torch hub cache / Hugging Face hub cache); offline, the error names the cache folder to fill.
- Zoo models load a teacher from the registry below: name -> sources (a file URL, or a member of a ``.tar``
  archive), the sha256 of the weights file, the published top-1 and the input normalisation. The download
  is verified against the sha256 before anything is unpickled, then converted to a plain ``state_dict`` file
  in ``$UNIKD_CACHE/teachers`` (default ``~/.cache/unikd/teachers``).

Entries are added only with a checksum taken from a public source; ``register_teacher`` adds your own.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unikd._atomic import atomic_write, atomic_write_text
from unikd.engine.teacher.unpickle import read_state as _read_state
from unikd.registry import unknown_name_message

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Source:
    """Where a weights file can be fetched: ``url`` itself, or ``member`` of the ``.tar`` at ``url``."""

    url: str
    member: str | None = None


@dataclass(frozen=True)
class TeacherWeights:
    """One registry entry. ``sha256`` is of the weights file as published (the archive member when the
    source is an archive); ``state_key`` is the key of the state dict inside it (None: the file is one)."""

    name: str
    model: str
    dataset: str
    num_classes: int
    sources: tuple[Source, ...]
    sha256: str
    top1: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reference: str
    state_key: str | None = "model"


TEACHERS: dict[str, TeacherWeights] = {}


def register_teacher(entry: TeacherWeights) -> None:
    """Add (or replace) a registry entry; ``sha256`` must be 64 hex digits."""
    if len(entry.sha256) != 64 or any(ch not in "0123456789abcdef" for ch in entry.sha256):
        raise ValueError(
            f"teacher {entry.name!r}: sha256 must be 64 lowercase hex digits, got {entry.sha256!r}"
        )
    if not entry.sources:
        raise ValueError(f"teacher {entry.name!r}: give at least one Source(url, member=None)")
    TEACHERS[entry.name] = entry


# ResNet32x4 of the CIFAR-100 KD benchmark (CRD, Tian et al. ICLR 2020; reused by DKD/mdistiller). The same
# file is published by CRD (RepDistiller's scripts/fetch_pretrained_teachers.sh) and inside mdistiller's
# cifar_teachers.tar (release "checkpoints"); its sha256 is pinned identically by independent public
# reproduction scripts of both sources, one of which reports 79.42% top-1 on the CIFAR-100 test set.
register_teacher(
    TeacherWeights(
        name="cifar100/resnet32x4",
        model="resnet32x4",
        dataset="cifar100",
        num_classes=100,
        sources=(
            Source("http://shape2prog.csail.mit.edu/repo/resnet32x4_vanilla/ckpt_epoch_240.pth"),
            Source(
                "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar",
                "cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth",
            ),
        ),
        sha256="22aa12e2b632b19ddde155ccf2388671842ddd304824b3095e0a7fff364beb4f",
        top1=79.42,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        reference="CRD README (HobbitLong/RepDistiller) and mdistiller README: ResNet32x4 teacher 79.42",
    )
)


def list_teachers() -> list[str]:
    return sorted(TEACHERS)


def get_teacher_weights(name: str) -> TeacherWeights:
    if name not in TEACHERS:
        raise ValueError(unknown_name_message("pretrained teacher", name, list_teachers()))
    return TEACHERS[name]


def find_teacher(dataset: str, model: str) -> TeacherWeights | None:
    return TEACHERS.get(f"{dataset}/{model}")


def teacher_cache_dir(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from unikd.data.cache import default_cache_dir

    return default_cache_dir() / "teachers"


def _urllib_fetch(url: str, dest: Path) -> None:
    """Download ``url`` (http(s):// or file://) to ``dest`` atomically."""
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (URLs come from the registry)
        atomic_write(dest, lambda f: _copy(r, f))


def _copy(src: Any, dst: Any) -> None:
    while block := src.read(1 << 20):
        dst.write(block)


def _fetch_source(src: Source, folder: Path, fetch: Callable[[str, Path], None]) -> bytes:
    """The bytes of the weights file of ``src`` (downloading the file or archive into ``folder`` once)."""
    local = folder / "downloads" / src.url.rstrip("/").rsplit("/", 1)[-1]
    if not local.is_file():
        fetch(src.url, local)
    if src.member is None:
        return local.read_bytes()
    try:
        with tarfile.open(local) as tf:
            member = tf.getmember(src.member)
            f = tf.extractfile(member) if member.isfile() else None
            if f is None:
                raise KeyError(src.member)
            return f.read()
    except (tarfile.TarError, KeyError, OSError) as err:
        raise ValueError(
            f"{local}: cannot read member {src.member!r} ({type(err).__name__}: {err}); the archive is "
            "damaged or not the published one: delete it and fetch again"
        ) from err


def fetch_teacher(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    fetch: Callable[[str, Path], None] | None = None,
) -> Path:
    """The registry teacher ``name`` as a plain ``state_dict`` file, downloaded and verified on first use.

    The sources are tried in order; a file whose sha256 differs is refused (nothing is unpickled or kept).
    Offline, the error names the URLs and the folder to put the file in. ``fetch(url, dest)`` replaces the
    downloader (tests, mirrors).
    """
    entry = get_teacher_weights(name)
    folder = teacher_cache_dir(cache_dir)
    out = folder / f"{name.replace('/', '__')}.pt"
    meta_path = out.with_suffix(".json")
    if out.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("file_sha256") == _sha256(out.read_bytes()) and meta.get("sha256") == entry.sha256:
            return out
    fetch = fetch or _urllib_fetch
    errors = []
    for src in entry.sources:
        try:
            raw = _fetch_source(src, folder, fetch)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            errors.append(f"{src.url}: {type(err).__name__}: {err}")
            continue
        got = _sha256(raw)
        if got != entry.sha256:
            raise ValueError(
                f"teacher {name!r}: the file from {src.url}{f' ({src.member})' if src.member else ''} has "
                f"sha256 {got}, expected {entry.sha256}; refusing to load it. Delete {folder / 'downloads'} "
                "and try again, or report the changed upstream file"
            )
        state = _read_state(raw, entry)
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        atomic_write(out, lambda f, data=data: f.write(data))
        meta = {**asdict(entry), "source": asdict(src), "file_sha256": _sha256(data)}
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        return out
    names = ", ".join(s.url.rsplit("/", 1)[-1] for s in entry.sources)
    raise FileNotFoundError(
        f"teacher {name!r}: could not download it (offline?): {'; '.join(errors)}. Fetch one of the files "
        f"({names}) elsewhere and put it into {folder / 'downloads'}; it is verified against sha256 "
        f"{entry.sha256} before use"
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pretrained_model(
    name: str, *, num_classes: int, in_chans: int = 3, dataset: str | None = None, **model_args: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """``name`` with pretrained weights, and ``{"data": {"mean", "std"}, "top1"?}`` describing them.

    Foreign models: the library's weights (their own head; ``num_classes`` different from it is an error,
    since a random head is no teacher). Zoo models: the registry entry ``<dataset>/<name>``.
    """
    from unikd.models import create_model

    if ":" in name:
        from unikd.models.foreign import create_foreign_model, foreign_normalisation, output_classes

        model = create_foreign_model(name, num_classes=None, pretrained=True, **model_args)
        head = output_classes(model)
        if head != num_classes:
            raise ValueError(
                f"{name} pretrained weights predict {head} classes but the data has {num_classes}; a teacher "
                "needs a head trained on this data: fine-tune one first (unikd train model=NAME "
                "pretrained=true ...) and pass its best.pt as teacher.checkpoint"
            )
        mean, std = foreign_normalisation(name)
        return model, {"data": {"mean": list(mean), "std": list(std)}}
    entry = find_teacher(dataset or "", name)
    if entry is None:
        have = ", ".join(list_teachers()) or "none"
        raise ValueError(
            f"no pretrained weights for zoo model {name!r} on {dataset!r} in the teacher registry (entries: "
            f"{have}); train it (unikd train model={name} ...) and pass its best.pt as teacher.checkpoint, "
            "or register your own with unikd.engine.teacher.pretrained.register_teacher"
        )
    if entry.num_classes != num_classes:
        raise ValueError(
            f"teacher {entry.name!r} has {entry.num_classes} classes but the data has {num_classes}"
        )
    extra = {**({} if in_chans == 3 else {"in_chans": in_chans}), **model_args}
    model = create_model(name, num_classes=num_classes, **extra)
    from unikd.engine.run.weights import load_weights

    path = fetch_teacher(entry.name)
    load_weights(model, torch.load(path, map_location="cpu", weights_only=True), path=path, what="teacher")
    return model, {"data": {"mean": list(entry.mean), "std": list(entry.std)}, "top1": entry.top1}


def pretrained_student(
    name: str, *, num_classes: int, in_chans: int = 3, dataset: str | None = None, **model_args: Any
) -> nn.Module:
    """A student starting from pretrained weights (config ``pretrained=true``): foreign models take the
    library's weights (a fresh head when the class count differs, for fine-tuning); zoo models the registry
    entry ``<dataset>/<name>``."""
    if ":" in name:
        from unikd.models import create_model

        return create_model(name, num_classes=num_classes, pretrained=True, **model_args)
    model, _ = pretrained_model(
        name, num_classes=num_classes, in_chans=in_chans, dataset=dataset, **model_args
    )
    return model


__all__ = [
    "TEACHERS",
    "Source",
    "TeacherWeights",
    "fetch_teacher",
    "find_teacher",
    "get_teacher_weights",
    "list_teachers",
    "pretrained_model",
    "pretrained_student",
    "register_teacher",
    "teacher_cache_dir",
]
