"""The ``/metrics`` endpoints of ``pipeline run``.

- One worker (``--workers 1``): the worker serves its own ``Metrics`` and the consumer lag.
- ``--workers N``: the supervisor serves one endpoint for all of them. Before it starts any
  worker it makes a new, empty directory for the run and names it in
  ``PROMETHEUS_MULTIPROC_DIR``, which the workers inherit: prometheus-client's multiprocess
  mode then keeps each worker's values in files of its own there, and the endpoint sums them.
  A worker that dies leaves its counters' files behind, so totals neither drop nor double when
  it is restarted (the new process starts files of its own at 0); its gauges are dropped
  (``mark_process_dead``). The lag is read once, by the supervisor, not by every worker. The
  directory is removed when the supervisor exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from pipeline.metrics.hook import Metrics
from pipeline.metrics.lag import LAG_INTERVAL_S as LAG_S
from pipeline.metrics.lag import LagCollector, readers

if TYPE_CHECKING:
    from pipeline.app import Pipeline

log = logging.getLogger("pipeline.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class Endpoint:
    """A running ``/metrics`` HTTP endpoint; ``close`` stops it (and its lag thread)."""

    server: Any
    thread: threading.Thread
    lag: LagCollector
    directory: str | None = None  # the run's multiprocess directory (supervisor only)
    metrics: Metrics | None = field(default=None)  # the worker's own (single worker only)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def worker_died(self, pid: int | None) -> None:
        """Drop a dead worker's gauges (its counters stay in the totals)."""
        if self.directory is not None and pid is not None:
            mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.lag.close()
        if self.directory is not None:
            if os.environ.get(MULTIPROC_ENV) == self.directory:
                del os.environ[MULTIPROC_ENV]
            shutil.rmtree(self.directory, ignore_errors=True)


def with_metrics(pipeline: Pipeline, metrics: Metrics | None = None) -> Pipeline:
    """``pipeline`` with a ``Metrics`` hook for every stage (a new one when None)."""
    return dataclasses.replace(pipeline, hooks=(*pipeline.hooks, metrics or Metrics()))


def serve(
    registry: CollectorRegistry, pipeline: Pipeline, port: int, lag_interval_s: float = LAG_S
) -> Endpoint:
    """Serve ``registry`` plus the lag of ``pipeline``'s groups on ``port`` (0: any free)."""
    lag = LagCollector(pipeline.transport.lag_monitor, readers(pipeline.plans), lag_interval_s)
    registry.register(lag)
    lag.start()
    server, thread = start_http_server(port, registry=registry)
    return Endpoint(server, thread, lag)


def serve_worker(
    pipeline: Pipeline, port: int, lag_interval_s: float = LAG_S
) -> tuple[Pipeline, Endpoint]:
    """One worker's endpoint: ``pipeline`` with its ``Metrics`` hook, and the endpoint."""
    metrics = Metrics()
    endpoint = serve(metrics.registry, pipeline, port, lag_interval_s)
    endpoint.metrics = metrics
    log.info("metrics on :%d/metrics", endpoint.port)
    return with_metrics(pipeline, metrics), endpoint


def serve_supervisor(pipeline: Pipeline, port: int) -> Endpoint:
    """The endpoint of ``--workers N``: call before starting the workers (they inherit the
    run's directory through the environment)."""
    directory = tempfile.mkdtemp(prefix="pipeline-metrics-")  # new and empty: this run's only
    os.environ[MULTIPROC_ENV] = directory
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    endpoint = serve(registry, pipeline, port)
    endpoint.directory = directory
    log.info("metrics of every worker on :%d/metrics (%s)", endpoint.port, directory)
    return endpoint
