"""RepeatFilter: identical log lines within a window are shown once and counted."""

from __future__ import annotations

import logging

from pipeline.logs import RepeatFilter

FAIL = (
    "FAIL [rdkafka#producer-1] [thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to "
    "ipv4#127.0.0.1:1 failed: Connection refused (after {ms}ms in state CONNECT{extra})"
)


def record(
    message: str, level: int = logging.ERROR, name: str = "pipeline.kafka"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "%s", (message,), None)


def test_a_repeated_line_is_shown_once_per_window_then_with_its_count() -> None:
    now = [0.0]
    dedupe = RepeatFilter(window_s=30.0, clock=lambda: now[0])
    shown = []
    for i in range(290):  # a reconnect every 50 ms, durations and suppression counts vary
        now[0] = i * 0.05
        extra = f", {i} identical error(s) suppressed" if i % 7 == 0 else ""
        r = record(FAIL.format(ms=i % 3, extra=extra))
        if dedupe.filter(r):
            shown.append(r.getMessage())
    assert shown == [FAIL.format(ms=0, extra=", 0 identical error(s) suppressed")]
    now[0] = 45.0
    later = record(FAIL.format(ms=1, extra=""))
    assert dedupe.filter(later)
    assert later.getMessage() == FAIL.format(ms=1, extra="") + (
        " (repeated 289 times in the last 45s)"
    )


def test_different_lines_levels_and_loggers_are_not_merged() -> None:
    dedupe = RepeatFilter(window_s=30.0, clock=lambda: 0.0)
    assert dedupe.filter(record("partition 1 lost"))
    assert dedupe.filter(record("partition 2 lost"))
    assert dedupe.filter(record("partition 1 lost", level=logging.WARNING))
    assert dedupe.filter(record("partition 1 lost", name="pipeline.runner"))
    assert not dedupe.filter(record("partition 1 lost"))


def test_a_line_seen_once_per_window_carries_no_count() -> None:
    now = [0.0]
    dedupe = RepeatFilter(window_s=10.0, clock=lambda: now[0])
    assert dedupe.filter(record("broker down"))
    now[0] = 11.0
    again = record("broker down")
    assert dedupe.filter(again)
    assert again.getMessage() == "broker down"
