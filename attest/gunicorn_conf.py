"""gunicorn settings `attest serve` runs with (`--config python:attest.gunicorn_conf`).

Request latency is counted per worker process in prometheus-client's multiprocess files (`attest serve`
sets PROMETHEUS_MULTIPROC_DIR; see attest/metrics.py): a worker that exits is marked dead so its live
gauges leave the merged view (its counters and histograms stay counted, as Prometheus expects).
"""

from __future__ import annotations

import os


def child_exit(server, worker) -> None:  # gunicorn's server hook
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
