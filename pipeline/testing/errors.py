"""The error objects the in-memory clients report, shaped like confluent-kafka's
``KafkaError`` (``str()``, ``name()``, ``code()``, ``retriable()``, ``fatal()``,
``txn_requires_abort()``), so code that reads a delivery report's error works on both.

Codes are librdkafka's numbers (negative: raised by the client, positive: by the broker).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

CODES: dict[str, int] = {
    "_MSG_TIMED_OUT": -192,
    "_UNKNOWN_TOPIC": -188,
    "_STATE": -172,
    "_PURGE_QUEUE": -152,
    "_FENCED": -144,
    "UNKNOWN_TOPIC_OR_PART": 3,
    "MSG_SIZE_TOO_LARGE": 10,
    "NOT_ENOUGH_REPLICAS": 19,
    "ILLEGAL_GENERATION": 22,
    "UNKNOWN_MEMBER_ID": 25,
    "REBALANCE_IN_PROGRESS": 27,
    "TOPIC_AUTHORIZATION_FAILED": 29,
    "POLICY_VIOLATION": 44,
    "INVALID_TXN_STATE": 48,
    "INVALID_RECORD": 87,
    "PRODUCER_FENCED": 90,
}
RETRIABLE = frozenset({"_MSG_TIMED_OUT", "NOT_ENOUGH_REPLICAS", "REBALANCE_IN_PROGRESS"})


@dataclass(frozen=True)
class BrokerError:
    name_: str
    reason: str
    retriable_: bool | None = None  # None: as the code usually is
    fatal_: bool = False
    txn_requires_abort_: bool = False

    def name(self) -> str:
        return self.name_

    def code(self) -> int:
        return CODES.get(self.name_, -1)

    def str(self) -> str:
        return self.reason

    def retriable(self) -> bool:
        return self.name_ in RETRIABLE if self.retriable_ is None else self.retriable_

    def fatal(self) -> bool:
        return self.fatal_

    def txn_requires_abort(self) -> bool:
        return self.txn_requires_abort_

    def __str__(self) -> builtins.str:
        return f'KafkaError{{code={self.name_},val={self.code()},str="{self.reason}"}}'
