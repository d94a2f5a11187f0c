"""What only running workers know (events in flight, completed and failed counts, breaker
state), for ``pipeline status``: a pluggable ``LiveSource``.

``PrometheusSource`` reads the workers' ``/metrics`` endpoints (``pipeline run --metrics-port``)
in the Prometheus text format, summing over endpoints. The names it reads are ``NAMES``; a
source that cannot be reached yields nothing, and status shows those columns as unknown
(never as 0, which would claim an idle stage). Any object with ``read()`` and ``describe()``
can stand in for it (a metrics backend's API, say).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

NAMES = {
    "active": "pipeline_events_in_flight",
    "completed": "pipeline_events_completed_total",
    "failed": "pipeline_events_failed_total",
    "breaker": "pipeline_breaker_state",
}
# The worst state a worker is in is the stage's.
BREAKER_SEVERITY = ("closed", "half-open", "open")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class LiveCounts:
    """One stage's numbers from its workers (since they started)."""

    active: int
    completed: int
    failed: int
    breaker: str | None  # None: no worker reported a breaker state


Live = dict[tuple[str, str], LiveCounts]  # (stage, group) -> counts


class LiveSource(Protocol):
    def read(self) -> Live:
        """The stages reported; raise ``OSError`` (or return ``{}``) when unreachable."""
        ...

    def describe(self) -> str: ...


class PrometheusSource:
    """The sum of the ``/metrics`` endpoints at ``urls``, each fetched within ``timeout_s``."""

    def __init__(self, urls: Sequence[str], timeout_s: float = 2.0) -> None:
        self.urls = tuple(urls)
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return ", ".join(self.urls)

    def read(self) -> Live:
        totals: dict[tuple[str, str], dict[str, float]] = {}
        states: dict[tuple[str, str], set[str]] = {}
        for url in self.urls:
            text = self._fetch(url)
            for name, labels, value in parse(text):
                key = (labels.get("stage", ""), labels.get("group", ""))
                if name == NAMES["breaker"]:
                    if value > 0:
                        states.setdefault(key, set()).add(labels.get("state", ""))
                    continue
                for field, metric in NAMES.items():
                    if name == metric:
                        counts = totals.setdefault(key, {})
                        counts[field] = counts.get(field, 0) + value
        return {
            key: LiveCounts(
                int(c.get("active", 0)),
                int(c.get("completed", 0)),
                int(c.get("failed", 0)),
                _worst(states.get(key, set())),
            )
            for key, c in totals.items()
        }

    def _fetch(self, url: str) -> str:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body: bytes = response.read()
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
            raise OSError(f"metrics at {url}: {getattr(exc, 'reason', exc)}") from None
        return body.decode("utf-8", "replace")


def _worst(states: set[str]) -> str | None:
    known = [s for s in BREAKER_SEVERITY if s in states]
    return known[-1] if known else None


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample in a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(raw_labels or "")}
        samples.append((name, labels, value))
    return samples


def _unescape(value: str) -> str:
    return value.replace(r"\"", '"').replace(r"\n", "\n").replace("\\\\", "\\")
