"""Damage matrix: damage every file unikd writes into a run folder or a teacher cache, run its consumer.

Setup: one tiny run (tiny_cnn on digits, 2 epochs, seed 0), a second one with seed 1 (the "other run"),
and a 2-epoch teacher-output cache of the first run's best.pt (plus one built with seed 1). Then, for
every file (last.pt, last.prev.pt, best.pt, student.safetensors, config.yaml, metrics.jsonl, metrics.csv,
summary.json, run.json, the cache's manifest.json and a shard) and every damage kind that applies, a fresh
copy of the folder is damaged and the file's consumer is run:

- run-folder files: resume, ``unikd train base.yaml out_dir=RUN resume=auto epochs=3`` (one more epoch);
  ``last.prev.pt``: the same with last.pt deleted (so the fallback must read it); ``config.yaml``:
  ``unikd train RUN/config.yaml out_dir=RUN resume=auto epochs=3``;
- ``best.pt``: ``unikd eval RUN/best.pt --json``;
- ``student.safetensors``: used as the teacher of a 1-epoch KD run (``teacher.checkpoint=FILE``);
- cache files: a 2-epoch KD student run with ``teacher.cache=CACHE``.

Damage kinds: ``trunc0`` (truncate to 0 bytes), ``trunc50`` (to half), ``flip-mid`` (XOR 0x01 of a byte
the consumer reads, see ``_middle``: in tensor files the high byte of the middle element of the model's
largest tensor, in a shard of a row training reads, elsewhere the byte at size/2), ``flip-sum`` (XOR 0x01
of a byte of the embedded checksum; files without one: the last byte), ``strip`` (remove the checksum: zip
comment, safetensors metadata entry, manifest entry; a shard's entry in the manifest), ``strip+flip``
(both: damage that a reader accepting files without a checksum cannot see), ``other`` (the other run's file
of the same name), ``fifo``, ``dir``, ``pickle`` (a payload that would create a marker file if unpickled,
with a valid checksum: .pt via torch.save, shards via an object .npy with the manifest updated).

Outcomes (the undamaged copy run the same way is the reference; "names the file": a line of the output,
stdout or stderr, names it and the reference printed no such line): ``refused`` (nonzero exit, no
traceback, names the file), ``refused-unnamed`` (the same without naming it), ``recovered`` (the
reference result, and a note names the file: e.g. the fallback to last.prev.pt), ``correct`` (the
reference result; at most the "carries no unikd checksum" warning), ``silent-wrong`` (exit 0, another
result: final weights/optimizer state, metrics.jsonl rows or the eval numbers differ), ``hang`` (timeout),
``crash`` (a traceback or a signal), ``executed`` (the payload's marker file exists).

Usage::

    python benchmarks/reliability_damage.py                # 93 cases, ~6 min on 2 busy cores
    python benchmarks/reliability_damage.py --json damage.json --timeout 60 --fresh --keep
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from _damage import KINDS, damage
from _reliability import (
    Runner,
    first_difference,
    last_line,
    metrics_rows,
    report,
    run_weights,
    script_parser,
    tally,
    work_folder,
)

BASE = "model: tiny_cnn\ndata: {name: digits}\nepochs: 2\ntensorboard: false\ndevice: cpu\n"
RUN_FILES = ["last.pt", "last.prev.pt", "best.pt", "student.safetensors", "config.yaml", "metrics.jsonl",
             "metrics.csv", "summary.json", "run.json"]
CACHE_FILES = ["manifest.json", "e0000.npy"]
UNVERIFIED = "carries no unikd checksum"
SHORT = {"refused": "REF", "refused-unnamed": "ref?", "recovered": "REC", "correct": "ok",
         "silent-wrong": "WRONG", "hang": "HANG", "crash": "CRASH", "executed": "EXEC"}


class Matrix:
    def __init__(self, work: Path, runner: Runner) -> None:
        self.work, self.runner = work, runner
        self.base = work / "base.yaml"
        self.teacher = work / "teacher.pt"
        self.refs: dict[str, object] = {}
        self.ref_lines: dict[str, set[str]] = {}

    def setup(self, files: list[str], kinds: list[str]) -> None:
        """Train the run (A) and build the cache (C) the files need, and their other-run twins (B, D)."""
        self.base.write_text(BASE)
        others = "other" in kinds
        for name, seed in (("A", 0), ("B", 1))[: 1 + others]:  # kept from an earlier run with this --work
            if not (self.work / name / "summary.json").exists():
                self._ok(["train", str(self.base), f"out_dir={self.work / name}", f"seed={seed}"])
        shutil.copyfile(self.work / "A" / "best.pt", self.teacher)
        for name, seed in (("C", 0), ("D", 1))[: (1 + others) * any(f in CACHE_FILES for f in files)]:
            if not (self.work / name / "manifest.json").exists():
                self._ok(["cache-teacher", str(self.base), *self._kd(), f"seed={seed}", "--out",
                          str(self.work / name), "--no-progress"])

    def _ok(self, argv: list[str]) -> None:
        res = self.runner.run(argv, timeout=600)
        if res.rc != 0:
            raise SystemExit(f"setup failed: unikd {' '.join(argv)}\n{res.err[-3000:]}")

    def _kd(self, teacher: Path | None = None) -> list[str]:
        return ["method=kd", "teacher.model=tiny_cnn", f"teacher.checkpoint={teacher or self.teacher}"]

    def consumer(self, name: str, case: Path) -> tuple[list[str], object]:
        """The command that reads file ``name`` in the damaged copy ``case``, and how to read its result."""
        run, kd = case / "run", case / "kd"
        resume = [f"out_dir={run}", "resume=auto", "epochs=3"]
        if name == "best.pt":
            return ["eval", str(run / "best.pt"), "--json", "--device", "cpu"], self._eval_result
        if name == "student.safetensors":
            argv = ["train", str(self.base), *self._kd(run / name), "epochs=1", f"out_dir={kd}"]
            return argv, lambda res: self._train_result(kd)
        if name in CACHE_FILES:
            argv = ["train", str(self.base), *self._kd(), f"teacher.cache={case / 'cache'}", f"out_dir={kd}"]
            return argv, lambda res: self._train_result(kd)
        if name == "last.prev.pt":
            (run / "last.pt").unlink()
        config = str(run / "config.yaml") if name == "config.yaml" else str(self.base)
        return ["train", config, *resume], lambda res: self._train_result(run)

    @staticmethod
    def _train_result(folder: Path) -> object:
        summary = json.loads((folder / "summary.json").read_text())
        summary = {k: v for k, v in summary.items() if k not in ("wall_seconds", "seconds_per_epoch")}
        return {**run_weights(folder), "metrics": metrics_rows(folder), "summary": summary}

    @staticmethod
    def _eval_result(res) -> object:  # noqa: ANN001
        line = [x for x in res.out.splitlines() if x.strip()][-1]
        return {k: v for k, v in json.loads(line).items() if k != "checkpoint"}

    def prepare(self, name: str, case: Path) -> tuple[Path, Path]:
        """A fresh copy of the run (or cache) in ``case``; returns the file and the other run's file."""
        if case.exists():
            shutil.rmtree(case)
        case.mkdir(parents=True)
        if name in CACHE_FILES:
            shutil.copytree(self.work / "C", case / "cache")
            return case / "cache" / name, self.work / "D" / name
        shutil.copytree(self.work / "A", case / "run")
        return case / "run" / name, self.work / "B" / name

    def run_case(self, name: str, kind: str | None) -> dict:
        """Damage ``name`` with ``kind`` in a fresh copy, run its consumer (``kind=None``: the reference)."""
        ref_key = name if name in ("best.pt", "student.safetensors", "last.prev.pt", "config.yaml") else (
            "cache" if name in CACHE_FILES else "resume")
        if kind is not None and ref_key not in self.refs:
            self.run_case(name, None)
        case = self.work / "cases" / f"{name}-{kind or 'reference'}"
        path, other = self.prepare(name, case)
        marker = case / "PAYLOAD-EXECUTED"
        if kind is not None and not damage(kind, path, other, marker):
            shutil.rmtree(case)
            return {"file": name, "damage": kind, "outcome": "n/a"}
        argv, read = self.consumer(name, case)
        res = self.runner.run(argv, timeout=self.runner.timeout if kind else 600)
        try:
            got = read(res) if res.rc == 0 and not res.timed_out else None
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable result is an outcome
            got = exc
        notes = self.notes(res, case, name, ref_key, kind is None)
        ref = self.refs.get(ref_key)
        diff = (f"no result ({got})" if isinstance(got, Exception)
                else first_difference(got, ref) if isinstance(got, dict) and isinstance(ref, dict)
                else None if got == ref else "result")
        outcome = classify(res, executed=marker.exists(), notes=notes, diff=diff)
        row = {"file": name, "damage": kind, "outcome": outcome, "rc": res.rc, "named": bool(notes),
               "seconds": round(res.seconds, 2), "message": _message(res, notes),
               "command": "unikd " + " ".join(argv)}
        if outcome == "silent-wrong":
            row["differs"] = diff
        if kind is None:
            if res.rc != 0 or res.timed_out or res.traceback or isinstance(got, Exception):
                raise SystemExit(f"reference run failed: {row['command']}\n{res.err[-3000:]}\n{got!r}")
            self.refs[ref_key] = got
            row["outcome"] = "reference"
        if row["outcome"] in ("correct", "recovered", "refused", "reference") and not self.keep:
            shutil.rmtree(case)
        return row

    keep = False

    def notes(self, res, case: Path, name: str, ref_key: str, reference: bool) -> list[str]:  # noqa: ANN001
        """Lines of the output naming the damaged file that the reference run did not print."""
        lines = {x.replace(str(case), "CASE").strip() for x in (res.out + "\n" + res.err).splitlines()}
        if reference:
            self.ref_lines[ref_key] = lines
            return []
        return sorted(x for x in lines - self.ref_lines.get(ref_key, set()) if name in x)


def classify(res, *, executed: bool, notes: list[str], diff: str | None) -> str:  # noqa: ANN001
    """The outcome of one consumer run ``res`` (a :class:`_reliability.Result`): ``notes`` are the new
    output lines naming the damaged file, ``diff`` what differs from the reference result (None: nothing)."""
    if executed:
        return "executed"
    if res.timed_out:
        return "hang"
    if res.traceback or res.rc < 0:
        return "crash"
    if res.rc != 0:
        return "refused" if notes else "refused-unnamed"
    if diff:
        return "silent-wrong"
    return "recovered" if any(UNVERIFIED not in n for n in notes) else "correct"


def _message(res, notes: list[str]) -> str:  # noqa: ANN001
    """What happened, in one line: an error, else the first new line naming the file, else stderr's last."""
    lines = [x for x in (res.err + "\n" + res.out).splitlines() if x.strip() and " it/s]" not in x]
    for line in lines:
        if "error" in line or "Error" in line:
            return line[:400]
    return (notes or [last_line(res.err)])[0][:400]


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--json", help="write every case and the totals to this file")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a consumer counts as a hang")
    ap.add_argument("--keep", action="store_true", help="keep every case folder (else only the unclean ones)")
    ap.add_argument("--files", nargs="*", default=RUN_FILES + CACHE_FILES, help="files to damage")
    ap.add_argument("--kinds", nargs="*", default=KINDS, help="damage kinds")
    args = ap.parse_args()
    t0 = time.monotonic()
    work = work_folder(args.work, "damage")
    runner = Runner("fresh" if args.fresh else "fork", timeout=args.timeout)
    m = Matrix(work, runner)
    m.keep = args.keep
    print(f"work folder: {work}")
    m.setup(args.files, args.kinds)
    rows = []
    for name in args.files:
        for kind in args.kinds:
            row = m.run_case(name, kind)
            rows.append(row)
            if row["outcome"] != "n/a":
                print(f"  {name:20} {kind:11} {row['outcome']:16} {row['seconds']:6.1f}s  "
                      f"{row['message'][:120]}", flush=True)
    cases = [r for r in rows if r["damage"] and r["outcome"] != "n/a"]
    cell = {(r["file"], r["damage"]): SHORT.get(r["outcome"], r["outcome"]) for r in rows if r["damage"]}
    width = max(len(f) for f in args.files)
    print("\n" + " " * width + " | " + " | ".join(f"{k:>10}" for k in args.kinds))
    for name in args.files:
        cells = [{"n/a": "-"}.get(cell[(name, k)], cell[(name, k)]) for k in args.kinds]
        print(f"{name:{width}} | " + " | ".join(f"{c:>10}" for c in cells))
    print("legend: " + ", ".join(f"{v} {k}" for k, v in SHORT.items()) + ", - not applicable")
    unclean = [r for r in cases if r["outcome"] not in ("refused", "recovered", "correct")]
    print(f"\nnot clean ({len(unclean)}):")
    for r in unclean:
        extra = f" [differs: {r['differs']}]" if "differs" in r else ""
        print(f"  {r['file']} {r['damage']}: {r['outcome']}{extra}  {r['message'][:200]}")
    counts = tally([r["outcome"] for r in cases])
    report(f"damage matrix, {len(cases)} cases in {time.monotonic() - t0:.0f}s", counts,
           {"cases": rows, "seconds": round(time.monotonic() - t0, 1), "mode": runner.mode}, args.json)


if __name__ == "__main__":
    main()
