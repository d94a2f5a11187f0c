"""`concurrency = N` against the real broker: events with the same key are handled in order,
others overlap; every event is handled, and on stop the group has committed everything."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import ClassVar

from pipeline import Context, Publisher, RetryPolicy, Stage
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import (
    committed_total,
    end_offsets,
    prepare,
    read_topic,
    running,
    unique_settings,
)

KEYS = 20


class Lookup(Stage):
    """An I/O-bound handler: awaits a remote call of 1-15 ms."""

    consumes = PINGS
    emits = (PONGS,)
    concurrency = 16
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))
    handled: ClassVar[dict[str, list[int]]] = defaultdict(list)
    running_now: ClassVar[list[int]] = [0, 0]  # now, most
    failed_once: ClassVar[set[int]] = set()

    async def handle(self, event: Ping, ctx: Context) -> None:
        self.running_now[0] += 1
        self.running_now[1] = max(self.running_now)
        try:
            await asyncio.sleep(random.uniform(0.001, 0.015))
        finally:
            self.running_now[0] -= 1
        if event.n % 37 == 5 and event.n not in self.failed_once:
            self.failed_once.add(event.n)
            raise ConnectionError("remote call failed")  # once: the retry topic brings it back
        self.handled[event.ping_id.split("/")[0]].append(event.n)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="lookup"))


def test_concurrent_stage_keeps_key_order_overlaps_keys_and_commits_all(
    kafka_bootstrap: str,
) -> None:
    Lookup.handled.clear()
    Lookup.failed_once.clear()
    Lookup.running_now[:] = [0, 0]
    settings = unique_settings(kafka_bootstrap)
    total = 600
    # Published before the stage starts: its fetches find many keys waiting, so handlers of
    # different keys overlap by construction, not because publishing outran the stage.
    prepare(settings, [Lookup])
    with Publisher(settings) as publisher:
        for n in range(total):
            key = f"k{n % KEYS}"
            publisher.publish(PINGS, Ping(ping_id=f"{key}/{n}", n=n), key=key, wait=False)
    with running(settings, [Lookup]):
        pongs = read_topic(settings, PONGS, count=total, timeout_s=60)
    # After the graceful stop: every input offset is committed (none left behind in flight).
    group = settings.topic(Lookup.group_id())
    topic = settings.topic(PINGS.name)
    assert committed_total(settings, group, topic) == end_offsets(settings, topic) == total

    assert sorted(p.n for _, p in pongs) == list(range(total)), "an event was lost or doubled"
    retried = Lookup.failed_once
    assert retried, "no event took the retry-topic path"
    for key, ns in Lookup.handled.items():
        first_try = [n for n in ns if n not in retried]
        assert first_try == sorted(first_try), f"{key} handled out of order: {first_try}"
    assert 1 < Lookup.running_now[1] <= Lookup.concurrency, Lookup.running_now
    # Outputs of one key are produced in handling order, so they keep it downstream too.
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, pong in pongs:
        by_key[pong.ping_id.split("/")[0]].append(pong.n)
    for key, ns in by_key.items():
        first_try = [n for n in ns if n not in retried]
        assert first_try == sorted(first_try), f"{key}'s outputs are out of order"
