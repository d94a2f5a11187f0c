"""On a real broker, keys land where a Java producer puts them: events from our Publisher, a
stage's outputs and dead letters, and `dlq replay`'s copies all go to the partition that
kafka-clients' default partitioner picks for their key (vectors printed by the Kafka jars)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import Context, DeadLetter, Publisher, RetryPolicy, Stage
from pipeline.dlq import ReplayFilter
from pipeline.localkafka.layout import kafka_home, kafka_version
from pipeline.replay import ReplayRequest, replay
from pipeline.transport import kafka
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import raw_records, running, unique_settings
from tests.interop import KEYS, PARTITION_COUNTS, PROGRAM, VECTORS, java_keys, parse

JAVA = {k.raw: k.partitions[6] for k in java_keys()}


class Answer(Stage):
    """Answers each ping with a pong under the ping's key; dead-letters pings with n < 0."""

    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(tiers=(), in_process_attempts=1)

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n < 0:
            raise DeadLetter("refused")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answer"))


def kafka_jars() -> Path | None:
    libs = kafka_home() / "dist" / kafka_version() / "libs"
    return libs if any(libs.glob("kafka-clients-*.jar")) else None


def test_the_checked_in_vectors_are_what_the_kafka_jars_print() -> None:
    """Murmur2Partitions.java, run against the broker's own jars, prints the vectors file."""
    libs, java = kafka_jars(), shutil.which("java")
    if libs is None or java is None:
        pytest.skip(f"needs java and the Kafka jars under {kafka_home()} (make kafka-up)")
    result = subprocess.run(
        [java, "-cp", f"{libs}/*", str(PROGRAM), *map(str, PARTITION_COUNTS)],
        input=KEYS.read_bytes(), capture_output=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert parse(result.stdout.decode()) == java_keys()
    assert result.stdout.decode().splitlines()[0] == VECTORS.read_text("utf-8").splitlines()[0]


def test_published_events_outputs_dead_letters_and_replays_land_on_javas_partitions(
    kafka_bootstrap: str,
) -> None:
    """60 keys on 6-partition topics: each event published, each pong, each dead letter and
    each replayed copy is on the partition Java picks for its key."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=6)
    keys = list(JAVA)[:60]
    with running(settings, [Answer]) as worker, Publisher(settings) as publisher:
        for n, key in enumerate(keys):  # the last 20 are dead-lettered
            event = Ping(ping_id=key.decode(), n=n if n < 40 else -1)
            delivered = publisher.publish(PINGS, event, key=key)
            assert delivered.partition == JAVA[key], key
        pongs = raw_records(settings, settings.topic(PONGS.name), 40)
        dlq = worker.runners[0].plan.dlq_topic
        letters = raw_records(settings, dlq, 20)
    assert sorted(m.key() for m in pongs) == sorted(keys[:40])
    assert [(m.key(), m.partition()) for m in pongs + letters] == [
        (m.key(), JAVA[m.key()]) for m in pongs + letters
    ]
    failures: list[str] = []
    tally = replay(kafka(settings), ReplayRequest(dlq, ReplayFilter()), print, failures.append)
    assert (tally.replayed, failures) == (20, [])
    pings = raw_records(settings, settings.topic(PINGS.name), 80)
    replayed = [m for m in pings if "replayed-from" in dict(m.headers() or ())]
    assert sorted(m.key() for m in replayed) == sorted(keys[40:])
    assert all(m.partition() == JAVA[m.key()] for m in replayed)
