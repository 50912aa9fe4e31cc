"""Bad configs: ``unikd train`` on 60 bad config files and key=value overrides, each classified.

Every case runs ``unikd train CONFIG [overrides]`` into a fresh out_dir (a tiny tiny_cnn/digits base:
``model=tiny_cnn data.name=digits tensorboard=false device=cpu``, plus ``epochs=1`` unless the case is about
epochs or comes from a file). Outcomes:

- ``clean error``: nonzero exit, no traceback, one line on stderr, naming the key, value or file (the
  tokens listed with the case), before training starts;
- ``unclear error``: nonzero exit without a traceback, but the message is several lines or names none of
  the tokens;
- ``traceback``: a raw traceback;
- ``accepted``: the bad value got through: the run finished, or was still training at the timeout, or
  failed only later in training (e.g. a non-finite loss from ``optim.lr=.inf``);
- ``hang``: still running at the timeout without having started training.

Usage::

    python benchmarks/reliability_config.py                  # 60 cases, ~1-2 min
    python benchmarks/reliability_config.py --json config.json --timeout 20 --fresh
"""

from __future__ import annotations

import os
import time

from _reliability import Runner, last_line, report, script_parser, tally, work_folder

COMMON = ["model=tiny_cnn", "data.name=digits", "tensorboard=false", "device=cpu"]
KD = ["method=kd", "teacher.model=tiny_cnn"]
FILE_BASE = "model: tiny_cnn\ndata: {name: digits}\nepochs: 1\n"
# (label, overrides, tokens the error must name). Overrides get COMMON + epochs=1 first.
OVERRIDES: list[tuple[str, list[str], list[str]]] = [
    ("typo'd key", ["optim.lrr=0.1"], ["optim.lrr"]),
    ("unknown top-level key", ["foo=1"], ["foo"]),
    ("typo'd section", ["dta.name=digits"], ["dta"]),
    ("typo'd loss hyperparameter", [*KD, "loss.temprature=4"], ["loss.temprature"]),
    ("loss key of another method", ["loss.temperature=4"], ["loss.temperature"]),
    ("epochs not a number", ["epochs=abc"], ["epochs"]),
    ("negative epochs", ["epochs=-1"], ["epochs"]),
    ("zero epochs", ["epochs=0"], ["epochs"]),
    ("epochs=10**20", ["epochs=100000000000000000000"], ["epochs"]),
    ("fractional epochs", ["epochs=2.5"], ["epochs"]),
    ("epochs=1e400 (inf)", ["epochs=1e400"], ["epochs"]),
    ("lr=.inf", ["optim.lr=.inf"], ["optim.lr"]),
    ("lr=inf (string)", ["optim.lr=inf"], ["optim.lr"]),
    ("lr=.nan", ["optim.lr=.nan"], ["optim.lr"]),
    ("negative lr", ["optim.lr=-0.1"], ["optim.lr"]),
    ("lr not a number", ["optim.lr=fast"], ["optim.lr"]),
    ("seed=2**70", ["seed=1180591620717411303424"], ["seed"]),
    ("negative seed", ["seed=-1"], ["seed"]),
    ("batch size 0", ["data.batch_size=0"], ["batch_size"]),
    ("negative batch size", ["data.batch_size=-8"], ["batch_size"]),
    ("fractional batch size", ["data.batch_size=1.5"], ["batch_size"]),
    ("unknown method", ["method=nosuch"], ["nosuch"]),
    ("unknown model", ["model=nosuch"], ["nosuch"]),
    ("unknown dataset", ["data.name=nosuch"], ["nosuch"]),
    ("unknown teacher model", ["method=kd", "teacher.model=nosuch", "teacher.checkpoint={work}/t.pt"],
     ["nosuch"]),
    ("kd without a teacher", ["method=kd"], ["teacher"]),
    ("missing teacher checkpoint", [*KD, "teacher.checkpoint=/nonexistent/t.pt"], ["/nonexistent/t.pt"]),
    ("loss.terms a number", ["loss.terms=5"], ["loss.terms"]),
    ("loss.terms unknown method", ["loss.terms={nosuch: {}}"], ["nosuch"]),
    ("loss.terms weight not a number", [*KD, "loss.terms={kd: {weight: abc}}"], ["weight"]),
    ("loss.terms entry without method", ["loss.terms=[{weight: 1}]"], ["method"]),
    ("loss.terms typo'd hyperparameter", [*KD, "loss.terms={kd: {tempreature: 4}}"], ["tempreature"]),
    ("unknown schedule", ["sched.name=nosuch"], ["nosuch"]),
    ("milestones not a list", ["sched.milestones=abc"], ["milestones"]),
    ("unknown optimizer", ["optim.name=nosuch"], ["nosuch"]),
    ("unknown precision", ["precision=fp8"], ["fp8"]),
    ("unknown device", ["device=tpu"], ["tpu"]),
    ("negative mixup alpha", ["data.mixup_alpha=-1"], ["mixup_alpha"]),
    ("label smoothing 1.5", ["loss.smoothing=1.5"], ["smoothing"]),
    ("ema_decay 2", ["ema_decay=2"], ["ema_decay"]),
    ("negative checkpoint_every", ["checkpoint_every=-5"], ["checkpoint_every"]),
    ("negative weight decay", ["optim.weight_decay=-1"], ["weight_decay"]),
    ("negative num_workers", ["data.num_workers=-1"], ["num_workers"]),
    ("override without '='", ["epochs"], ["epochs"]),
    ("override with an empty key", ["=5"], ["=5"]),
    ("scalar for a section", ["optim=5"], ["optim"]),
    ("resume from a missing file", ["resume=/nonexistent/last.pt"], ["/nonexistent/last.pt"]),
    ("val_split larger than the data", ["data.val_split=100000"], ["val_split"]),
]
# (label, file content: str/bytes, or "missing" / "dir" / "fifo"; tokens). The file path is always a token.
FILES: list[tuple[str, object, list[str]]] = [
    ("missing file", "missing", []),
    ("directory as config", "dir", []),
    ("FIFO as config", "fifo", []),
    ("empty file", "", []),
    ("list instead of a mapping", "- epochs\n- 1\n", []),
    ("scalar file", "5\n", []),
    ("duplicate top-level key", FILE_BASE + "epochs: 2\n", ["epochs"]),
    ("duplicate nested key", FILE_BASE + "optim: {lr: 0.1, lr: 0.2}\n", ["lr"]),
    ("non-UTF-8 file", FILE_BASE.encode() + b"# caf\xe9\n", []),
    ("invalid YAML", FILE_BASE + "optim: [lr\n", []),
    ("unknown key in a section", FILE_BASE + "optim:\n  lrr: 0.1\n", ["lrr"]),
    ("python tag (code execution)", FILE_BASE + "seed: !!python/object/apply:os.getpid []\n", ["python"]),
]


def classify(res, tokens: list[str]) -> tuple[str, str]:  # noqa: ANN001
    started = "preflight" in res.out
    lines = [x for x in res.err.splitlines() if x.strip() and " it/s]" not in x]
    if res.timed_out:
        return ("accepted" if started else "hang"), "still running at the timeout"
    if res.rc == 0:
        return "accepted", "the run finished"
    if res.traceback:
        return "traceback", last_line(res.err)
    if started:
        return "accepted", f"failed in training: {last_line(res.err)}"
    named = any(t.lower() in res.err.lower() for t in tokens)
    ok = named and len(lines) == 1
    why = "" if len(lines) == 1 else f"{len(lines)} lines; "
    why += "" if named else f"names none of {tokens}; "
    return ("clean error" if ok else "unclear error"), why + (lines[0] if lines else "")


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--json", help="write the cases and the totals to this file")
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="seconds before a run counts as accepted (or hang)")
    args = ap.parse_args()
    t0 = time.monotonic()
    work = work_folder(args.work, "config")
    runner = Runner("fresh" if args.fresh else "fork", timeout=args.timeout)
    cases = []
    (work / "t.pt").write_bytes(b"not a checkpoint")  # a file, so that the teacher *model* is what is wrong
    for label, overrides, tokens in OVERRIDES:
        overrides = [o.replace("{work}", str(work)) for o in overrides]
        epochs = [] if any(o.startswith("epochs") for o in overrides) else ["epochs=1"]
        cases.append((label, ["-", *COMMON, *epochs, *overrides], tokens))
    for i, (label, content, tokens) in enumerate(FILES):
        path = work / f"config{i}.yaml"
        if content == "dir":
            path.mkdir()
        elif content == "fifo":
            os.mkfifo(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content != "missing":
            path.write_text(content)
        cases.append((label, [str(path), *COMMON], [*tokens, path.name]))
    rows = []
    for i, (label, argv, tokens) in enumerate(cases):
        out = work / f"run{i}"
        res = runner.run(["train", *argv, f"out_dir={out}"])
        outcome, detail = classify(res, tokens)
        rows.append({"case": label, "command": "unikd train " + " ".join(argv), "outcome": outcome,
                     "rc": res.rc, "detail": detail[:300], "seconds": round(res.seconds, 2)})
        print(f"  {outcome:13} {label:36} {detail[:140]}", flush=True)
    unclean = [r for r in rows if r["outcome"] != "clean error"]
    print(f"\nnot clean ({len(unclean)}):")
    for r in unclean:
        print(f"  {r['outcome']}: {r['case']}  ({r['command'].split(' ', 2)[2]})  {r['detail'][:160]}")
    counts = tally([r["outcome"] for r in rows])
    report(f"bad config, {len(rows)} cases in {time.monotonic() - t0:.0f}s", counts,
           {"cases": rows, "mode": runner.mode}, args.json)


if __name__ == "__main__":
    main()
