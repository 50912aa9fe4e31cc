"""The machine and software a run ran on, appended to ``environment.json`` in its folder at every start.

Runs at a fixed commit and seed are bit-identical on one machine, but not always across machines: kernels
are chosen by CPU features and package versions can change results in the last bits, which training then
amplifies. Recording each start's environment (a resumed run may continue elsewhere) makes such a
difference traceable afterwards. Nothing here reads the config.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from unikd._atomic import atomic_write_text

__all__ = ["ENVIRONMENT_FILE", "cpu_info", "describe_environment", "record_environment"]

ENVIRONMENT_FILE = "environment.json"
# Packages whose version can change a run's numbers (kernels, decoding, resampling, random streams).
_PACKAGES = ("torch", "numpy", "pillow", "torchvision", "timm", "transformers", "accelerate", "unikd")
# CPU flags that select different kernels in PyTorch's CPU backends.
_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's model name, family/model numbers and kernel-relevant flags (Linux ``/proc/cpuinfo``;
    ``platform`` elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in ("model name", "cpu family", "model", "flags") and key not in fields:
            fields[key] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {
        "model_name": fields.get("model name") or platform.processor() or platform.machine(),
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "flags": [f for f in _FLAGS if f in flags],
        "cores": os.cpu_count(),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe_environment() -> dict[str, Any]:
    """Versions, CPU, threads and accelerator of this process, as JSON-ready values."""
    import torch

    env: dict[str, Any] = {
        "time": time.time(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: v for name in _PACKAGES if (v := _version(name)) is not None},
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if torch.cuda.is_available():
        env["cuda"] = {"version": torch.version.cuda, "device": torch.cuda.get_device_name()}
    return env


def record_environment(folder: str | Path) -> dict[str, Any]:
    """Append this start's environment to ``folder/environment.json`` (``{"starts": [...]}``), atomically;
    an unreadable file is replaced rather than failing the run. Returns the entry."""
    path = Path(folder) / ENVIRONMENT_FILE
    entry = describe_environment()
    try:
        starts = json.loads(path.read_text()).get("starts", [])
        if not isinstance(starts, list):
            starts = []
    except (OSError, ValueError, AttributeError):
        starts = []
    starts.append(entry)
    atomic_write_text(path, json.dumps({"starts": starts}, indent=1, default=str) + "\n")
    return entry

