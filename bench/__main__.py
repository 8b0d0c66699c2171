"""`make bench`: run every benchmark and write bench/RESULTS.md (figures + the machine they came from).

    python -m bench                 # everything, at the sizes the issues name
    python -m bench --only sync     # one benchmark (module name without the package)
    python -m bench --list
    python -m bench load --duration 20  # one benchmark by name; options after it go to that benchmark

Each benchmark module has `run(out: Path) -> str` that writes its own section to bench/results/<name>.md
and returns it. A benchmark that fails is reported in RESULTS.md with its error; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.machine import describe

HERE = Path(__file__).parent
BENCHMARKS = [
    ("sync", "Sync engine at 1M grants (issue 2)"),
    ("okta_sync", "Okta connector (issue 3)"),
    ("aws_sync", "AWS connector (issue 4)"),
    ("github_sync", "GitHub connector (issue 5)"),
    ("reviews_launch", "Campaign launch at 1M grants (issue 6)"),
    ("reviews_inbox", "Reviewer inbox and bulk approval (issue 6)"),
    ("evidence_export", "Evidence export at 1M items (issue 7)"),
    ("notify_escalation", "Review e-mail and escalation of 1,000 reviewers (issue 16)"),
    ("load", "Load: reviewers on PostgreSQL, 2 web workers, 2 schedulers (issue 19)"),
    ("ten_million", "Ten million grants on PostgreSQL (issue 19, part 7)"),
    ("request_cost", "Request cost: SQL statements, app CPU and HTML bytes of a reviewer request (issue 19)"),
    ("ab", "A/B of the restructuring by CPU time against the commit before it (issue 18)"),
    ("ab_instructions", "A/B of the restructuring by instructions executed (callgrind) against the commit before it "
     "(issue 18)"),
    ("ab_paired", "A/B of the reviewer inbox by CPU time, the two commits' requests taking turns (issue 18)"),
]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--list", action="store_true")
    parser.add_argument("names", nargs="*", help="benchmarks to run (as --only)")
    args, extra = parser.parse_known_args()
    args.only += args.names
    available = [(name, title) for name, title in BENCHMARKS if (HERE / f"{name}.py").exists()]
    if args.list:
        for name, title in available:
            print(f"{name:18} {title}")
        return 0
    unknown = sorted(set(args.only) - {name for name, _ in available})
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (see --list)")
    chosen = [(n, t) for n, t in available if not args.only or n in args.only]
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    failed = 0
    for name, title in chosen:
        print(f"== {name}: {title}", flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            # options the launcher does not know go to the benchmark (its run(out, argv)), e.g. load --duration
            module.run(results_dir / f"{name}.md", *([extra] if extra else []))
            print(f"   done in {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception:
            failed += 1
            (results_dir / f"{name}.md").write_text(
                f"## {title}\n\nFAILED on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC:\n\n```\n{traceback.format_exc()[-4000:]}\n```\n")
            print(traceback.format_exc(), flush=True)
    write_results(available)
    return 1 if failed else 0


def write_results(available: list[tuple[str, str]]) -> None:
    parts = [
        "# Benchmark results\n",
        "`make bench` (`python -m bench`) writes this file from `bench/results/*.md`; each section says when and "
        "on what machine it was measured. Speed is measured here, never asserted in timed tests.\n",
        f"Last assembled {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on: {describe()}\n",
    ]
    for name, _title in available:
        # a benchmark writes results/<module>.md; the connector ones also keep results/<connector>.md
        for candidate in (f"{name}.md", f"{name.split('_')[0]}.md"):
            path = HERE / "results" / candidate
            if path.exists():
                parts.append(path.read_text().strip() + "\n")
                break
    (HERE / "RESULTS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
