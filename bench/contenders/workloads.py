"""The two drain workloads, by name: what a contender decodes, transforms and encodes, and how
the input is written.

- ``order`` (``common``): ``bench.Order``, eleven plain fields, published with an ``event-id``
  header as the framework's Publisher does;
- ``checkout`` (``checkout``): ``bench.Checkout``, a timestamp-millis, constrained fields,
  string-heavy, written by a plain producer with no headers (issue 15).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Any

from pydantic import BaseModel

from bench.contenders import checkout, common


@dataclass(frozen=True)
class Workload:
    name: str
    decode: Callable[[bytes], BaseModel]
    transform: Callable[[Any], Any]
    encode: Callable[[BaseModel], bytes]
    make_record: Callable[[Random], dict[str, Any]]
    encode_record: Callable[[dict[str, Any]], bytes]
    key_field: str
    event_id_header: bool  # whether the input carries the framework's event-id header


WORKLOADS = {
    "order": Workload("order", common.decode, common.transform, common.encode,
                      common.make_record, common.encode_record, "order_id", True),
    "checkout": Workload("checkout", checkout.decode, checkout.transform, checkout.encode,
                         checkout.make_record, checkout.encode_record, "order_id", False),
}  # fmt: skip
