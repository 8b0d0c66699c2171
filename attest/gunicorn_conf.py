"""gunicorn settings `attest serve` runs with (`--config python:attest.gunicorn_conf`).

Threads: each worker process serves THREADS requests at once (gunicorn's `gthread` worker), so while one
request waits for PostgreSQL (most of a reviewer request's time: issue 19's profile) another uses the CPU.
The app is safe to run so: the database session is per request (`flask.g`, attest/web.py), the engine's
pool (5 + 10 overflow) covers the threads, the audit chain's writer serialises on a row lock in the database
(attest/trail/chain.py), prometheus-client's metrics lock their values, and nothing else is shared mutable
module state. Size: `--workers` about the cores (the CPU the app itself uses), threads 4 (requests spend
about half their time waiting on the database); override either without a code change, e.g.
`GUNICORN_CMD_ARGS="--threads 8"` (the command line wins over this file). docs/operations.md has the sizing.

Request latency is counted per worker process in prometheus-client's multiprocess files (`attest serve`
sets PROMETHEUS_MULTIPROC_DIR; see attest/metrics.py): a worker that exits is marked dead so its live
gauges leave the merged view (its counters and histograms stay counted, as Prometheus expects).
"""

from __future__ import annotations

import os
import sys

from prometheus_client import multiprocess

THREADS = 4
# How soon a thread back from PostgreSQL gets the GIL while another thread of its worker runs Python (renders a
# page): CPython makes it wait up to the switch interval, 5 ms by default, per turn of each running thread. A
# decision waits so for every answer from PostgreSQL, and one thread's wait while it holds the audit chain's head
# (attest/trail/chain.py) is every other decision's: the load benchmark saw 1.4 backends queued on that lock.
# At 1 ms a DB round trip with two busy threads beside it took 0.4-2.6 ms on average instead of 10-12 ms
# (a loaded 2-core machine), for a few hundred more thread switches a second.
SWITCH_INTERVAL = 0.001

worker_class = "gthread"
threads = THREADS


def post_worker_init(worker) -> None:  # gunicorn's server hook, in each worker once it is ready
    sys.setswitchinterval(SWITCH_INTERVAL)


def child_exit(server, worker) -> None:  # gunicorn's server hook
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
