"""The bench's latency chain: its records' stamps, its steady-state rule and its table."""

from __future__ import annotations

import time
from random import Random

import pytest

from bench import report
from bench.contenders import common, load, sink


@pytest.mark.parametrize("sent_ns", [0, 1, -1, 127, 128, 2**62, 1_764_612_345_678_901_234])
def test_sent_ns_is_read_from_the_end_of_an_encoded_order(sent_ns: int) -> None:
    """The varint read from the record's tail is what fastavro wrote for its last field."""
    record = common.make_record(Random(3), sent_ns=sent_ns)
    value = common.encode_record(record)
    assert common.sent_ns_of(value) == sent_ns
    assert value.endswith(common.zigzag_varint(sent_ns))


def test_a_stamped_record_decodes_as_an_order_with_its_key_and_send_time() -> None:
    """The load's pre-encoded records are valid bench.Orders, keyed by a unique order id."""
    records = load.Stamped(variety=3)
    now = time.time_ns()
    keys = set()
    for i in range(7):
        value, key = records.take(i, now + i)
        order = common.decode(value)
        assert (order.order_id.encode(), order.sent_ns, order.hops) == (key, now + i, 0)
        keys.add(key)
    assert len(keys) == 7


def test_latencies_without_a_trend_are_steady_however_noisy() -> None:
    """Five seconds that swing around one level (RAW's own chain at 5%) are steady."""
    assert sink.steady([900.0, 40.0, 45.0, 52.0, 41.0, 47.0])
    assert sink.steady([92.0, 91.0, 191.0, 94.0, 135.0])  # one outlying second
    assert sink.steady([3000.0, 3100.0, 2950.0, 3050.0, 3000.0])  # saturated: the flag says so
    assert not sink.steady([40.0, 45.0, 41.0, 44.0])  # too few seconds yet


def test_a_draining_startup_backlog_is_not_steady() -> None:
    """A backlog falling by a quarter a second is not steady, though three of its seconds are
    within 25% + 20 ms of each other (the rule that let OURS' backlog into the window)."""
    draining = [1853.0, 1524.0, 1111.0, 629.0, 216.0]
    assert not sink.steady(draining)
    by_quarter = [3000.0 * 0.78**i for i in range(12)]
    assert not any(sink.steady(by_quarter[:n]) for n in range(5, 13))
    slow = [300.0, 290.0, 280.0, 270.0, 260.0]  # 10 ms a second, inside every tolerance but one
    assert not sink.steady(slow)


def test_a_growing_backlog_or_the_top_of_a_hump_is_not_steady() -> None:
    """A rising latency, and a backlog that built and now drains (no slope over five seconds
    but falling over the last three), are not steady."""
    assert not sink.steady([300.0, 420.0, 560.0, 700.0, 850.0])
    assert not sink.steady([2184.0, 3169.0, 3451.0, 3001.0, 2495.0])
    # OURS' startup series from the run that prompted this rule: steady only once drained.
    ours = [2305.0, 2184.0, 3169.0, 3451.0, 3002.0, 2495.0, 1853.0, 1524.0, 1111.0, 629.0,
            216.0, 109.0, 118.0, 243.0, 175.0]  # fmt: skip
    assert [n for n in range(1, len(ours) + 1) if sink.steady(ours[:n])] == [15]


def test_a_second_that_received_nothing_is_not_steady() -> None:
    """A stalled chain (NaN: no record that second) is not steady until five full seconds."""
    nan = float("nan")
    assert not sink.steady([40.0, 41.0, nan, 40.0, 42.0])
    assert sink.steady([40.0, 41.0, nan, 40.0, 42.0, 41.0, 40.0, 41.0])


def test_the_trend_is_the_median_pairwise_slope() -> None:
    """Theil-Sen: a line's slope, not moved by one outlier."""
    assert sink.trend([10.0, 20.0, 30.0, 40.0]) == 10.0
    assert sink.trend([10.0, 20.0, 900.0, 40.0, 50.0]) == 10.0
    assert sink.trend([5.0]) == 0.0


def test_the_warm_up_ends_when_steady_after_the_minimum_or_at_the_limit() -> None:
    """Seconds of receipt close as records come; the first partial one is not a sample."""
    t0, second = 50 * 10**9, 10**9
    watch = sink.Steadiness(max_warmup_s=20)
    for i, backlog_ms in enumerate((900.0, 700.0, 500.0, 300.0)):  # startup backlog draining
        watch.add([backlog_ms], t0 + i * second)
        assert not watch.done
    for i in range(4, 8):
        watch.add([30.0, 32.0], t0 + i * second)
        assert not watch.done  # the last five seconds closed so far still show the drain
    watch.add([31.0], t0 + 8 * second)  # one high second of five is an outlier, not a trend
    assert (watch.done, watch.steady, watch.warmup_s(t0 + 8 * second)) == (True, True, 8.0)

    growing = sink.Steadiness(max_warmup_s=5)
    for i in range(7):
        growing.add([100.0 * 2**i], t0 + i * second)
    assert (growing.done, growing.steady) == (True, False)


def test_seconds_without_records_count_as_empty_samples() -> None:
    """Two seconds with nothing received are two NaN samples, not skipped."""
    t0, second = 50 * 10**9, 10**9
    watch = sink.Steadiness(max_warmup_s=60)
    for i in (0, 1, 2, 5, 6):
        watch.add([30.0], t0 + i * second + 1)
    assert [m == m for m in watch.medians] == [True, True, True, False, False, True]


def test_the_summary_times_only_the_window_and_gives_a_series_per_second() -> None:
    """Records sent before the window (warm-up) or after it are left out of the figures."""
    ms = 10**6
    start = 100 * 10**9
    samples = [
        (start - 2 * 10**9 + i * ms, start - 2 * 10**9 + i * ms + 500 * ms) for i in range(5)
    ]
    samples += [(start + i * 10 * ms, start + i * 10 * ms + 20 * ms) for i in range(100)]
    samples += [(start + 10**10, start + 10**10 + 9000 * ms)]
    result = sink.summary(samples, (start, start + 10**9, 100), True, 4.0)
    assert (result["received"], result["p50_ms"], result["max_ms"]) == (100, 20.0, 20.0)
    assert not result["saturated"]
    assert result["series"][0] == [-2, 5, 500.0, 500.0]
    assert result["series"][1] == [0, 100, 20.0, 20.0]


def test_the_chain_table_shows_warm_up_cpu_and_load_lag() -> None:
    """One row per contender, the round that never got steady marked with a star."""

    def chain_round(p99: float, steady: bool) -> dict[str, object]:
        return {"p50_ms": p99 / 2, "p99_ms": p99, "p99_late_ms": p99, "saturated": False,
                "received": 10, "expected": 10, "warmup_s": 4.0, "steady": steady,
                "stage_cpu_us_per_record": 120.0, "load_behind_ms": 3.0}  # fmt: skip

    rounds = {"0.25": {"raw": [chain_round(100, True)], "ours": [chain_round(140, False)]}}
    raw_row, ours_row = report.chain_table(rounds, {"0.25": 1000.0})[2:]
    assert "| raw | 50.0 | 100.0 | 1.00 |" in raw_row
    assert "| ours | 70.0 | 140.0 | 1.40 |" in ours_row
    assert "| 4* | 120 | 3 | 10/10 |" in ours_row


def test_the_hop_series_gives_each_hop_by_second_of_send_time() -> None:
    """Per second of send time: the load's hop, then each stage's (append to append), for the
    records that reached the last topic; a record still on its way is left out."""
    from bench import chain

    sent = {b"a": 1_000, b"b": 1_500, b"c": 2_100, b"lost": 2_200}
    first = {b"a": 1_010, b"b": 1_520, b"c": 2_105, b"lost": 2_210}
    last = {b"a": 1_030, b"b": 1_560, b"c": 2_125}
    rows = chain.hop_series([sent, first, last], from_ms=2_000)
    assert rows == [[-1, 2, 10.0, 20.0], [0, 1, 5.0, 20.0]]  # the lower median of two


def test_a_rate_that_saturates_raw_is_noted_as_a_backlog() -> None:
    """Where RAW's own chain could not keep up, the table says its figures measure a queue."""

    def chain_round(saturated: bool) -> dict[str, object]:
        return {"p50_ms": 900.0, "p99_ms": 2000.0, "p99_late_ms": 2000.0, "saturated": saturated,
                "received": 10, "expected": 10, "warmup_s": 4.0, "steady": True,
                "stage_cpu_us_per_record": 120.0, "load_behind_ms": 3.0}  # fmt: skip

    rounds = {
        "0.25": {"raw": [chain_round(True)] * 3, "ours": [chain_round(True)] * 3},
        "0.05": {"raw": [chain_round(False)] * 3, "ours": [chain_round(True)] * 3},
    }
    lines = report.chain_table(rounds, {"0.25": 1000.0, "0.05": 200.0})
    notes = [line for line in lines if line.startswith("- ")]
    assert len(notes) == 1 and notes[0].startswith("- 25% of RAW (1,000/s): RAW's own chain")


def test_ours_readiness_reports_its_startup_without_an_imported_mark(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The variants run through ``ours.main`` (metrics, tracing) marked nothing at import: READY
    must still be said, its startup times taken from the first mark (it raised KeyError in the
    loop thread, so every ours-metrics drain failed)."""
    from bench.contenders import ours

    monkeypatch.setattr(common, "MARKS", {"assigned": 2_000_000_000})
    readiness = ours.Readiness("assigned", "topics_ensured")
    readiness.met("assigned")
    readiness.met("topics_ensured")
    out = capsys.readouterr().out
    assert "READY" in out and '"assigned": 0.0' in out
