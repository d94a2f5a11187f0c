"""The request-reply round trip reaches ``make bench``'s summary line as p50 and p99."""

from __future__ import annotations

from bench import reply_latency


def test_the_bench_summary_names_the_round_trip_p50_and_p99() -> None:
    """One request at a time, 100 round trips of 1..100 ms: p50 ~50 ms, p99 ~99 ms."""
    one = reply_latency.percentiles([i / 1000 for i in range(1, 101)])
    figures = {"sequential": one, "in_flight_16": one, "dropped_replies": 0}
    summary = reply_latency.headline(figures)
    assert summary == {"request_reply_p50_ms": one["p50_ms"], "request_reply_p99_ms": one["p99_ms"]}
    assert 49 <= summary["request_reply_p50_ms"] <= 51  # type: ignore[operator]
    assert 98 <= summary["request_reply_p99_ms"] <= 100  # type: ignore[operator]
