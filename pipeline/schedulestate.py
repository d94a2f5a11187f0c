"""The durable state of cron schedules: one compacted, single-partition Kafka topic.

Records, keyed so that compaction keeps exactly what is needed (values are JSON):

- ``tick/<name>``: ``{"through_ms": …}``, every tick up to that instant is handled (fired or
  skipped). Written only by the owning scheduler, in the same transaction as the events it
  fires, so a reader sees both or neither.
- ``paused/<name>``: ``{"paused": true|false}``, written by ``pipeline schedules pause|resume``.
- ``trigger/<name>/<id>``: ``{"at_ms": …}``, a manual ``pipeline schedules trigger`` not yet
  fired; the owner fires it and writes the key's tombstone in one transaction.

The topic is read ``read_committed`` (``TopicLogPort.read``), so an aborted transaction of a
fenced owner never counts. The topic's name and the ownership group are both
``<topic_prefix>pipeline.schedules``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Settings
from pipeline.dlq import StoredRecord
from pipeline.errors import ConfigError
from pipeline.ports import TopicLogPort
from pipeline.transport import Transport

log = logging.getLogger("pipeline.schedules")
STATE_TOPIC = "pipeline.schedules"
STATE_TOPIC_CONFIG = {"cleanup.policy": "compact"}
TICK, PAUSED, TRIGGER = "tick", "paused", "trigger"


def state_topic(settings: Settings) -> str:
    return settings.topic(STATE_TOPIC)


def ensure_state_topic(settings: Settings, transport: Transport) -> list[str]:
    """Create the state topic (one partition, compacted) if ``create_topics``; refuse one with
    more partitions: each would have an owner of its own, and ticks would fire more than once."""
    topic = state_topic(settings)
    admin = transport.admin()
    if settings.create_topics:
        created = admin.create([topic], partitions=1, config=dict(STATE_TOPIC_CONFIG))
    else:
        created = admin.ensure([topic])
    if created:
        return created
    # Missing from metadata only just after a racing worker created it (with one partition).
    info = admin.topics().get(topic)
    partitions = 1 if info is None else info.partitions
    if partitions != 1:
        raise ConfigError(
            f"topic {topic} has {partitions} partitions; the schedules' state needs exactly one "
            "(it is also their ownership: one owner per partition)"
        )
    return created


def tick_record(name: str, through_ms: int) -> tuple[bytes, bytes]:
    return f"{TICK}/{name}".encode(), json.dumps({"through_ms": through_ms}).encode()


def paused_record(name: str, paused: bool) -> tuple[bytes, bytes]:
    return f"{PAUSED}/{name}".encode(), json.dumps({"paused": paused}).encode()


def trigger_record(name: str, trigger_id: str, at_ms: int) -> tuple[bytes, bytes]:
    return f"{TRIGGER}/{name}/{trigger_id}".encode(), json.dumps({"at_ms": at_ms}).encode()


@dataclass(frozen=True, slots=True)
class Trigger:
    key: bytes
    name: str
    trigger_id: str
    at_ms: int


@dataclass
class ScheduleState:
    """What the state topic says, folded record by record in offset order."""

    through_ms: dict[str, int] = field(default_factory=dict)
    paused: dict[str, bool] = field(default_factory=dict)
    triggers: dict[bytes, Trigger] = field(default_factory=dict)  # pending, in request order
    next_offset: int = 0

    def apply(self, record: StoredRecord) -> None:
        self.next_offset = max(self.next_offset, record.offset + 1)
        kind, _, rest = (record.key or b"").decode(errors="replace").partition("/")
        if kind == TRIGGER and record.value is None:
            self.triggers.pop(record.key or b"", None)
            return
        value = _value(record)
        if value is None:
            return
        if kind == TICK and isinstance(value.get("through_ms"), int):
            # Never backwards: an older record read again (a refresh) changes nothing.
            self.through_ms[rest] = max(self.through_ms.get(rest, 0), value["through_ms"])
        elif kind == PAUSED and isinstance(value.get("paused"), bool):
            self.paused[rest] = value["paused"]
        elif kind == TRIGGER and isinstance(value.get("at_ms"), int):
            name, _, trigger_id = rest.partition("/")
            key = record.key or b""
            self.triggers[key] = Trigger(key, name, trigger_id, value["at_ms"])

    def apply_all(self, records: Iterable[StoredRecord]) -> ScheduleState:
        for record in records:
            self.apply(record)
        return self


def read_state(
    log_port: TopicLogPort, topic: str, state: ScheduleState | None = None
) -> ScheduleState:
    """``state`` brought up to the topic's end as it is now (read_committed): a new state from
    the start of the topic, or the records after ``state.next_offset``."""
    state = state or ScheduleState()
    return state.apply_all(log_port.read(topic, start_offset=state.next_offset))


def _value(record: StoredRecord) -> dict[str, Any] | None:
    try:
        value = json.loads(record.value or b"null")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("state record %s[%d]@%d is not a JSON object: ignored", record.topic,
                    record.partition, record.offset)  # fmt: skip
        return None
    return value
