"""JSON log lines (``PIPELINE_LOG_FORMAT=json``): one object per line, with where it happened.

Each line carries ``ts``, ``level``, ``logger``, ``process`` and ``message``, and, where known:
``stage`` and ``group`` (on a stage's threads), ``topic``, ``partition``, ``offset`` and
``event_id`` (inside a handler call, or given with ``extra=``), ``trace_id`` and ``span_id``
(the current OpenTelemetry span when ``pipeline.tracing`` is on, else the trace of the record's
``traceparent``). An exception adds ``exc_type`` and ``stack`` (its frames), never its message:
a message may quote a payload, and no payload is ever logged.

Where comes from ``LogContext``, a hook the Pipeline adds for itself when JSON logs are on
(``structured()``): it sets a context variable around each handler call, so the lines the
handler logs carry its event's coordinates too.
"""

from __future__ import annotations

import functools
import json
import logging
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from pipeline import headers as hdr
from pipeline.context import Context
from pipeline.hooks import Hook, StageInfo

FIELDS = ("stage", "group", "topic", "partition", "offset", "event_id", "trace_id", "span_id")
_WHERE: ContextVar[dict[str, Any] | None] = ContextVar("pipeline_log_where", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        where = _WHERE.get()
        if where:
            line.update(where)
        line.update(_current_span())
        for name in FIELDS:  # what the call gave with extra= wins
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["exc_type"] = type(exc).__qualname__
            line["stack"] = "".join(traceback.format_tb(exc.__traceback__))
        return json.dumps(line, default=str)


@functools.cache
def _otel_trace() -> ModuleType | None:
    """``opentelemetry.trace``, loaded with the first JSON line (every worker imports this
    module; only JSON logs look for a span), or None without the optional ``[otel]`` extra."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def _current_span() -> dict[str, str]:
    trace = _otel_trace()
    if trace is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def structured() -> bool:
    """Whether the root logger writes JSON lines (``setup_logging`` with the json format, or a
    handler the application gave a ``JsonFormatter``)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


class LogContext(Hook):
    """Puts the stage, and inside a handler call its event's coordinates, where JSON log lines
    find them."""

    def on_stage_start(self, stage: StageInfo) -> None:
        _WHERE.set({"stage": stage.name, "group": stage.group})

    def before_batch(self, stage: StageInfo, records: Any) -> None:
        # In a test harness several stages share one thread: say which one is stepping.
        _WHERE.set({"stage": stage.name, "group": stage.group})

    def around_handler(self, stage: StageInfo, event: Any, ctx: Context) -> _Where:
        where = {
            "stage": stage.name, "group": stage.group, "topic": ctx.topic,
            "partition": ctx.partition, "offset": ctx.offset, "event_id": ctx.event_id,
        }  # fmt: skip
        trace_id = _trace_of(ctx.headers.get(hdr.TRACEPARENT))
        if trace_id is not None:
            where["trace_id"] = trace_id
        return _Where(where)

    def on_stage_stop(self, stage: StageInfo) -> None:
        _WHERE.set(None)


class _Where:
    __slots__ = ("_token", "_where")

    def __init__(self, where: dict[str, Any]) -> None:
        self._where = where
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = _WHERE.set(self._where)

    def __exit__(self, *exc: object) -> None:
        _WHERE.reset(self._token)


def _trace_of(traceparent: bytes | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), or None."""
    if traceparent is None or len(traceparent) < 55:
        return None
    trace_id = traceparent[3:35].decode("latin-1").lower()
    ok = all(c in "0123456789abcdef" for c in trace_id) and trace_id != "0" * 32
    return trace_id if ok else None
