"""OURS with metrics on: the same stage and runner as ``ours``, plus what ``pipeline run`` adds
with ``PIPELINE_METRICS_PORT``: the ``Metrics`` hook, its /metrics endpoint and the thread
reading the consumer lag every 5 s. Its drain next to OURS' is the cost of metrics."""

from __future__ import annotations

from bench.contenders import common, ours

if __name__ == "__main__":
    common.mark("imported")
    ours.main(common.parse_args(__doc__ or ""), metrics=True)
