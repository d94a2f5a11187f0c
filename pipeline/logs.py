"""Logging setup for the CLI and workers. Records carry coordinates, never payloads."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import ConfigError

# librdkafka says how long a failed connection took and how many identical errors it dropped;
# neither makes a message different for the reader.
_DURATION = re.compile(r"\b\d+ms\b")
_SUPPRESSED = re.compile(r", \d+ identical error\(s\) suppressed")


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(level: str | None = None) -> str:
    """``level`` (else ``PIPELINE_LOG_LEVEL``, else INFO) as a level name, or ConfigError."""
    chosen = level or os.environ.get("PIPELINE_LOG_LEVEL") or "INFO"
    name = chosen.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        where = "--log-level" if level else "PIPELINE_LOG_LEVEL"
        raise ConfigError(f"{where} must be one of {', '.join(LEVELS)} (got {chosen!r})")
    return name


FORMATS = ("text", "json")


def log_format(fmt: str | None = None) -> str:
    """``fmt`` (else ``PIPELINE_LOG_FORMAT``, else ``text``): ``text`` or ``json`` (one JSON
    object per line: ``pipeline.jsonlogs``), or ConfigError."""
    chosen = fmt or os.environ.get("PIPELINE_LOG_FORMAT") or "text"
    name = chosen.strip().lower()
    if name not in FORMATS:
        choices = ", ".join(FORMATS)
        raise ConfigError(f"PIPELINE_LOG_FORMAT must be one of {choices} (got {chosen!r})")
    return name


def setup_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Log to stderr at ``level`` (see ``log_level``) in format ``fmt`` (see ``log_format``);
    ConfigError for a level or format that is none."""
    fmt = log_format(fmt)
    logging.basicConfig(
        level=log_level(level),
        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s",
    )
    if fmt == "json":
        from pipeline.jsonlogs import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())


@dataclass(slots=True)
class _Seen:
    since: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets a message through once per ``window_s``; identical ones within the window are
    dropped and counted, and the next one let through says how many were.

    "Identical" means same logger, level and text once durations ("after 3ms") and
    librdkafka's own suppression counts are ignored. A client that cannot reach its broker
    retries every few milliseconds and says so each time: this keeps one line per window.
    The count of the last window is reported only if the message comes again (there is no
    timer); a message that stops is not followed by a summary.
    """

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = (record.name, record.levelno, _SUPPRESSED.sub("", _DURATION.sub("#ms", message)))
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self._window:
            seen.suppressed += 1
            return False
        if seen is not None and seen.suppressed:
            record.msg = "%s (repeated %d times in the last %.0fs)"
            record.args = (message, seen.suppressed, now - seen.since)
        self._forget_old(now)
        self._seen[key] = _Seen(now)
        return True

    def _forget_old(self, now: float) -> None:
        # Bounded memory: entries past their window go (with any count they still held).
        if len(self._seen) > 1000:
            self._seen = {k: s for k, s in self._seen.items() if now - s.since < self._window}
