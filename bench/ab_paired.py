"""A/B of the reviewer inbox by CPU time, the two commits' requests taking turns one by one (issue 18).

bench/ab.py interleaves whole rounds (a round: minutes), and this VM's speed moves faster than that: the
same base commit's deep inbox page measured 21.4 ms and 33.8 ms p50 CPU in two processes ten minutes apart
(bench/results/ab.md). Here the two commits run at once, each in its own process with its own database
(bench/reviews_inbox.py's `run_engine`, unchanged, from each exported tree), and a turnstile makes them
take turns at every GET the benchmark sends: base's request, then head's, then base's next... with the
other process stopped while one works (it waits for its turn, its work between two requests included). A
change in the machine's speed then falls on the two commits alike, a request apart; what differs is the
code.

- The turnstile: each worker wraps the Flask test client's `get` (the benchmark's only way into the app);
  before a request it writes `r` to its pipe and waits for `g`, after it writes `d`. The driver lets one
  worker through at a time and holds the other at its next `r`.
- Each worker reports the benchmark's own figures (the p50 and p95 of the app's CPU per request, 200
  requests a page after 5 warm-ups: first page, deep page 5,000 in, filtered page) and, from the wrapper,
  every request's CPU time, so the driver also gives the median of the per-request head/base ratios of
  requests made side by side.

    python -m bench.ab_paired --base e226030 --head HEAD --items 200000 --runs 2

Writes bench/results/ab_paired.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.ab import BASE_DEFAULT, export
from bench.machine import describe

WARMUPS, TIMED = 5, 200  # bench/reviews_inbox.py's GETs a page, in both trees
PER_PAGE = WARMUPS + TIMED

# runs inside an exported tree: the tree's own bench/reviews_inbox.py, its test client's GETs through the turnstile
WORKER = """
import json, os, resource, sys
from flask.testing import FlaskClient
turn_in, turn_out = os.fdopen(int(sys.argv[2]), "rb", 0), os.fdopen(int(sys.argv[3]), "wb", 0)
real_get, cpu = FlaskClient.get, []
def get(self, *a, **k):
    turn_out.write(b"r")
    if turn_in.read(1) != b"g":
        raise SystemExit("turnstile closed")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        return real_get(self, *a, **k)
    finally:
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        turn_out.write(b"d")
FlaskClient.get = get
import bench.reviews_inbox as m
out = m.run_engine("sqlite", int(sys.argv[1]))
turn_out.close()
print(json.dumps({"pages": {k: v["cpu"] for k, v in out["pages"].items()}, "requests": cpu}))
"""


class Worker:
    def __init__(self, tree: Path, items: int) -> None:
        to_worker_r, self._go = os.pipe()
        self._turns, from_worker_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(items), str(to_worker_r), str(from_worker_w)],
                                     cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     pass_fds=(to_worker_r, from_worker_w))
        os.close(to_worker_r)
        os.close(from_worker_w)
        self.requests = 0

    def wait_turn(self) -> bool:
        """Block until the worker stands at its next request (True) or has finished (False)."""
        return os.read(self._turns, 1) == b"r"

    def one_request(self) -> None:
        os.write(self._go, b"g")
        if os.read(self._turns, 1) != b"d":
            raise RuntimeError("a worker stopped inside a request")
        self.requests += 1

    def result(self) -> dict:
        stdout, stderr = self.proc.communicate()
        os.close(self._go)
        os.close(self._turns)
        if self.proc.returncode:
            raise RuntimeError(f"worker failed:\n{stderr[-3000:]}")
        return json.loads(stdout.strip().splitlines()[-1])


def paired_run(trees: dict[str, Path], items: int) -> dict[str, dict]:
    """One run: both trees' inbox benchmarks, their requests taking turns."""
    workers = {name: Worker(tree, items) for name, tree in trees.items()}
    waiting = {name: w.wait_turn() for name, w in workers.items()}  # both built and at their first request
    while any(waiting.values()):
        for name, w in workers.items():
            if waiting[name]:
                w.one_request()
                waiting[name] = w.wait_turn()  # held again before the other goes
    return {name: w.result() for name, w in workers.items()}


def run(out: Path, argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_paired")
    parser.add_argument("--base", default=BASE_DEFAULT)
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv or [])
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="attest-ab-paired-") as tmp:
        trees = {"base": Path(tmp) / "base", "head": Path(tmp) / "head"}
        shas = {name: export(rev, trees[name]) for name, rev in (("base", args.base), ("head", args.head))}
        for r in range(args.runs):
            print(f"run {r + 1} of {args.runs}", file=sys.stderr, flush=True)
            runs.append(paired_run(trees, args.items))
    load_after = os.getloadavg()
    labels = list(runs[0]["head"]["pages"])
    for run_ in runs:
        for name in ("base", "head"):
            if len(run_[name]["requests"]) != PER_PAGE * len(labels):
                raise RuntimeError(f"{name} sent {len(run_[name]['requests'])} requests, not {PER_PAGE} a page")
    rows = []
    for p, label in enumerate(labels):
        cells, run_pairs = [], []
        for run_ in runs:
            b, h = run_["base"], run_["head"]
            timed = slice(p * PER_PAGE + WARMUPS, (p + 1) * PER_PAGE)
            pairs = [hh / bb for bb, hh in zip(b["requests"][timed], h["requests"][timed], strict=True) if bb > 0]
            run_pairs.append(statistics.median(pairs))
            cells.append(f"{b['pages'][label]['p50_ms']:.2f} / {h['pages'][label]['p50_ms']:.2f} ms: "
                         f"{h['pages'][label]['p50_ms'] / b['pages'][label]['p50_ms']:.3f}x "
                         f"(pairs {statistics.median(pairs):.3f}x)")
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {statistics.median(run_pairs):.3f}x |")
    text = "\n".join([
        "## A/B of the reviewer inbox by CPU time, requests taking turns (issue 18)\n",
        f"`python -m bench.ab_paired --base {args.base} --head {args.head} --items {args.items:,} --runs {args.runs}`, "
        f"run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Base {shas['base']} (before issue 18's restructuring), head "
        f"{shas['head']}. Both commits' bench/reviews_inbox.py on SQLite at once, each GET of one taking its turn "
        "after the other's (bench/ab_paired.py). Per run and page: the app's CPU per request, p50 of 200 "
        "requests, base / head, their ratio, and in brackets the median of the ratios of the 200 requests made "
        "side by side; last, the median of the runs' paired ratios, this benchmark's answer.\n",
        f"Machine: {describe()}; load average before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)}.\n",
        "| page | " + " | ".join(f"run {i + 1}: base / head p50" for i in range(len(runs)))
        + " | head / base: the runs' median of the paired ratios |",
        "|---|" + "---:|" * (len(runs) + 1),
        *rows,
        "",
    ])
    out.write_text(text)
    return text


if __name__ == "__main__":
    print(run(Path(__file__).parent / "results" / "ab_paired.md", sys.argv[1:]))
