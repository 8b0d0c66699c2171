"""A/B of two commits by CPU time, interleaved, for a machine shared with other work (issue 18: "the
benchmarks do not regress by more than 5%").

Wall-clock figures from two runs an hour apart on a shared machine differ by more than the 5% being looked
for (load averages of 1 and 10 double every figure). This compares two commits the way that survives it:

- each commit is exported with `git archive` into its own directory (edits in progress in the checkout do
  not leak in), and both run with this venv;
- the rounds interleave the commits (base, head; head, base; ...), so drifting load hits both alike;
- every figure is the CPU time of the process doing the work, on SQLite, where the engine runs inside
  that process: the sync engine (each `run_sync` of bench/sync.py's first sync, no-change resync and 1%
  churn resync, timed by wrapping `attest.entitlements.sync.run_sync`), the campaign launch
  (bench/reviews_launch.py's own `launch_cpu_s`, `launch_again_cpu_s`) and the reviewer inbox (bench/
  reviews_inbox.py's app CPU per GET /reviews, p50 of 200 requests, and the bulk approval's CPU);
- the least CPU time of the rounds is compared (as timeit does: a disturbance only ever adds time), with
  the median and the spread beside it, so a difference smaller than the spread is read as no difference.

    python -m bench.ab --base e226030                         # head = HEAD; writes bench/results/ab.md
    python -m bench.ab --base e226030 --rounds 3 --people 20000 --items 200000

Each operation runs at a tenth of the sizes bench/sync.py etc. use by default, so a round takes minutes.

`--measure cpu` (the default) is the above. CPU time on this shared 2-core machine still spreads 7-60% between
rounds, too much for a 5% question; `--measure instructions` answers it by counting the instructions executed
in the same regions under callgrind, deterministic to a few thousandths of a percent (bench/ab_instructions.py,
its own report bench/results/ab_instructions.md; its options --people, --items, --requests, --keep):

    python -m bench.ab --base e226030 --measure instructions

For the inbox pages, whose requests take some 20 ms, bench/ab_paired.py runs both commits at once and makes
their requests take turns one by one, so that a change in the machine's speed falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.machine import describe

ROOT = Path(__file__).resolve().parent.parent
BASE_DEFAULT = "e226030"  # the last commit before issue 18's restructuring began (make test with xdist: e371709)

# run inside the exported tree: bench/sync.py's run_engine with run_sync wrapped to time each sync's CPU
SYNC_DRIVER = """
import json, sys, time
import attest.entitlements.sync as sync_pkg
cpu = []
real = sync_pkg.run_sync
def timed(*a, **k):
    c0 = time.process_time()
    try:
        return real(*a, **k)
    finally:
        cpu.append(time.process_time() - c0)
sync_pkg.run_sync = timed
from bench import sync as bench_sync
out = bench_sync.run_engine("sqlite", int(sys.argv[1]))
print(json.dumps({"first_sync_cpu_s": cpu[0], "nochange_resync_cpu_s": cpu[1], "churn_resync_cpu_s": cpu[2],
                  "grants": out["grants"]}))
"""


def export(rev: str, into: Path) -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in: {stdout[-2000:]}")


def _run(tree: Path, argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{argv[:3]} in {tree} failed:\n{proc.stderr[-3000:]}")
    return _last_json(proc.stdout)


def measure(tree: Path, people: int, items: int) -> dict[str, float]:
    """One round of every operation in one exported tree: operation -> CPU seconds (or ms)."""
    figures: dict[str, float] = {}
    s = _run(tree, ["-c", SYNC_DRIVER, str(people)])
    figures |= {"sync: first (CPU s)": s["first_sync_cpu_s"], "sync: no-change resync (CPU s)":
                s["nochange_resync_cpu_s"], "sync: 1% churn resync (CPU s)": s["churn_resync_cpu_s"]}
    launch = _run(tree, ["-m", "bench.reviews_launch", "--engine", "sqlite", "--people", str(people), "--json"])
    figures |= {"launch: first (CPU s)": launch["launch_cpu_s"], "launch: next (CPU s)": launch["launch_again_cpu_s"]}
    inbox = _run(tree, ["-m", "bench.reviews_inbox", "--engine", "sqlite", "--items", str(items), "--json"])
    for label, page in inbox["pages"].items():
        figures[f"inbox: {label} (app CPU p50 ms)"] = page["cpu"]["p50_ms"]
    if inbox.get("bulk"):
        figures["inbox: bulk approve (CPU s)"] = min(b["cpu_s"] for b in inbox["bulk"])
    return figures


def run(out: Path, argv: list[str] | None = None) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--measure", choices=["cpu", "instructions"], default="cpu")
    measure_kind, rest = pre.parse_known_args(argv or [])
    if measure_kind.measure == "instructions":
        from bench import ab_instructions

        return ab_instructions.run(out.parent / "ab_instructions.md", rest)
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("--measure", choices=["cpu", "instructions"], default="cpu",
                        help="cpu: CPU time, interleaved rounds (this module); instructions: bench/ab_instructions.py")
    parser.add_argument("--base", default=BASE_DEFAULT)
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=200_000)
    args = parser.parse_args(argv or [])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="attest-ab-") as tmp:
        trees = {"base": Path(tmp) / "base", "head": Path(tmp) / "head"}
        shas = {name: export(rev, trees[name]) for name, rev in (("base", args.base), ("head", args.head))}
        results: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
        for r in range(args.rounds):
            for name in (("base", "head") if r % 2 == 0 else ("head", "base")):
                print(f"round {r + 1}: {name} ({shas[name]})", file=sys.stderr, flush=True)
                results[name].append(measure(trees[name], args.people, args.items))
    load_after = os.getloadavg()
    rows = []
    worst = 0.0
    for op in results["head"][0]:
        b = [x[op] for x in results["base"] if op in x]
        h = [x[op] for x in results["head"]]
        if not b:
            rows.append(f"| {op} | (not in base) | {min(h):.2f} | | |")
            continue
        mb, mh = statistics.median(b), statistics.median(h)
        ratio = min(h) / min(b) if min(b) else float("nan")
        spread = max((max(b) - min(b)) / mb, (max(h) - min(h)) / mh) if mb and mh else 0.0
        worst = max(worst, ratio)
        rows.append(f"| {op} | {min(b):.2f} (median {mb:.2f}, max {max(b):.2f}) | {min(h):.2f} (median {mh:.2f}, "
                    f"max {max(h):.2f}) | "
                    f"{ratio:.2f}x | {spread * 100:.0f}% |")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    text = "\n".join([
        "## A/B of the restructuring: CPU time, base vs head (issue 18)\n",
        f"`python -m bench.ab --base {args.base} --head {args.head} --rounds {args.rounds} --people {args.people:,} "
        f"--items {args.items:,}`, run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Base {shas['base']} (before issue 18's "
        f"restructuring), head {shas['head']}. SQLite, so the engine's work is CPU time of the measuring process; "
        f"rounds interleaved (base, head; head, base; ...); the least of {args.rounds} rounds (a disturbance only "
        "adds CPU time), its median and max beside it; head / base compares the least; spread = the larger of the "
        "two (max-min)/median. A ratio inside the spread is no measurable difference.\n",
        f"Machine: {describe()}; load average before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} (shared with other work: CPU time, not wall time, is compared). "
        f"Peak RSS of any child: {peak:.0f} MB.\n",
        "| operation | base | head | head / base | spread |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Largest head/base ratio: {worst:.2f}x.",
        "",
    ])
    out.write_text(text)
    return text


if __name__ == "__main__":
    print(run(Path(__file__).parent / "results" / "ab.md", sys.argv[1:]))
