"""A stage with an idempotency store: duplicates are skipped, side effects happen once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pipeline import Context, Idempotency, Publisher, Stage, Topic
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import read_topic, running, unique_settings, wait_until

PINGS_BY_ID = Topic(PINGS.name, Ping, id_field="ping_id")


class Charge(Stage):
    """Writes one 'charge' row per ping through the store's transaction, and emits a pong."""

    consumes = PINGS
    emits = (PONGS,)
    group = "charge"
    idempotency = Idempotency()

    def handle(self, event: Ping, ctx: Context) -> None:
        with ctx.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS charges (ping_id TEXT, n INTEGER)")
            tx.execute("INSERT INTO charges VALUES (?, ?)", (event.ping_id, event.n))
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="charge"))


def charges(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT ping_id, n FROM charges ORDER BY ping_id"))


def test_a_republished_event_is_skipped_as_a_duplicate(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The same business event published twice (same event id): the second is recognised in
    the store and skipped; one charge row, one pong."""
    db = tmp_path / "idem.db"
    settings = unique_settings(kafka_bootstrap, idempotency_url=f"sqlite:///{db}")
    with running(settings, [Charge]) as worker, Publisher(settings) as publisher:
        publisher.publish(PINGS_BY_ID, Ping(ping_id="order-1", n=1))
        read_topic(settings, PONGS, count=1)
        wait_until(lambda: worker.runners[0].stats.commits > 0, 10, "the first commit")
        publisher.publish(PINGS_BY_ID, Ping(ping_id="order-1", n=1))
        publisher.publish(PINGS_BY_ID, Ping(ping_id="order-2", n=2))
        pongs = read_topic(settings, PONGS, count=2)
        stats = worker.runners[0].stats
        wait_until(lambda: stats.duplicates == 1, 10, "the duplicate to be counted")
    assert charges(db) == [("order-1", 1), ("order-2", 2)]
    assert sorted(p.ping_id for _, p in pongs) == ["order-1", "order-2"]


def test_a_redelivered_events_side_effect_is_rolled_back_but_its_output_is_emitted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An event whose transaction committed but which was never marked done (as after a crash
    before the commit) runs again: its writes roll back, its pong is emitted again."""
    db = tmp_path / "idem.db"
    settings = unique_settings(kafka_bootstrap, idempotency_url=f"sqlite:///{db}")
    from pipeline.idempotency import open_store

    store = open_store(f"sqlite:///{db}")
    store.open()
    with store.transaction(settings.topic("charge"), "order-9") as tx:  # the "crashed" attempt
        tx.execute("CREATE TABLE IF NOT EXISTS charges (ping_id TEXT, n INTEGER)")
        tx.execute("INSERT INTO charges VALUES (?, ?)", ("order-9", 9))
    store.close()
    with running(settings, [Charge]), Publisher(settings) as publisher:
        publisher.publish(PINGS_BY_ID, Ping(ping_id="order-9", n=9))
        [(_, pong)] = read_topic(settings, PONGS, count=1)
    assert charges(db) == [("order-9", 9)], "the side effect happened twice"
    assert pong.ping_id == "order-9"
