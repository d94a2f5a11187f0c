"""The order pipeline: one ``orders.placed`` event fans out to payment, inventory, email and
analytics. Each stage has its own consumer group, so each receives every order; a slow or
failing consumer delays only itself.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from datetime import datetime

from pipeline import Context, Event, Stage, Topic

log = logging.getLogger(__name__)


class Currency(enum.StrEnum):
    EUR = "EUR"
    USD = "USD"
    GBP = "GBP"


class LineItem(Event, schema="orders.LineItem"):
    sku: str
    quantity: int
    unit_price_cents: int


class OrderPlaced(Event, schema="orders.OrderPlaced"):
    order_id: str
    customer_id: str
    email: str
    items: list[LineItem]
    currency: Currency
    placed_at: datetime
    coupon: str | None = None

    @property
    def total_cents(self) -> int:
        return sum(i.quantity * i.unit_price_cents for i in self.items)


class PaymentCaptured(Event, schema="orders.PaymentCaptured"):
    order_id: str
    amount_cents: int
    currency: Currency


class StockReserved(Event, schema="orders.StockReserved"):
    order_id: str
    skus: list[str]
    units: int


PLACED = Topic("orders.placed", OrderPlaced, key="order_id")
PAYMENTS = Topic("orders.payments", PaymentCaptured, key="order_id")
RESERVATIONS = Topic("orders.reservations", StockReserved, key="order_id")


class Payment(Stage):
    """Captures the order total (simulated payment provider)."""

    consumes = PLACED
    emits = (PAYMENTS,)

    def handle(self, event: OrderPlaced, ctx: Context) -> None:
        amount = event.total_cents
        if event.coupon:
            amount = amount * 90 // 100
        ctx.emit(
            PAYMENTS,
            PaymentCaptured(order_id=event.order_id, amount_cents=amount, currency=event.currency),
        )


class Inventory(Stage):
    """Reserves stock for every line item."""

    consumes = PLACED
    emits = (RESERVATIONS,)

    def handle(self, event: OrderPlaced, ctx: Context) -> None:
        ctx.emit(
            RESERVATIONS,
            StockReserved(
                order_id=event.order_id,
                skus=[i.sku for i in event.items],
                units=sum(i.quantity for i in event.items),
            ),
        )


class Email(Stage):
    """Sends the order confirmation (simulated: logs at debug level)."""

    consumes = PLACED

    async def handle(self, event: OrderPlaced, ctx: Context) -> None:
        log.debug("confirmation for order %s queued (%s)", event.order_id, ctx.coordinates)


class Analytics(Stage):
    """Counts revenue per currency and units per SKU, in memory."""

    consumes = PLACED

    def setup(self) -> None:
        self.revenue: Counter[str] = Counter()
        self.units: Counter[str] = Counter()

    def handle(self, event: OrderPlaced, ctx: Context) -> None:
        self.revenue[event.currency.value] += event.total_cents
        for item in event.items:
            self.units[item.sku] += item.quantity


STAGES = [Payment, Inventory, Email, Analytics]
