"""Benchmarks: `make bench` (python -m bench) runs each module's run(out) and writes RESULTS.md."""
