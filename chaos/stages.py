"""The pipeline under test: two stages, each in its own group, on one input topic.

``Effects`` (at least once, with the idempotency store, concurrent) writes one side-effect row
per event inside ``ctx.transaction()`` and logs every handler call to a delivery file outside it.
``EosCopy`` (exactly once) emits one ``Copy`` per input to ``chaos.copies``.

Poison records (bytes that are not our Avro) reach both stages' dead-letter topics as decode
errors, without retries. Configuration comes from the environment the orchestrator sets:
``PIPELINE_*`` (topic prefix, idempotency URL, schemas), ``CHAOS_RUN_DIR`` (delivery files go
to ``<run dir>/deliveries``) and ``CHAOS_EFFECTS_TABLE``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from chaos.effects import DEFAULT_TABLE, DeliveryLog, insert_sql
from pipeline import Context, DecodeError, Event, EventValidationError, RetryPolicy, Stage, Topic
from pipeline.guarantees import Idempotency
from pipeline.retrytopics import ATTEMPT

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
# Poison is never worth a retry; anything else (a busy database, a broker restart) is.
POLICY = RetryPolicy(fatal=(DecodeError, EventValidationError), tiers=(1.0, 5.0))


class Work(Event, schema="chaos.Work"):
    eid: str  # unique per published event
    key: str  # also the record key
    seq: int  # 0, 1, 2, ... per key, in publishing order


class Copy(Event, schema="chaos.Copy"):
    eid: str
    key: str
    seq: int
    pid: int


WORK = Topic("chaos.work", Work, key="key")
COPIES = Topic("chaos.copies", Copy, key="key")


class Effects(Stage):
    """A side effect per event, exactly once thanks to the idempotency store. Async, with
    ``CHAOS_CONCURRENCY`` events in flight per worker (8 by default; 1 runs it sequentially):
    kills then land with handlers of many keys in flight and finished ones past the watermark."""

    consumes = WORK
    group = "chaos.effects"
    idempotency = Idempotency()
    retry = POLICY
    concurrency = int(os.environ.get("CHAOS_CONCURRENCY", "8"))

    def setup(self) -> None:
        self._pid = os.getpid()
        self._insert = insert_sql(os.environ.get("CHAOS_EFFECTS_TABLE", DEFAULT_TABLE))
        self._deliveries = DeliveryLog(Path(os.environ["CHAOS_RUN_DIR"]) / "deliveries")

    def teardown(self) -> None:
        self._deliveries.close()

    async def handle(self, event: Work, ctx: Context) -> None:
        self._deliveries.record(event.eid)
        via_retry = int(ATTEMPT in ctx.headers)
        await asyncio.sleep(0)  # other events' handlers run here, as behind a real await
        # Executed on a redelivery too: the store must roll it back (tx.duplicate).
        with ctx.transaction() as tx:
            row = (event.eid, event.key, event.seq, self._pid, via_retry, time.time())
            tx.execute(self._insert, row)


class EosCopy(Stage):
    """One committed output per input, exactly once (Kafka transactions)."""

    consumes = WORK
    emits = (COPIES,)
    group = "chaos.eos-copy"
    guarantee = "exactly_once"
    retry = POLICY

    def handle(self, event: Work, ctx: Context) -> None:
        copy = Copy(eid=event.eid, key=event.key, seq=event.seq, pid=os.getpid())
        ctx.emit(COPIES, copy)


STAGES = [Effects, EosCopy]
