"""Request-reply against the real broker: a stage of two worker processes answers concurrent
requests, a slow answer times out and then arrives late (dropped, counted), and a requester
restart fails its pending request at once and drops the old reply."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from pipeline import Publisher, RequestCancelled, RequestFailed, RequestTimeout
from pipeline.config import Settings
from pipeline.kafka.admin import KafkaAdmin
from tests.integration.kit import (
    WorkerProcess,
    end_offsets,
    group_members,
    prepare,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)
from tests.integration.reply_stages import QUOTES, Quote, Quoter, QuoteRequested

SPEC = "tests.integration.reply_stages:Quoter"


@dataclass
class Stage2:
    settings: Settings
    workers: WorkerProcess


@pytest.fixture(scope="module")
def two_workers(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage2]:
    """One Quoter stage run by two worker processes, both holding partitions."""
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Quoter])
    log = tmp_path_factory.mktemp("reply") / "workers.log"
    group = settings.topic(Quoter.group_id())
    with worker_process(SPEC, settings_env(settings), log, workers=2) as workers:
        wait_until(lambda: workers.alive() and group_members(settings, group) == 2, 60,
                   "two members of the stage's group")  # fmt: skip
        yield Stage2(settings, workers)


def test_concurrent_requests_are_each_answered_by_either_worker(two_workers: Stage2) -> None:
    """24 requests awaited at once: each gets its own quote; both workers answered some."""
    settings = two_workers.settings

    async def ask(publisher: Publisher) -> list[Quote]:
        requests = [QuoteRequested(sku=f"sku-{i}", quantity=i) for i in range(1, 25)]
        return await asyncio.gather(*(publisher.request(QUOTES, r, timeout_s=30) for r in requests))

    with Publisher(settings) as publisher:
        quotes = asyncio.run(ask(publisher))
        assert [(q.sku, q.price_cents) for q in quotes] == [
            (f"sku-{i}", 100 * i) for i in range(1, 25)
        ]
        assert len({q.quoted_by for q in quotes}) == 2, "one worker answered everything"
        sync = publisher.request_sync(QUOTES, QuoteRequested(sku="s", quantity=7), timeout_s=30)
        assert sync.price_cents == 700
        counts = publisher.replies
        assert (counts.answered, counts.late, counts.duplicate) == (25, 0, 0)
        [own] = [
            n for n in KafkaAdmin(settings).topics() if n.startswith(settings.topic("replies."))
        ]
    assert own not in KafkaAdmin(settings).topics(), "the publisher's reply topic was left behind"


def test_a_slow_reply_times_out_then_arrives_late_and_is_dropped(two_workers: Stage2) -> None:
    """timeout 0.5 s, the stage takes 2 s: RequestTimeout with the request's id at once; the
    reply, when it comes, is counted late and reaches nobody."""
    with Publisher(two_workers.settings) as publisher:
        publisher.request_sync(QUOTES, QuoteRequested(sku="warm", quantity=1), timeout_s=30)
        with pytest.raises(RequestTimeout, match=r"within 0\.5s") as raised:
            publisher.request_sync(
                QUOTES, QuoteRequested(sku="slow", quantity=1, delay_ms=2000), timeout_s=0.5
            )
        assert raised.value.request_id
        wait_until(lambda: publisher.replies.late == 1, 30, "the late reply to be dropped")
        assert publisher.replies.answered == 1


def test_a_dead_lettered_request_fails_at_once_with_the_stage_s_error(two_workers: Stage2) -> None:
    """The stage dead-letters the request: the requester gets RequestFailed with the reason
    and the request's id from the error reply, long before its 30 s timeout."""
    with Publisher(two_workers.settings) as publisher:
        with pytest.raises(RequestFailed, match="DeadLetter: negative quantity for bad") as raised:
            publisher.request_sync(QUOTES, QuoteRequested(sku="bad", quantity=-1), timeout_s=30)
        assert raised.value.request_id
        assert publisher.replies.timed_out == 0


def test_a_skipped_request_fails_at_once_saying_it_was_skipped(two_workers: Stage2) -> None:
    """The stage skips the request: the requester gets RequestFailed naming the skip and its
    reason from the error reply, long before its 30 s timeout (not a RequestTimeout)."""
    with Publisher(two_workers.settings) as publisher:
        with pytest.raises(RequestFailed, match="skipped by quoter: Skip: nothing to quote"):
            publisher.request_sync(QUOTES, QuoteRequested(sku="none", quantity=0), timeout_s=30)
        assert (publisher.replies.answered, publisher.replies.timed_out) == (1, 0)


def test_a_restarted_requester_fails_its_pending_request_and_drops_the_old_reply(
    two_workers: Stage2,
) -> None:
    """A publisher closed mid-request fails the request with RequestCancelled (nothing hangs);
    the next one on the same reply topic gets its own reply and drops the old one as late."""
    settings = two_workers.settings
    reply_topic = settings.topic("replies.svc")
    first = Publisher(settings, reply_topic=reply_topic)
    slow = QuoteRequested(sku="old", quantity=1, delay_ms=1500)
    requests = settings.topic(QUOTES.name)
    sent_before = end_offsets(settings, requests)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(first.request_sync, QUOTES, slow, timeout_s=60)
        wait_until(lambda: end_offsets(settings, requests) > sent_before or waiting.done(), 30,
                   "the slow request on the broker")  # fmt: skip
        first.close()
        with pytest.raises(RequestCancelled, match="the publisher closed"):
            waiting.result(10)
    with Publisher(settings, reply_topic=reply_topic) as second:
        quote = second.request_sync(QUOTES, QuoteRequested(sku="new", quantity=3), timeout_s=30)
        assert quote.price_cents == 300
        wait_until(lambda: second.replies.late >= 1, 30, "the old run's reply to be dropped")
