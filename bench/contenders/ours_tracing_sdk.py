"""OURS with the tracing hook and the OpenTelemetry SDK configured: a ``TracerProvider`` with the
usual ``BatchSpanProcessor``, exporting to an exporter that drops the spans (``sdk_provider``),
so the cost is the SDK's span making and batching, not a collector's network. Its drain next to
OURS' is the cost of tracing on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.contenders import common, ours


def sdk_provider() -> Any:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return provider


if __name__ == "__main__":
    from pipeline.tracing import Tracing

    ours.main(common.parse_args(__doc__ or ""), hooks=[Tracing(sdk_provider())])
