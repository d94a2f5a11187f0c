"""A broker of a test's own, for tests that crash or restart it (stopping the session's broker
would break every other test): one node under the test's tmp dir, on free ports from ``first``.
Each module passes its own ``first``, so two such tests never reach for the same ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chaos.broker import PrivateBroker
from pipeline.localkafka import LocalKafka
from pipeline.localkafka.layout import HOST, kafka_home
from pipeline.localkafka.process import port_in_use


def free_base_port(first: int) -> int:
    """A base port with a one-node cluster's two ports (client, controller) free."""
    for base in range(first, first + 400, 5):
        if not (port_in_use(HOST, base) or port_in_use(HOST, base + 1)):
            return base
    raise RuntimeError("no two free ports for a private broker")


@contextmanager
def private_broker_at(tmp_path: Path, first: int) -> Iterator[PrivateBroker]:
    """Started, yielded, closed; skipped (or, where a broker is required, failed) if it cannot
    start."""
    from tests.brokers import broker_required

    try:
        LocalKafka(root=kafka_home()).assemble()  # a no-op once assembled (the session's did)
        broker = PrivateBroker(tmp_path / "kafka", free_base_port(first))
        broker.start()
    except Exception as exc:
        LocalKafka.current(tmp_path / "kafka").stop()
        if broker_required():
            raise
        pytest.skip(f"no private broker: {exc}")
    try:
        yield broker
    finally:
        broker.close()
