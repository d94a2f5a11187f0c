"""The ``before_publish`` hook of a Publisher: it may add headers to the record and hears how
its delivery ended; a raising one is logged and the publish goes on."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pipeline import Settings
from pipeline.errors import DeliveryError
from pipeline.hooks import Hook
from pipeline.publisher import Delivered, Publisher
from pipeline.testing import TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, Ping


class Stamps(Hook):
    def __init__(self) -> None:
        self.heard: list[Any] = []

    def before_publish(
        self, topic: str, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any:
        headers.append(("stamped", topic.encode()))
        self.heard.append(("before", topic, key))
        return self.heard.append


class Raises(Hook):
    def before_publish(self, topic: str, key: bytes | None, headers: Any) -> Any:
        raise RuntimeError("broken")


def _publisher(t: TestPipeline, *hooks: Hook) -> Publisher:
    p = t.pipeline
    return Publisher(t.settings, p.catalog, p.codec, p.announce, transport=t.transport,
                     hooks=hooks)  # fmt: skip


def test_a_hook_adds_headers_and_hears_the_delivery() -> None:
    stamps = Stamps()
    with TestPipeline([], Settings(schemas_dir=TEST_SCHEMAS)) as t:
        t.transport.admin().ensure([t.settings.topic(PINGS.name)])
        with _publisher(t, Raises(), stamps) as publisher:
            delivered = publisher.publish(PINGS, Ping(ping_id="p", n=0), key="k", timeout_s=5)
        stored = t.records(PINGS)
    physical = t.settings.topic(PINGS.name)
    assert stamps.heard == [("before", physical, b"k"), delivered]
    assert isinstance(delivered, Delivered)
    assert ("stamped", physical.encode()) in stored[0].headers


def test_a_refused_publish_is_heard_as_a_delivery_error(caplog: pytest.LogCaptureFixture) -> None:
    stamps = Stamps()
    with TestPipeline([], Settings(schemas_dir=TEST_SCHEMAS)) as t:
        physical = t.settings.topic(PINGS.name)
        t.transport.admin().ensure([physical])
        t.broker.fail_deliveries(physical, 1, retriable=False)
        with (
            caplog.at_level(logging.ERROR, logger="pipeline.hooks"),
            _publisher(t, Raises(), stamps) as publisher,
            pytest.raises(DeliveryError),
        ):
            publisher.publish(PINGS, Ping(ping_id="p", n=0), timeout_s=5)
    assert isinstance(stamps.heard[-1], DeliveryError)
    assert any("Raises.before_publish raised" in r.getMessage() for r in caplog.records)
