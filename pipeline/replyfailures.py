"""``FailedReplies``: a replying stage answers a request it dead-lettered or skipped with an
error reply, so its requester fails at once with ``RequestFailed`` (the reason) instead of
waiting for its ``RequestTimeout``.

A hook subscriber (``on_dead_lettered``, ``on_skipped``), added to each stage whose input
topics declare ``replies``. It hears a dead letter once it is stored (in an exactly-once
stage, once the transaction committed) and a ``Skip`` when the handler raises it, and produces
with a plain producer of its own: the error reply is not part of the stage's transaction, and
losing it (a worker killed at that moment) only leaves the requester with its timeout, as
before. The reply has no value; its headers are ``in-reply-to`` (the request id) and
``reply-error``: ``"Type: message"`` of a dead-lettered request's error, ``"skipped by
<stage>: Skip: message"`` for a skipped one (never a payload). A request published with
``publish`` (no ``reply-to``) gets nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipeline import headers as hdr
from pipeline.hooks import Hook, StageInfo
from pipeline.jobs.state import summarise
from pipeline.ports import ProducerPort, RawRecord
from pipeline.transport import Transport

if TYPE_CHECKING:
    from pipeline.registry import StagePlan

log = logging.getLogger("pipeline.reply")
FLUSH_S = 5.0  # at stage stop: error replies still queued get this long


class FailedReplies(Hook):
    def __init__(self, producer: ProducerPort) -> None:
        self._producer = producer

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._answer(record, summarise(error))

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        # Skipped is an answer too: the stage will never reply, so the requester need not wait.
        self._answer(record, f"skipped by {stage.name}: {summarise(error)}")

    def _answer(self, record: RawRecord, reason: str) -> None:
        headers = record.headers()
        reply_to = hdr.to_dict(headers).get(hdr.REPLY_TO)
        if not reply_to:
            return  # published, not requested
        where = f"{record.topic()}[{record.partition()}]@{record.offset()}"
        request_id = hdr.event_id_of(headers, where)
        sent = [(hdr.IN_REPLY_TO, request_id.encode()), (hdr.REPLY_ERROR, reason.encode())]
        self._producer.produce(reply_to.decode(errors="replace"), None, None, sent, _reported)
        self._producer.poll(0)

    def on_stage_stop(self, stage: StageInfo) -> None:
        self._producer.flush(FLUSH_S)


def _reported(err: Any, msg: Any) -> None:
    if err is not None:  # the requester falls back on its timeout
        log.warning("error reply not delivered: %s", err)


def watch(plan: StagePlan, transport: Transport, client_id: str) -> FailedReplies | None:
    """The error-reply hook of a stage that answers requests, or None."""
    if not plan.replies:
        return None
    return FailedReplies(transport.producer(f"{client_id}-replies"))
