"""Prometheus metrics: a hook subscriber (``Metrics``) and the endpoints of ``pipeline run``.

Off unless ``PIPELINE_METRICS_PORT`` (``Settings.metrics_port``, ``pipeline run
--metrics-port``) is set. prometheus-client is imported only in this package.
"""

from pipeline.metrics.hook import Metrics
from pipeline.metrics.lag import LagCollector, readers
from pipeline.metrics.serve import Endpoint, serve, serve_supervisor, serve_worker, with_metrics

__all__ = [
    "Endpoint",
    "LagCollector",
    "Metrics",
    "readers",
    "serve",
    "serve_supervisor",
    "serve_worker",
    "with_metrics",
]
