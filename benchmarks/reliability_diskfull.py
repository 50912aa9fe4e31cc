"""Disk full: a tiny training (and a teacher-cache build) on a filesystem that fills up at different points.

Each size gets its own tmpfs (``mount -t tmpfs -o size=S``; root in a container usually may) holding the run
folder; ``unikd train base.yaml out_dir=MNT/run epochs=3 checkpoint_every=10`` writes config.yaml, run.json,
metrics, checkpoints every 10 steps (each ~220 kB, last.prev.pt kept), best.pt and student.safetensors, so
the sizes (8 kB .. 1.2 MB) make it fail at every kind of write. Where mounting is not permitted the script
falls back to ``RLIMIT_FSIZE`` in the child (SIGXFSZ ignored: writes past S fail with EFBIG; a per-file
limit, not a full disk). A size is ``handled`` when all of these hold, else ``not handled`` (what failed is
listed):

- ``one error line``: nonzero exit, no traceback, exactly one ``error`` line on stderr, naming a file of
  the folder and the reason (ENOSPC/EFBIG);
- ``files whole``: every file under its final name reads back (checkpoints verify their checksum,
  safetensors/JSON/JSONL/YAML parse); leftover ``.*.tmp`` files are reported, not counted (they are swept
  at the next start);
- ``advice works``: after the filesystem is enlarged (``mount -o remount``; or the limit lifted) the command
  the error advises (``resume=auto``, or the same command again) finishes, with final weights bit-identical
  to a run that never hit a full disk.

A size at which the run fits is reported as ``fits`` (its files must be whole). The cache build
(``unikd cache-teacher``, 12 epochs of ~29 kB shards) is checked the same way at 3 sizes; "advice works" there
means the rerun finishes a cache that verifies and equals one built without a full disk.

Usage::

    python benchmarks/reliability_diskfull.py                  # 10 + 3 sizes, ~1 min
    python benchmarks/reliability_diskfull.py --sizes 16 300 --cache-sizes 40 --json diskfull.json
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

from _reliability import (
    Runner,
    first_difference,
    last_line,
    report,
    run_weights,
    script_parser,
    tally,
    work_folder,
)

BASE = ("model: tiny_cnn\ndata: {name: digits}\nepochs: 3\ncheckpoint_every: 10\ntensorboard: false\n"
        "device: cpu\n")
SIZES = [8, 24, 64, 160, 260, 400, 520, 700, 900, 1200]  # KiB
CACHE_SIZES = [8, 40, 150]


def whole(folder: Path) -> list[str]:
    """Files under their final name that do not read back (empty list: all whole)."""
    import yaml

    from unikd.engine.run.checkpoint import load_checkpoint, load_safetensors

    bad = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.endswith((".tmp", ".lock")):
            continue
        try:
            if path.suffix == ".pt":
                load_checkpoint(path)
            elif path.suffix == ".safetensors":
                load_safetensors(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            elif path.suffix == ".yaml":
                yaml.safe_load(path.read_text())
            elif path.suffix == ".npy":
                import numpy as np

                np.load(path, mmap_mode="r")
            else:
                path.read_bytes()
        except Exception as exc:  # noqa: BLE001 - any failure to read back is the finding
            bad.append(f"{path.name}: {str(exc)[:100]}")
    return bad


class Disk:
    """A small filesystem at ``path``: a tmpfs when mounting works, else an RLIMIT_FSIZE for the child."""

    def __init__(self, path: Path, kib: int, use_mount: bool) -> None:
        self.path, self.kib, self.mounted = path, kib, False
        path.mkdir(parents=True)
        if use_mount:
            self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                                          capture_output=True, check=False).returncode == 0

    def limit(self):  # noqa: ANN201
        """The child's preexec: nothing on a tmpfs, else the file size limit."""
        if self.mounted:
            return None
        size = self.kib * 1024

        def preexec() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        return preexec

    def enlarge(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.path)], check=True)
        self.kib = 1 << 20

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=False)


def can_mount(work: Path) -> bool:
    probe = Disk(work / "probe", 64, True)
    probe.close()
    return probe.mounted


def check(runner: Runner, disk: Disk, argv: list[str], out: Path, same_as_reference) -> dict:  # noqa: ANN001
    res = runner.run(argv, preexec=disk.limit(), timeout=300)
    errors = [x for x in res.err.splitlines() if "error" in x.lower()]
    row = {"kib": disk.kib, "rc": res.rc, "message": last_line(res.err)}
    broken = whole(out) if out.exists() else []
    temps = [p.name for p in out.rglob("*.tmp")] if out.exists() else []
    row.update(broken=broken, temp_files=temps)
    if res.rc == 0:
        row.update(outcome="fits" if not broken else "not handled", failed=["files whole"] * bool(broken))
        return row
    failed = []
    if res.traceback or res.timed_out or len(errors) != 1 or not re.search(
            r"(No space left|File too large|ENOSPC|EFBIG)", errors[0]) or str(out) not in errors[0]:
        failed.append("one error line")
    if broken:
        failed.append("files whole")
    disk.enlarge()
    again = argv + ["resume=auto"] if "resume=auto" in (errors or [""])[0] else argv
    res2 = runner.run(again, timeout=300)
    diff = same_as_reference() if res2.rc == 0 else f"rc {res2.rc}: {last_line(res2.err)}"
    if diff:
        failed.append("advice works")
    row.update(outcome="not handled" if failed else "handled", failed=failed,
               rerun="with resume=auto" if again != argv else "the same command",
               after_rerun=diff or "identical")
    return row


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=SIZES, help="filesystem sizes for training, KiB")
    ap.add_argument("--cache-sizes", type=int, nargs="*", default=CACHE_SIZES, help="sizes for cache-teacher")
    ap.add_argument("--json", help="write the sizes' results and the totals to this file")
    args = ap.parse_args()
    t0 = time.monotonic()
    work = work_folder(args.work, "diskfull")
    base = work / "base.yaml"
    base.write_text(BASE)
    use_mount = can_mount(work)
    runner = Runner("fresh" if args.fresh or not use_mount else "fork", timeout=300)
    print(f"work folder: {work}; full disk by {'tmpfs' if use_mount else 'RLIMIT_FSIZE (no mount)'}")
    ref = runner.run(["train", str(base), f"out_dir={work / 'reference'}"])
    assert ref.rc == 0, ref.err[-2000:]
    want = run_weights(work / "reference")
    teacher = work / "reference" / "best.pt"
    cache = ["cache-teacher", str(base), "method=kd", "teacher.model=tiny_cnn",
             f"teacher.checkpoint={teacher}", "--epochs", "12", "--no-progress"]
    solo = work / "cache-reference"
    assert runner.run([*cache, "--out", str(solo)]).rc == 0
    rows = []
    for kind, sizes in (("train", args.sizes), ("cache-teacher", args.cache_sizes)):
        for kib in sizes:
            disk = Disk(work / f"{kind}-{kib}k", kib, use_mount)
            out = disk.path / "out"
            try:
                if kind == "train":
                    argv = ["train", str(base), f"out_dir={out}"]

                    def same(out: Path = out) -> str | None:
                        return first_difference(run_weights(out), want)
                else:
                    argv = [*cache, "--out", str(out)]

                    def same(out: Path = out) -> str | None:
                        import numpy as np

                        from unikd.cache.reader import TeacherCache

                        TeacherCache(out).verify()
                        bad = [p.name for p in sorted(solo.glob("e*.npy"))
                               if not np.array_equal(np.load(p), np.load(out / p.name), equal_nan=True)]
                        return f"shards differ: {bad}" if bad else None
                row = {"command": kind, **check(runner, disk, argv, out, same)}
            finally:
                disk.close()
                shutil.rmtree(disk.path, ignore_errors=True)
            rows.append(row)
            temps = f"  [temp files left: {row['temp_files']}]" if row["temp_files"] else ""
            print(f"  {kind:13} {kib:5d} KiB: {row['outcome']:11} {', '.join(row.get('failed', []))}  "
                  f"{row['message'][:150]}{temps}", flush=True)
    counts = tally([r["outcome"] for r in rows])
    report(f"disk full, {len(rows)} sizes in {time.monotonic() - t0:.0f}s", counts,
           {"sizes": rows, "method": "tmpfs" if use_mount else "RLIMIT_FSIZE", "mode": runner.mode},
           args.json)


if __name__ == "__main__":
    main()
