"""Request-reply on the in-memory broker, as a user's tests run it: the same Publisher and
stages as on Kafka, through the transport seam."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from pipeline import (
    Context,
    DeclarationError,
    Publisher,
    RequestCancelled,
    RequestFailed,
    RequestTimeout,
    RetryPolicy,
    Stage,
)
from pipeline import headers as hdr
from pipeline.config import Settings
from pipeline.stage import Topic
from pipeline.testing import MemoryBroker, MemoryTransport, TestPipeline
from tests.integration.kit import wait_until
from tests.integration.reply_stages import (
    QUOTES,
    ExplicitQuoter,
    Quote,
    Quoter,
    QuoteRequested,
)
from tests.unit.test_memory_transport import TEST_SCHEMAS

SETTINGS = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=2)


@contextmanager
def stages_running(
    transport: MemoryTransport, *stages: type[Stage], fail_fast: bool = True
) -> Iterator[TestPipeline]:
    """The stages stepped on a thread of their own while the test makes requests."""
    stop = threading.Event()
    with TestPipeline(stages, SETTINGS, transport=transport, fail_fast=fail_fast) as harness:

        def loop() -> None:
            while not stop.is_set():
                harness.step()

        stepper = threading.Thread(target=loop, daemon=True)
        stepper.start()
        try:
            yield harness
        finally:
            stop.set()
            stepper.join(10)


def memory() -> MemoryTransport:
    return MemoryTransport(MemoryBroker(), SETTINGS)  # SystemClock: request threads wait


def test_a_returned_event_is_the_reply_to_a_sync_request() -> None:
    """request_sync returns the Quote the stage returned; the reply names the request."""
    t = memory()
    with stages_running(t, Quoter), Publisher(SETTINGS, transport=t, reply_topic="rq") as pub:
        quote = pub.request_sync(QUOTES, QuoteRequested(sku="a", quantity=3), timeout_s=10)
        assert isinstance(quote, Quote) and quote.price_cents == 300
        [request] = t.broker.records(QUOTES.name)
        [reply] = t.broker.records("rq")
        request_headers, reply_headers = dict(request.headers()), dict(reply.headers())
        assert request_headers[hdr.REPLY_TO] == b"rq"
        assert reply_headers[hdr.IN_REPLY_TO] == request_headers[hdr.EVENT_ID]
        # correlation-id keeps its meaning: the flow's id (here the request's own, as for any
        # event published without one), carried to the reply.
        assert reply_headers[hdr.CORRELATION_ID] == request_headers[hdr.EVENT_ID]
        assert hdr.REPLY_TO not in reply_headers
        assert pub.replies.answered == 1


def test_ctx_reply_answers_an_async_request() -> None:
    """An async handler calls ctx.reply; await publisher.request gets it."""
    t = memory()
    with stages_running(t, ExplicitQuoter), Publisher(SETTINGS, transport=t) as pub:

        async def ask() -> list[Quote]:
            requests = [QuoteRequested(sku=f"s{i}", quantity=i) for i in range(1, 4)]
            return await asyncio.gather(*(pub.request(QUOTES, r, timeout_s=10) for r in requests))

        quotes = asyncio.run(ask())
        assert [q.price_cents for q in quotes] == [100, 200, 300]


def test_a_request_nobody_answers_times_out_and_its_late_reply_is_dropped() -> None:
    """The stage is not running: RequestTimeout names the request; its reply, once the stage
    runs, is dropped and counted as late."""
    t = memory()
    with (
        TestPipeline([Quoter], SETTINGS, transport=t) as harness,
        Publisher(SETTINGS, transport=t) as pub,
    ):
        with pytest.raises(RequestTimeout) as raised:
            pub.request_sync(QUOTES, QuoteRequested(sku="a", quantity=1), timeout_s=0.3)
        [request] = t.broker.records(QUOTES.name)
        assert raised.value.request_id == dict(request.headers())[hdr.EVENT_ID].decode()
        harness.run_until_idle()
        wait_until(lambda: pub.replies.late == 1, 10, "the late reply to be dropped")
        assert (pub.replies.timed_out, pub.replies.answered) == (1, 0)


def test_a_duplicate_reply_is_dropped_and_counted() -> None:
    """A second copy of a reply (a redelivered request answered again) reaches nobody."""
    t = memory()
    with stages_running(t, Quoter), Publisher(SETTINGS, transport=t, reply_topic="rq") as pub:
        pub.request_sync(QUOTES, QuoteRequested(sku="a", quantity=1), timeout_s=10)
        [reply] = t.broker.records("rq")
        producer = t.producer("copier")
        producer.produce("rq", reply.value(), None, list(reply.headers()), lambda e, m: None)
        producer.flush(5)
        wait_until(lambda: pub.replies.duplicate == 1, 10, "the duplicate to be dropped")
        assert pub.replies.answered == 1


def test_a_requester_restart_fails_pending_requests_and_drops_their_replies() -> None:
    """Closing the publisher cancels its waiting request at once; the next run on the same
    reply topic drops the old reply as late and gets its own."""
    t = memory()
    with TestPipeline([Quoter], SETTINGS, transport=t) as harness:
        first = Publisher(SETTINGS, transport=t, reply_topic="svc.replies")
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                first.request_sync, QUOTES, QuoteRequested(sku="old", quantity=1), timeout_s=60
            )
            wait_until(lambda: t.broker.records(QUOTES.name), 10, "the request to be sent")
            first.close()
            with pytest.raises(RequestCancelled, match="the publisher closed"):
                waiting.result(10)
        harness.run_until_idle()  # the old request is answered after its requester is gone
    second = Publisher(SETTINGS, transport=t, reply_topic="svc.replies")
    with stages_running(t, Quoter), second:
        quote = second.request_sync(QUOTES, QuoteRequested(sku="new", quantity=2), timeout_s=10)
        assert quote.sku == "new"
        wait_until(lambda: second.replies.late == 1, 10, "the old reply to be dropped")


def test_a_publishers_own_reply_topic_is_deleted_when_it_closes() -> None:
    """No per-process topic is left behind by a publisher that closes."""
    t = memory()
    with stages_running(t, Quoter):
        with Publisher(SETTINGS, transport=t) as pub:
            pub.request_sync(QUOTES, QuoteRequested(sku="a", quantity=1), timeout_s=10)
            [own] = [n for n in t.broker.topics() if n.startswith("replies.")]
        assert own not in t.broker.topics()


def test_an_event_published_not_requested_gets_no_reply() -> None:
    """A handler's returned Quote goes nowhere when nobody asked."""
    t = memory()
    with TestPipeline([Quoter], SETTINGS, transport=t) as harness:
        harness.publish(QUOTES, QuoteRequested(sku="a", quantity=1))
        harness.run_until_idle()
        assert harness.stats(Quoter).processed == 1
        assert set(t.broker.topics()) == set(harness.pipeline.plans[0].topics)


NO_REPLIES = Topic("test.quotes.plain", QuoteRequested)


def test_a_request_on_a_topic_without_a_replies_model_is_refused() -> None:
    """The reply's model comes from the topic (or reply=): without one, a clear error."""
    t = memory()
    t.admin().create([NO_REPLIES.name])
    with Publisher(SETTINGS, transport=t) as pub, pytest.raises(DeclarationError, match="replies"):
        pub.request_sync(NO_REPLIES, QuoteRequested(sku="a", quantity=1), timeout_s=1)
    assert t.broker.records(NO_REPLIES.name) == []


class WrongReply(Stage):
    consumes = QUOTES

    def handle(self, event: QuoteRequested, ctx: Context) -> None:
        ctx.reply(event)  # not the Quote its topic declares


def test_a_reply_of_an_undeclared_model_dead_letters_the_request() -> None:
    """A stage bug, not a transient failure: the request goes to the DLQ, and the requester
    fails with the reason (the error reply) rather than decode a reply of the wrong type."""
    t = memory()
    with stages_running(t, WrongReply) as harness, Publisher(SETTINGS, transport=t) as pub:
        with pytest.raises(RequestFailed, match="no input topic declares"):
            pub.request_sync(QUOTES, QuoteRequested(sku="a", quantity=1), timeout_s=30)
        wait_until(lambda: harness.dead_letters(WrongReply), 10, "the dead letter")
        [dead] = harness.dead_letters(WrongReply)
        message = dead.headers["dlq-exception-message"] or b""
        assert b"no input topic declares" in message


class TransactionalQuoter(Quoter):
    guarantee = "exactly_once"


def test_an_exactly_once_stage_replies_inside_its_transaction() -> None:
    """The reply is one of the transaction's outputs: the requester, reading committed records
    only, gets it once the transaction commits."""
    t = memory()
    with stages_running(t, TransactionalQuoter), Publisher(SETTINGS, transport=t) as pub:
        quote = pub.request_sync(QUOTES, QuoteRequested(sku="tx", quantity=4), timeout_s=10)
        assert quote.price_cents == 400


class ChangesItsMind(Stage):
    consumes = QUOTES

    def handle(self, event: QuoteRequested, ctx: Context) -> Quote:
        ctx.reply(Quote(sku=event.sku, price_cents=1, quoted_by="first"))
        return Quote(sku=event.sku, price_cents=2, quoted_by="returned")


def test_the_last_reply_given_wins_and_only_one_is_sent() -> None:
    """ctx.reply then a returned Quote: the returned one is the reply, sent once."""
    t = memory()
    with (
        stages_running(t, ChangesItsMind),
        Publisher(SETTINGS, transport=t, reply_topic="rq") as pub,
    ):
        quote = pub.request_sync(QUOTES, QuoteRequested(sku="a", quantity=1), timeout_s=10)
        assert quote.quoted_by == "returned"
        assert len(t.broker.records("rq")) == 1


def test_a_dead_lettered_request_fails_its_requester_with_the_reason() -> None:
    """The handler dead-letters the request: the requester gets ``RequestFailed`` naming the
    request and the error at once (the error reply), not a ``RequestTimeout`` 30 s later."""
    t = memory()
    with stages_running(t, Quoter), Publisher(SETTINGS, transport=t, reply_topic="rq") as pub:
        with pytest.raises(RequestFailed, match="DeadLetter: negative quantity for n") as raised:
            pub.request_sync(QUOTES, QuoteRequested(sku="n", quantity=-1), timeout_s=30)
        [request] = t.broker.records(QUOTES.name)
        assert raised.value.request_id == dict(request.headers())[hdr.EVENT_ID].decode()
        [reply] = t.broker.records("rq")
        assert reply.value() is None and dict(reply.headers())[hdr.REPLY_ERROR]
        # An event published, not requested, is dead-lettered with no reply at all.
        pub.publish(QUOTES, QuoteRequested(sku="p", quantity=-1))
        wait_until(lambda: len(t.broker.records(f"{Quoter.group_id()}.dlq")) == 2, 10, "dlq")
        assert len(t.broker.records("rq")) == 1


def test_a_skipped_request_fails_its_requester_at_once_saying_so() -> None:
    """The handler skips the request (``Skip``): the stage will never answer it, so the
    requester gets ``RequestFailed`` naming the skip and its reason at once, not a
    ``RequestTimeout`` after 30 s; the request is committed, not dead-lettered."""
    t = memory()
    with (
        stages_running(t, Quoter) as harness,
        Publisher(SETTINGS, transport=t, reply_topic="rq") as pub,
    ):
        with pytest.raises(RequestFailed, match="skipped by quoter: Skip: nothing to quote"):
            pub.request_sync(QUOTES, QuoteRequested(sku="z", quantity=0), timeout_s=30)
        assert (pub.replies.answered, pub.replies.timed_out) == (1, 0)
        wait_until(lambda: harness.stats(Quoter).skipped == 1, 10, "the skip counted")
        assert harness.dead_letters(Quoter) == []
        # Skipped, not requested: no reply at all.
        pub.publish(QUOTES, QuoteRequested(sku="p", quantity=0))
        wait_until(lambda: harness.stats(Quoter).skipped == 2, 10, "the second skip")
        assert len(t.broker.records("rq")) == 1


class FlakyQuoter(Stage):
    """Fails every delivery: one retry tier, then the dead letter (from the retry topic)."""

    consumes = QUOTES
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))

    def handle(self, event: QuoteRequested, ctx: Context) -> None:
        raise ConnectionError(f"pricing service down for {event.sku}")


@pytest.mark.parametrize("stage", [FlakyQuoter, TransactionalQuoter])
def test_a_request_dead_lettered_after_retries_or_in_a_transaction_fails_clearly(
    stage: type[Stage],
) -> None:
    """The error reply comes from the retry topic's copy (it keeps ``reply-to``) and from an
    exactly-once stage (after its transaction commits)."""
    t = memory()
    with stages_running(t, stage, fail_fast=False), Publisher(SETTINGS, transport=t) as pub:
        quantity = -1 if stage is TransactionalQuoter else 1
        with pytest.raises(RequestFailed, match=f"for {stage.__name__}"):
            pub.request_sync(QUOTES, QuoteRequested(sku=stage.__name__, quantity=quantity),
                             timeout_s=30)  # fmt: skip
