"""Failing records: poison bytes are dead-lettered at once, failing handlers retried in place."""

from __future__ import annotations

from confluent_kafka import Producer

from pipeline import Context, Publisher, RetryPolicy, Stage
from pipeline.backoff import Backoff
from pipeline.kafka import KafkaAdmin, LagMonitor
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import raw_records, read_topic, running, unique_settings, wait_until


class FlakyEcho(Stage):
    """Fails the first two attempts at ping 'flaky'; everything else passes."""

    consumes = PINGS
    emits = (PONGS,)
    group = "flaky-echo"
    retry = RetryPolicy(
        ordered=True,
        in_process_attempts=1,
        ordered_backoff=Backoff(0.2, jitter=0),
        ordered_max_attempts=5,
    )
    attempts: list[str] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        FlakyEcho.attempts.append(event.ping_id)
        if event.ping_id == "flaky" and FlakyEcho.attempts.count("flaky") <= 2:
            raise ConnectionError("dependency hiccup")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="flaky"))


class AlwaysFails(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "always-fails"
    retry = RetryPolicy(
        ordered=True,
        in_process_attempts=1,
        ordered_backoff=Backoff(0.05, jitter=0),
        ordered_max_attempts=3,
    )

    def handle(self, event: Ping, ctx: Context) -> None:
        raise ValueError("cannot handle this")


def test_poison_bytes_go_to_the_dlq_with_original_bytes_and_the_partition_moves_on(
    kafka_bootstrap: str,
) -> None:
    """Bytes that are not our Avro reach <group>.dlq byte for byte, with error headers, and the
    events behind them on the same partition are still handled."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    poison = b"\x00\x00\x00\x00\x07not avro"
    with running(settings, [FlakyEcho]) as worker, Publisher(settings) as publisher:
        raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
        raw.produce(settings.topic(PINGS.name), poison, b"bad-key", headers=[("origin", b"x")])
        raw.flush(10)
        publisher.publish(PINGS, Ping(ping_id="after", n=2))
        [(_, pong)] = read_topic(settings, PONGS, count=1)
        dlq = worker.runners[0].plan.dlq_topic
        records = raw_records(settings, dlq, 1)
    assert pong.ping_id == "after"
    [record] = records
    assert record.value() == poison and record.key() == b"bad-key"
    headers = dict(record.headers())
    assert headers["origin"] == b"x"
    assert headers["dlq-exception-type"] == b"pipeline.errors.BadMagicError"
    assert headers["dlq-original-topic"] == settings.topic(PINGS.name).encode()
    assert headers["dlq-original-offset"] == b"0"
    assert headers["dlq-attempts"] == b"1"


def test_failing_handler_is_retried_in_place_then_succeeds_in_order(kafka_bootstrap: str) -> None:
    """A handler failing twice is called a third time after backoff; the event after it on the
    same partition is handled only after it (per-partition order is kept)."""
    FlakyEcho.attempts.clear()
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    with running(settings, [FlakyEcho]), Publisher(settings) as publisher:
        publisher.publish(PINGS, Ping(ping_id="flaky", n=1))
        publisher.publish(PINGS, Ping(ping_id="next", n=2))
        pongs = read_topic(settings, PONGS, count=2)
    assert [p.ping_id for _, p in pongs] == ["flaky", "next"]
    assert FlakyEcho.attempts[:3] == ["flaky", "flaky", "flaky"]


def test_exhausted_in_place_retries_dead_letter_the_event(kafka_bootstrap: str) -> None:
    """After max_attempts the event is parked in the DLQ (attempt count recorded) and its
    offset committed, so the stage does not stall on it forever."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    with running(settings, [AlwaysFails]) as worker, Publisher(settings) as publisher:
        publisher.publish(PINGS, Ping(ping_id="hopeless", n=1))
        dlq = worker.runners[0].plan.dlq_topic
        [record] = raw_records(settings, dlq, 1)
        wait_until(lambda: worker.runners[0].stats.commits > 0, 10, "a commit")
    headers = dict(record.headers())
    assert headers["dlq-attempts"] == b"3"
    assert headers["dlq-exception-type"] == b"builtins.ValueError"
    assert b"cannot handle this" in headers["dlq-traceback"]


def test_an_output_the_broker_refuses_leaves_its_input_uncommitted_until_it_lands(
    kafka_bootstrap: str,
) -> None:
    """While the output topic is missing, deliveries fail and the input offset is not
    committed (the partition is re-read after a backoff); once the topic exists again the
    output lands and only then is the input committed. Nothing is lost."""
    settings = unique_settings(
        kafka_bootstrap, topic_partitions=1, producer_config={"message.timeout.ms": "1500"}
    )
    admin = KafkaAdmin(settings)
    pongs_topic = settings.topic(PONGS.name)
    group, pings = settings.topic(FlakyEcho.group or ""), settings.topic(PINGS.name)
    monitor = LagMonitor(settings)
    try:
        with running(settings, [FlakyEcho]) as worker, Publisher(settings) as publisher:
            runner = worker.runners[0]
            wait_until(lambda: runner.stats.assigned, 30, "the partition to be assigned")
            admin.delete([pongs_topic])
            wait_until(lambda: pongs_topic not in admin.topics(), 30, "the output topic to go")
            publisher.publish(PINGS, Ping(ping_id="stranded", n=1))
            wait_until(lambda: runner.stats.retried >= 2, 60, "two failed deliveries")
            assert monitor.lag(group, [pings]) == (0, 1), "input committed without its output"
            admin.create([pongs_topic])
            [(_, pong)] = read_topic(settings, PONGS, count=1, timeout_s=60)
            wait_until(lambda: monitor.lag(group, [pings]) == (1, 0), 30, "the commit")
    finally:
        monitor.close()
    assert pong.ping_id == "stranded"
