"""Job results and progress values: what a handler may hand back, checked where it hands it.

A result is a small JSON value (``None``, bool, number, string, list, dict with string keys)
or a pydantic model (stored as its ``model_dump(mode="json")``), at most ``RESULT_MAX_BYTES``
once encoded as compact UTF-8 JSON. It is checked inside the handler's own call (``ctx.result``,
or the handler's return value in a tracking stage), so a bad one fails that call with
``ResultError``: a ``SerializationError``, never retried, so the event goes to the dead-letter
topic (its original bytes, with the error in its ``dlq-*`` headers): nothing is lost, and the
job shows ``dead-lettered`` with the reason.

This module imports nothing heavier than pydantic: ``pipeline.context`` uses it on every
handler call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pipeline.errors import ResultError

if TYPE_CHECKING:
    from pipeline.context import Context

# Kafka takes records of ~1 MB by default; a job entry carries its result next to the rest of
# its status, and a status endpoint returns it: a result is a summary, not a payload.
RESULT_MAX_BYTES = 16 * 1024
NOTE_MAX_CHARS = 200  # a progress note is a short human-readable line


def encode_result(value: Any) -> str:
    """``value`` as compact JSON text, or ``ResultError`` saying why it cannot be a result."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ResultError(
            f"a job result must be JSON-serialisable or a pydantic model, not "
            f"{type(value).__name__} ({exc})"
        ) from None
    size = len(text.encode())
    if size > RESULT_MAX_BYTES:
        raise ResultError(
            f"a job result is at most {RESULT_MAX_BYTES} bytes of JSON, this one is {size}: "
            "store large output elsewhere and return a reference to it"
        )
    return text


def check_progress(percent: Any, note: Any) -> tuple[float, str | None]:
    """``(percent, note)`` validated: a number in 0..100 and an optional short string."""
    if (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not (math.isfinite(percent) and 0 <= percent <= 100)
    ):
        raise ValueError(f"ctx.progress takes a percentage from 0 to 100, not {percent!r}")
    if note is not None and not isinstance(note, str):
        raise ValueError(f"ctx.progress note must be a string or None, not {type(note).__name__}")
    if note is not None and len(note) > NOTE_MAX_CHARS:
        note = note[: NOTE_MAX_CHARS - 1] + "…"
    return float(percent), note


def keeping_result(handler: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """``handler`` whose non-None return value becomes ``ctx.result`` (checked inside the
    call, so a bad one fails it): the innermost wrapper, under every ``around_handler``."""
    if is_async:

        async def kept_async(event: Any, ctx: Context) -> None:
            value = await handler(event, ctx)
            if value is not None:
                ctx.result(value)

        return kept_async

    def kept(event: Any, ctx: Context) -> None:
        value = handler(event, ctx)
        if value is not None:
            ctx.result(value)

    return kept
