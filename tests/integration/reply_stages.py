"""Stages of the request-reply tests (``Publisher.request``), in-process or as workers."""

from __future__ import annotations

import os
import time

from pipeline import Context, DeadLetter, Event, Skip, Stage, Topic


class QuoteRequested(Event, schema="test.QuoteRequested"):
    sku: str
    quantity: int
    delay_ms: int = 0


class Quote(Event, schema="test.Quote"):
    sku: str
    price_cents: int
    quoted_by: str


QUOTES = Topic("test.quotes", QuoteRequested, key="sku", replies=Quote)


def price(request: QuoteRequested) -> Quote:
    return Quote(
        sku=request.sku, price_cents=100 * request.quantity, quoted_by=f"pid-{os.getpid()}"
    )


class Quoter(Stage):
    """Returns its reply; sleeps ``delay_ms`` first (a slow quote becomes a late reply); a
    negative quantity is dead-lettered at once and a zero one skipped (either way its requester
    gets the error reply)."""

    consumes = QUOTES

    def handle(self, event: QuoteRequested, ctx: Context) -> Quote:
        if event.quantity < 0:
            raise DeadLetter(f"negative quantity for {event.sku}")
        if event.quantity == 0:
            raise Skip(f"nothing to quote for {event.sku}")
        if event.delay_ms:
            time.sleep(event.delay_ms / 1000)
        return price(event)


class ExplicitQuoter(Stage):
    """Answers with ``ctx.reply`` and returns nothing."""

    consumes = QUOTES

    async def handle(self, event: QuoteRequested, ctx: Context) -> None:
        ctx.reply(price(event))
