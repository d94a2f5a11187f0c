"""OURS with the tracing hook registered (``pipeline.tracing.Tracing``) and no tracer provider
configured: the OpenTelemetry API alone, as an app that installs the ``[otel]`` extra and sets
up no SDK. Its drain next to OURS' is the cost of tracing left off."""

from __future__ import annotations

from bench.contenders import common, ours

if __name__ == "__main__":
    from pipeline.tracing import Tracing

    ours.main(common.parse_args(__doc__ or ""), hooks=[Tracing()])
