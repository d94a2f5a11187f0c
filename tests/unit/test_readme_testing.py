"""The README's "Testing your stages in memory" example, run as written (bar the settings,
which name the schemas directory so the test does not depend on the working directory)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline import Settings
from pipeline.testing import TestPipeline
from stages.orders import PAYMENTS, PLACED, Currency, LineItem, OrderPlaced, Payment
from tests.conftest import ROOT

SETTINGS = Settings(schemas_dir=ROOT / "schemas")


def order(order_id: str, coupon: str | None = None) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id, customer_id="c1", email="c1@example.com",
        items=[LineItem(sku="sku-1", quantity=2, unit_price_cents=500)],
        currency=Currency.EUR, placed_at=datetime(2026, 1, 1, tzinfo=UTC), coupon=coupon,
    )  # fmt: skip


def test_a_coupon_takes_ten_percent_off_the_payment() -> None:
    """The README's test: the discounted payment is emitted and the order committed."""
    with TestPipeline([Payment], SETTINGS) as t:
        t.publish(PLACED, order("o1", coupon="WELCOME"))
        t.run_until_idle()
        [payment] = t.outputs(PAYMENTS)
        assert (payment.order_id, payment.amount_cents) == ("o1", 900)
        assert t.dead_letters(Payment) == []
        assert t.lag(Payment) == (1, 0)  # committed, nothing left


def test_fail_fast_shows_the_handler_s_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's fail_fast: a bug in the handler fails the test with its own exception."""

    def broken(self: Payment, event: OrderPlaced, ctx: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Payment, "handle", broken)
    with TestPipeline([Payment], SETTINGS, fail_fast=True) as t:
        t.publish(PLACED, order("o1"))
        with pytest.raises(ZeroDivisionError, match="a bug"):
            t.run_until_idle()
