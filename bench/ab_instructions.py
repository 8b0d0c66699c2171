"""A/B of two commits by instruction count under callgrind: deterministic, for the 5% question of issue 18
("the benchmarks do not regress by more than 5%") that CPU time on a shared 2-core machine cannot answer
(bench/ab.py's CPU-time spreads here are 7-60%).

    python -m bench.ab --base e226030 --measure instructions   # writes bench/results/ab_instructions.md
    python -m bench.ab_instructions --base e226030 --people 5000 --items 50000 --keep /tmp/ab-callgrind

What is counted: the instructions (callgrind's Ir) executed by the Python process doing the work: the
interpreter, the C extensions, SQLite's C code (SQLite runs in that process), the app. Not the kernel
(system calls are not followed into the kernel), not time spent waiting for a CPU or for I/O. Unlike CPU time
on a machine shared with other work, the count does not move with the load: two runs of the same tree agree
within 0.5% (the resyncs, which vary most; the rest within 0.1%; --repeat re-measures one benchmark and the
report gives what it found), so a 5% difference is visible.
It is not time: a cache miss and an add both count one, so it misses a regression that is only memory
traffic; the CPU-time A/B (bench/ab.py, --measure cpu) stays beside it for that.

How: each commit is exported with `git archive` (as bench/ab.py does) and its own benchmarks run in the
real Python binary under `valgrind --tool=callgrind --instr-atstart=no` (nothing is counted while the data
is built). The regions counted are exactly the ones the CPU timers of bench/ab.py wrap, found through the
benchmarks' own timers, so nothing in the base tree needs to change:
- sync: `attest.entitlements.sync.run_sync` wrapped, as bench/ab.py's SYNC_DRIVER does (first sync,
  no-change resync, 1% churn resync of bench/sync.py's run_engine);
- launch: bench/reviews_launch.py's `time.process_time` (its first launch and next launch CPU timers;
  the raw INSERT ... SELECT timers it also takes are not counted);
- inbox: bench/reviews_inbox.py's `_cpu` (the CPU time around each GET /reviews after the 5 warm-ups, and
  around each bulk approval), with REQUESTS requests per page kind (the count per request is deterministic,
  so a few are enough; the median is reported: a request that finds the session's last_seen_at a minute
  old also writes it (sessions.TOUCH_EVERY), which under callgrind's slowness is every few requests).
Sizes: --people 5,000 (46k grants) and --items 50,000, so that one tree takes about 5 minutes here; the
count doubles with the size (2,500 -> 5,000 people: sync and launch 1.98-2.04x). At these sizes the first
launch does not take the bulk path (secondary indexes dropped and rebuilt, db.BULK_LOAD_ROWS: 100,000 active
grants) that bench/ab.py's first launch at 20,000 people takes: it inserts into the empty, indexed table like
the next launch; --people 11000 reaches the bulk path (about 2.5 minutes more per tree for the launch).

At a region's first timer call the driver turns callgrind's instrumentation on (`callgrind_control -i on`),
at its second it dumps the count (`--dump=NAME`, which also zeroes it) and turns it off. Those control
calls themselves leave a constant ~0.75M instructions in every region (spawning and waiting for
callgrind_control); the median of 5 empty regions measured first in the same process is subtracted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.machine import describe

ROOT = Path(__file__).resolve().parent.parent
BASE_DEFAULT = "e226030"  # the last commit before issue 18's restructuring began
REQUESTS = 5  # GET /reviews counted per page kind
EMPTY_REGIONS = 5

# run inside an exported tree under callgrind: python -S -c DRIVER <site-packages> <mode> <size> <requests>
DRIVER = r"""
import json, os, site, sys
site.addsitedir(sys.argv[1])  # the venv's packages (the real binary does not know the venv)
mode, size, requests = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import attest
assert os.path.dirname(os.path.dirname(os.path.abspath(attest.__file__))) == os.getcwd(), attest.__file__
PID = os.getpid()

def ctl(*args):
    pid = os.posix_spawnp("callgrind_control", ["callgrind_control", *args, str(PID)], os.environ,
                          file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    status = os.waitpid(pid, 0)[1]
    if status:
        raise RuntimeError(f"callgrind_control {args} exited {status}")

class Regions:
    # pairs of calls of a timer: the first turns counting on, the second dumps the count as NAME, turns it off
    def __init__(self, names):
        self.names, self.calls = list(names), 0
    def wrap(self, real):
        def timer(*a, **k):
            pair, start = divmod(self.calls, 2)
            self.calls += 1
            name = self.names[pair] if pair < len(self.names) else None
            if name is None:
                return real(*a, **k)
            if start == 0:
                value = real(*a, **k)
                ctl("-i", "on")
                return value
            ctl(f"--dump={name}")
            ctl("-i", "off")
            return real(*a, **k)
        return timer

calibrate = Regions(["warm"] + [f"empty_{i}" for i in range(EMPTY_REGIONS)]).wrap(lambda: None)
for _ in range(2 * (EMPTY_REGIONS + 1)):
    calibrate()

if mode == "sync":
    import attest.entitlements.sync as sync_pkg
    regions = Regions(["sync_first", "sync_nochange", "sync_churn"])
    real_sync, timer = sync_pkg.run_sync, regions.wrap(lambda: None)
    def counted(*a, **k):
        timer()
        try:
            return real_sync(*a, **k)
        finally:
            timer()
    sync_pkg.run_sync = counted
    from bench import sync as bench_sync
    out = bench_sync.run_engine("sqlite", size)
    result = {"grants": out["grants"]}
elif mode == "launch":
    import time, types
    import bench.reviews_launch as m
    # its process_time pairs: raw bare, raw shaped (not counted), first launch, next launch
    regions = Regions([None, None, "launch_first", "launch_next"])
    m.time = types.SimpleNamespace(perf_counter=time.perf_counter, process_time=regions.wrap(time.process_time))
    out = m.run_engine("sqlite", size)
    result = {"grants": out["grants"], "items": out["items"]}
else:
    import bench.reviews_inbox as m
    m.REQUESTS = requests
    if hasattr(m, "timed_gets"):  # the head tree's helper took REQUESTS as a default argument
        m.timed_gets.__defaults__ = (requests, 5)
    regions = Regions([f"page{p}_{i}" for p in range(3) for i in range(requests)] + ["bulk_1", "bulk_2"])
    m._cpu = regions.wrap(m._cpu)
    out = m.run_engine("sqlite", size)
    result = {"pages": list(out["pages"]), "campaign_items": out["campaign_items"],
              "reviewer_items": out["reviewer_items"], "bulk_items": [b["items"] for b in out["bulk"]]}
assert regions.calls == 2 * len(regions.names), (regions.calls, regions.names)
print(json.dumps(result))
""".replace("EMPTY_REGIONS", str(EMPTY_REGIONS))


def real_python() -> str:
    """The interpreter binary itself (a venv's python is a symlink, a pyenv shim a shell script)."""
    return os.path.realpath(sys.executable)


def read_dumps(directory: Path) -> dict[str, int]:
    """NAME -> instructions of every `callgrind_control --dump=NAME` part file in `directory`."""
    counts: dict[str, int] = {}
    for path in directory.glob("cg.out.*"):
        head = path.read_text(errors="replace")
        name = re.search(r"^desc: Trigger: dump (\S+)$", head, re.M)
        totals = re.search(r"^totals: (\d+)$", head, re.M)
        if name and totals:
            counts[name.group(1)] = int(totals.group(1))
    return counts


def count(tree: Path, mode: str, size: int, requests: int, keep: Path) -> tuple[dict[str, int], dict, float]:
    """Run one benchmark of `tree` under callgrind: (region -> instructions net of the control calls, its result,
    seconds)."""
    keep.mkdir(parents=True, exist_ok=True)
    for old in keep.glob("cg.out*"):
        old.unlink()
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    env.pop("VIRTUAL_ENV", None)
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={keep}/cg.out",
           real_python(), "-S", "-c", DRIVER, sysconfig.get_paths()["purelib"], mode, str(size), str(requests)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{mode} in {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    dumps = read_dumps(keep)
    overhead = statistics.median(dumps[f"empty_{i}"] for i in range(EMPTY_REGIONS))
    result["overhead"] = overhead
    result["overhead_range"] = [min(dumps[f"empty_{i}"] for i in range(EMPTY_REGIONS)),
                                max(dumps[f"empty_{i}"] for i in range(EMPTY_REGIONS))]
    regions = {k: v - overhead for k, v in dumps.items() if k != "warm" and not k.startswith("empty_")}
    return regions, result, seconds


def measure(tree: Path, people: int, items: int, requests: int, keep: Path, log=print) -> tuple[dict, dict]:
    """Every operation of one tree: (operation -> instructions, notes)."""
    figures: dict[str, float] = {}
    notes: dict = {"seconds": {}}
    sync, r, notes["seconds"]["sync"] = count(tree, "sync", people, requests, keep / "sync")
    notes["raw"] = {"sync": sync}
    notes["grants"], notes["overhead"] = r["grants"], {"sync": r["overhead_range"]}
    figures |= {"sync: first": sync["sync_first"], "sync: no-change resync": sync["sync_nochange"],
                "sync: 1% churn resync": sync["sync_churn"]}
    log(f"   sync done in {notes['seconds']['sync']:.0f} s")
    launch, r, notes["seconds"]["launch"] = count(tree, "launch", people, requests, keep / "launch")
    notes["raw"]["launch"] = launch
    notes["launch_items"], notes["overhead"]["launch"] = r["items"], r["overhead_range"]
    figures |= {"launch: first": launch["launch_first"], "launch: next": launch["launch_next"]}
    log(f"   launch done in {notes['seconds']['launch']:.0f} s")
    inbox, r, notes["seconds"]["inbox"] = count(tree, "inbox", items, requests, keep / "inbox")
    notes["raw"]["inbox"] = inbox
    notes["inbox"], notes["overhead"]["inbox"] = r, r["overhead_range"]
    for p, label in enumerate(r["pages"]):
        per_request = [inbox[f"page{p}_{i}"] for i in range(requests)]
        figures[f"inbox: {label} (median of {requests} requests)"] = statistics.median(per_request)
        mid = statistics.median(per_request)
        touched = [x for x in per_request if x > 1.2 * mid]  # also wrote the session's last_seen_at
        notes.setdefault("request_spread", {})[label] = {
            "within": max(abs(x - mid) / mid for x in per_request if x not in touched),
            "touched": len(touched), "touched_extra": max((x / mid - 1 for x in touched), default=0.0)}
    figures["inbox: bulk approve (first of 2)"] = inbox["bulk_1"]
    figures["inbox: bulk approve (second of 2)"] = inbox["bulk_2"]
    log(f"   inbox done in {notes['seconds']['inbox']:.0f} s")
    return figures, notes


def _m(n: float) -> str:
    return f"{n / 1e6:,.1f} M"


def run(out: Path, argv: list[str] | None = None) -> str:
    from bench.ab import export

    parser = argparse.ArgumentParser(prog="python -m bench.ab_instructions")
    parser.add_argument("--base", default=BASE_DEFAULT)
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--people", type=int, default=5_000, help="sync and launch (bench.ab's CPU A/B: 20,000)")
    parser.add_argument("--items", type=int, default=50_000, help="inbox campaign (the reviewer has 10,000)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="GET /reviews counted per page kind")
    parser.add_argument("--keep", type=Path, help="keep callgrind's part files here (for callgrind_annotate)")
    parser.add_argument("--repeat", choices=["sync", "launch", "inbox", "none"], default="sync",
                        help="measure this benchmark of head a second time and report the difference (determinism)")
    args = parser.parse_args(argv or [])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="attest-abi-") as tmp:
        keep = args.keep or Path(tmp) / "callgrind"
        trees = {"base": Path(tmp) / "base", "head": Path(tmp) / "head"}
        shas = {name: export(rev, trees[name]) for name, rev in (("base", args.base), ("head", args.head))}
        results, notes = {}, {}
        for name in ("base", "head"):
            log(f"{name} ({shas[name]})")
            results[name], notes[name] = measure(trees[name], args.people, args.items, args.requests, keep / name,
                                                 log)
        determinism = ""
        if args.repeat != "none":
            log(f"head ({shas['head']}) {args.repeat} again")
            size = args.items if args.repeat == "inbox" else args.people
            again, _, _ = count(trees["head"], args.repeat, size, args.requests, keep / "head-again" / args.repeat)
            first = notes["head"]["raw"][args.repeat]
            diffs = {k: abs(again[k] - first[k]) / first[k] for k in first}
            worst_region = max(diffs, key=diffs.get)
            determinism = (
                f"Determinism: head's {args.repeat} benchmark measured twice in two processes: the {len(diffs)} "
                f"regions differ by at most {diffs[worst_region] * 100:.4f}% ({worst_region}: "
                f"{first[worst_region]:,.0f} vs {again[worst_region]:,.0f} instructions)"
                + (", per request; the inbox medians are compared" if args.repeat == "inbox" else "") + ".")
    rows, worst, worst_op = [], 0.0, ""
    for op, h in results["head"].items():
        b = results["base"][op]
        ratio = h / b
        if ratio > worst:
            worst, worst_op = ratio, op
        rows.append(f"| {op} | {_m(b)} | {_m(h)} | {ratio:.3f}x |")
    nb, nh = notes["base"], notes["head"]
    spreads = [v for n in (nb, nh) for v in n["request_spread"].values()]
    within = max(v["within"] for v in spreads)
    touched, touched_extra = sum(v["touched"] for v in spreads), max(v["touched_extra"] for v in spreads)
    over = [x for n in (nb, nh) for rng in n["overhead"].values() for x in rng]
    minutes = {k: sum(n["seconds"].values()) / 60 for k, n in (("base", nb), ("head", nh))}
    text = "\n".join([
        "## A/B of the restructuring: instructions executed, base vs head (issue 18)\n",
        f"`python -m bench.ab --measure instructions --base {args.base} --head {args.head} --people {args.people:,} "
        f"--items {args.items:,} --requests {args.requests}`, run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        f"Base {shas['base']} (before issue 18's restructuring), head {shas['head']}. SQLite.\n",
        "Counted: the instructions (callgrind's Ir, valgrind 3.19) that the Python process executes inside exactly "
        "the regions bench/ab.py's CPU timers wrap (each `run_sync`; reviews_launch's launch timers; "
        "reviews_inbox's per-request and bulk timers): the interpreter, the app, SQLAlchemy, Flask/Jinja, SQLite's C "
        "code. Not counted: the kernel and waiting (for a CPU, for I/O). Why: on this shared 2-core machine CPU "
        "time spreads 7-60% between rounds (bench/results/ab.md), so it cannot show 5%; the instruction count "
        "does not depend on the load. It is not time (a cache miss counts as one instruction).\n",
        f"Sizes: sync and launch on a demo org of {args.people:,} people ({nh['grants']:,} grants; the launch "
        f"snapshots {nh['launch_items']:,} items); inbox: a campaign of {nh['inbox']['campaign_items']:,} items in "
        f"which the reviewer has {nh['inbox']['reviewer_items']:,}, pages of 50, the median of {args.requests} "
        f"requests per page after 5 warm-ups (in both trees the requests of one kind are within {within * 100:.1f}% "
        f"of their median, but for {touched} of the {6 * args.requests} that found the session's last_seen_at a "
        f"minute old and also wrote it, up to {touched_extra * 100:.0f}% more: a minute is a few requests under "
        "callgrind), bulk approvals of "
        f"{' then '.join(f'{n:,}' for n in nh['inbox']['bulk_items'])} items (the reviewer's unflagged items). "
        "Each region's count has the median of "
        f"{EMPTY_REGIONS} empty regions measured in the same process subtracted (the on/dump/off control calls: "
        f"{min(over) / 1e6:.2f}-{max(over) / 1e6:.2f} M instructions). One run per tree (callgrind: base "
        f"{minutes['base']:.1f} min, head {minutes['head']:.1f} min here).\n",
        *([determinism + "\n"] if determinism else []),
        f"Machine: {describe()}.\n",
        "| operation | base instructions | head instructions | head / base |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"Largest head/base ratio: {worst:.3f}x ({worst_op}).",
        "",
    ])
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"args": vars(args) | {"keep": str(args.keep)}, "shas": shas,
                                                      "results": results, "notes": notes}, indent=1, default=str))
    return text


if __name__ == "__main__":
    print(run(Path(__file__).parent / "results" / "ab_instructions.md", sys.argv[1:]))
