"""Concurrency: one writer per folder (``unikd train``, ``unikd cache-teacher``, ``unikd bench``) and stale
locks taken over.

Checks, each counted ``correct`` or ``wrong`` (with what happened):

- two trainings into one out_dir: while the first holds ``.train.lock``, a second ``unikd train`` (plain,
  ``resume=auto``, ``overwrite=true``) must fail at once (nonzero exit, no traceback, naming the first's pid)
  and the first must finish with the weights of an undisturbed run;
- a stale ``.train.lock`` of a dead pid (unikd's own record with and without ``flock``, a plain pid, an
  empty file, garbage): the next run takes it over and finishes;
- a ``.train.lock`` naming a *live* pid (a ``sleep`` process) written without flock: taken over when its
  start time or boot id is not that process's (the pid was reused), respected (refused, naming the pid)
  when they match; a record saying it was flocked, with no flock held, is taken over;
- two ``unikd cache-teacher`` into one cache folder: started one after the other (the second while the
  first holds ``.lock``: refused) and at the same moment (each finishes or is refused cleanly); either way
  the cache verifies and equals a build made alone;
- ``unikd bench``: a second bench into the folder of a running one is refused naming its pid; after the
  first is SIGKILLed, its stale ``.bench.lock`` is taken over and the grid finishes.

Usage::

    python benchmarks/reliability_concurrency.py                 # about two minutes
    python benchmarks/reliability_concurrency.py --json concurrency.json --fresh
"""

from __future__ import annotations

import json
import os
import socket
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

from unikd import _process

BASE = "model: tiny_cnn\ndata: {name: digits}\nepochs: 1\ntensorboard: false\ndevice: cpu\n"
BENCH = """\
out_dir: {out}
base: {base}
seeds: [0]
tracks:
  - name: t
    student: tiny_cnn
    methods: {{ce: {{}}}}
"""


class Checks:
    def __init__(self, work: Path, runner: Runner) -> None:
        self.work, self.runner, self.rows = work, runner, []
        self.base = work / "base.yaml"
        self.base.write_text(BASE)
        self.n = 0

    def record(self, category: str, what: str, ok: bool, detail: str = "") -> None:
        self.rows.append({"category": category, "check": what, "outcome": "correct" if ok else "wrong",
                          "detail": detail})
        print(f"  {'correct' if ok else 'WRONG  '}  {category}: {what}  {detail[:160]}", flush=True)

    def folder(self) -> Path:
        self.n += 1
        return self.work / f"f{self.n}"

    def train(self, out: Path, *extra: str) -> list[str]:
        return ["train", str(self.base), f"out_dir={out}", *extra]

    @staticmethod
    def wait_for_lock(path: Path, pid: int, proc, limit: float = 120) -> bool:  # noqa: ANN001
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit and proc.poll() is None:
            try:
                if json.loads(path.read_text()).get("pid") == pid:
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        return False

    @staticmethod
    def refused(res, pid: int) -> tuple[bool, str]:  # noqa: ANN001
        ok = res.rc != 0 and not res.traceback and not res.timed_out and f"pid {pid}" in res.err
        return ok, f"rc {res.rc} in {res.seconds:.1f}s: {last_line(res.err)}"

    def two_trainings(self) -> None:
        ref = self.folder()
        self.runner.run(self.train(ref, "epochs=4"))
        want = run_weights(ref)
        for second in ([], ["resume=auto"], ["overwrite=true"]):
            out = self.folder()
            first = self.runner.start(self.train(out, "epochs=4"))
            if not self.wait_for_lock(out / ".train.lock", first.pid, first):
                self.record("train lock", "first run took the lock", False, "never saw its lock")
                continue
            ok, detail = self.refused(self.runner.run(self.train(out, "epochs=4", *second)), first.pid)
            self.record("train lock", f"second train {' '.join(second) or '(plain)'} refused", ok, detail)
            res = first.wait(600)
            diff = first_difference(run_weights(out), want) if res.rc == 0 else f"rc {res.rc}"
            self.record("train lock", "first run unharmed (bit-identical to an undisturbed run)", not diff,
                        diff or "")

    def dead_pid(self) -> int:
        proc = subprocess.Popen(["true"])
        proc.wait()
        return proc.pid

    def stale_locks(self) -> None:
        dead = self.dead_pid()
        record = {"pid": dead, "host": socket.gethostname(), "started": time.time() - 60,
                  "what": "unikd train", **_process.identity(os.getpid())}
        cases = {"dead pid, unikd record (flock)": json.dumps({**record, "flock": True}),
                 "dead pid, record without flock": json.dumps({**record, "flock": False}),
                 "dead pid, plain pid file": str(dead), "empty lock file": "",
                 "garbage lock file": "\x00{oops"}
        for what, text in cases.items():
            self._takeover("stale lock", what, text, expect_refused=None)
        sleeper = subprocess.Popen(["sleep", "300"])
        try:
            live = {**record, "pid": sleeper.pid, **_process.identity(sleeper.pid)}
            start = int(live.get("pid_start", 0))
            unflocked = {**live, "flock": False}
            cases = {"live pid, wrong start time (pid reused)": ({**unflocked, "pid_start": start + 7}, None),
                     "live pid, another boot id": ({**unflocked, "boot_id": "0" * 36}, None),
                     "live pid, flocked record but no flock held": ({**live, "flock": True}, None),
                     "live pid, matching identity, no flock (respected)": (unflocked, sleeper.pid)}
            for what, (rec, expect) in cases.items():
                self._takeover("live-pid lock", what, json.dumps(rec), expect_refused=expect)
        finally:
            sleeper.kill()
            sleeper.wait()

    def _takeover(self, category: str, what: str, text: str, expect_refused: int | None) -> None:
        out = self.folder()
        out.mkdir()
        (out / ".train.lock").write_text(text)
        res = self.runner.run(self.train(out))
        if expect_refused is not None:
            ok, detail = self.refused(res, expect_refused)
        else:
            ok = res.rc == 0 and (out / "summary.json").exists() and not res.traceback
            detail = f"rc {res.rc}: {last_line(res.err) if res.rc else 'taken over, run finished'}"
        self.record(category, what, ok, detail)

    def cache(self, out: Path) -> list[str]:
        teacher = self.work / "teacher.pt"
        return ["cache-teacher", str(self.base), "method=kd", "teacher.model=tiny_cnn",
                f"teacher.checkpoint={teacher}", "--out", str(out), "--epochs", "80", "--no-progress"]

    def caches(self) -> None:
        import numpy as np

        from unikd.cache.reader import TeacherCache

        t = self.folder()
        self.runner.run(self.train(t))
        (t / "best.pt").rename(self.work / "teacher.pt")
        solo = self.folder()
        self.runner.run(self.cache(solo))

        def same_as_solo(folder: Path) -> str:
            try:
                TeacherCache(folder).verify()
            except (ValueError, OSError) as exc:
                return f"does not verify: {exc}"
            bad = [p.name for p in sorted(solo.glob("e*.npy"))
                   if not np.array_equal(np.load(p), np.load(folder / p.name), equal_nan=True)]
            return f"shards differ from a solo build: {bad}" if bad else ""

        out = self.folder()
        first = self.runner.start(self.cache(out))
        if self.wait_for_lock(out / ".lock", first.pid, first):
            # The lock is taken after the set-up (data, teacher), so the second may get there after the
            # first finished: then it must return the complete cache (exit 0) without building anything.
            second = self.runner.run(self.cache(out))
            ok, detail = self.refused(second, first.pid)
            if not ok and second.rc == 0 and first.poll() is not None:
                ok, detail = True, "the first build had finished; the second returned the complete cache"
            self.record("cache lock", "second cache-teacher (while the first builds) refused", ok, detail)
        else:
            self.record("cache lock", "first build took the lock", False, "never saw its lock")
        res = first.wait(600)
        diff = same_as_solo(out) if res.rc == 0 else f"rc {res.rc}: {last_line(res.err)}"
        self.record("cache lock", "first build complete and equal to a solo build", not diff, diff)
        out = self.folder()
        a, b = self.runner.start(self.cache(out)), self.runner.start(self.cache(out))
        results = [p.wait(600) for p in (a, b)]
        clean = all(r.rc == 0 or (r.rc != 0 and not r.traceback and "pid" in r.err) for r in results)
        diff = same_as_solo(out) if any(r.rc == 0 for r in results) else "neither build finished"
        self.record("cache lock", "two cache-teacher at once: each finished or refused cleanly", clean,
                    "; ".join(f"rc {r.rc}" for r in results))
        self.record("cache lock", "two cache-teacher at once: cache complete and equal to a solo build",
                    not diff, diff)

    def bench(self) -> None:
        out = self.folder()
        spec = self.work / "bench.yaml"
        spec.write_text(BENCH.format(out=out, base=self.base))
        argv = ["bench", str(spec), "--no-plots"]
        first = self.runner.start(argv)
        if self.wait_for_lock(out / ".bench.lock", first.pid, first):
            ok, detail = self.refused(self.runner.run(argv), first.pid)
            self.record("bench lock", "second bench into a running bench's folder refused", ok, detail)
        else:
            self.record("bench lock", "first bench took the lock", False, "never saw its lock")
        first.kill()
        first.wait(60)
        res = self.runner.run(argv, timeout=600)
        ok = res.rc == 0 and not res.traceback
        self.record("bench lock", "stale lock of the SIGKILLed bench taken over, grid finished", ok,
                    f"rc {res.rc}: {last_line(res.err) or last_line(res.out)}")


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--json", help="write the checks and the totals to this file")
    args = ap.parse_args()
    t0 = time.monotonic()
    work = work_folder(args.work, "concurrency")
    print(f"work folder: {work}")
    checks = Checks(work, Runner("fresh" if args.fresh else "fork", timeout=120))
    checks.two_trainings()
    checks.stale_locks()
    checks.caches()
    checks.bench()
    counts = tally([r["outcome"] for r in checks.rows])
    report(f"concurrency, {len(checks.rows)} checks in {time.monotonic() - t0:.0f}s", counts,
           {"checks": checks.rows, "mode": checks.runner.mode}, args.json)


if __name__ == "__main__":
    main()
