"""A stage's outputs: encoding them, producing them, and tying their acknowledgements to the
input's offset token.

Every output carries a derived ``event-id`` (the input's id, the stage and the output's index,
hashed), so a redelivered input emits the same ids again and downstream idempotent stages drop
the copies; its input's id as ``parent-id``, so a job's chain can be followed hop by hop; and
the input's correlation headers, so one business flow can be followed across stages (a hook's
``output_headers`` replace those of the same names). A delivery report that fails marks the
token failed once and queues it for the runner (with the error as ours, classified by the Kafka
adapter), which rewinds the partition, dead-letters the input, or aborts the transaction, on
its own thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline import delays
from pipeline.clock import SYSTEM, Clock
from pipeline.context import Context, Output
from pipeline.errors import KafkaError, SerializationError
from pipeline.headers import (
    _BLAKE2B_16,
    _UUID5_PARTS,
    _UUID_GROUPS,
    _VARIANT,
    CORRELATION_ID,
    EVENT_ID,
    PARENT_ID,
    PROPAGATED,
    HeaderList,
    _dash_join,
    _hexlify,
    coordinates_prefix,
)
from pipeline.hookcalls import Hooks
from pipeline.lanes import lane_topic
from pipeline.offsets import Token
from pipeline.ports import DeliveryCallback, ProducerPort, RawHeaders, RawRecord, TopicPartition
from pipeline.registry import StagePlan
from pipeline.serde import Binding, Codec
from pipeline.serde.codec import bound_encoder

_blake2b_16 = _BLAKE2B_16.copy
# (partition, the input's token, the error, whether the record was the input's dead letter)
FailedDelivery = tuple[TopicPartition, Token, KafkaError, bool]


class OutputWriter:
    def __init__(
        self, plan: StagePlan, codec: Codec, producer: ProducerPort, hooks: Hooks,
        clock: Clock = SYSTEM,
    ) -> None:  # fmt: skip
        self._stage = plan.name
        self._replies = plan.replies
        self._codec = codec
        # Per logical output topic, the codec bound to its binding and physical topic.
        self._encoders = {
            name: bound_encoder(codec, binding, physical)
            for name, (physical, binding) in plan.outputs.items()
        }
        self._producer = producer
        self._on_completed = hooks.on_completed
        self._output_headers = hooks.output_headers
        self._physical = {name: physical for name, (physical, _) in plan.outputs.items()}
        # ``b"/<stage>/<index>"`` of the first outputs, made ahead (``_seed_suffix`` the rest).
        self._suffixes: list[bytes] = [f"/{self._stage}/{i}".encode() for i in range(8)]
        # Per partition, the hash state its records' coordinates ids start from (inputs
        # without an event-id header: see ``headers.id_at``).
        self._prefixes: dict[TopicPartition, Any] = {}
        self._clock = clock  # fixes the due time of delayed outputs
        # Filled by delivery reports (error, record as the client gave them), drained by the
        # runner with take_failed.
        self._failed: list[tuple[TopicPartition, Token, Any, Any, bool]] = []

    def encode(self, ctx: Context) -> list[bytes]:
        """Encode every output before producing any: one that cannot be encoded must not leave
        its siblings half published."""
        out = []
        encoders = self._encoders
        for output in ctx.outputs:
            if output.delay is not None:  # checked here: a bad one fails the handler's call
                output.due_ms = delays.fix_due(output.delay, self._clock.wall_ms())
            try:
                if output.reply_to is None:
                    out.append(encoders[output.topic.name](output.event))
                else:  # to the requester's own topic, which varies: the codec's plain call
                    binding = self._reply_binding(output)  # raises SerializationError
                    out.append(self._codec.encode(output.event, binding, output.reply_to))
            except SerializationError:
                raise
            except Exception as exc:
                name = type(output.event).__name__
                raise SerializationError(f"cannot encode {name}: {exc}") from exc
        return out

    def _reply_binding(self, output: Output) -> Binding:
        binding = self._replies.get(type(output.event))
        if binding is None:  # a bug of the stage: the request is dead-lettered, not retried
            declared = ", ".join(m.__name__ for m in self._replies) or "none"
            raise SerializationError(
                f"stage {self._stage} replied with {type(output.event).__name__}, which no input "
                f"topic declares as its replies (declared: {declared}): set Topic(..., replies=)"
            )
        return binding

    def produce(
        self,
        record: RawRecord,
        ctx: Context,
        payloads: list[bytes],
        tp: TopicPartition,
        token: Token,
    ) -> None:
        parent, propagated = _carried(record.headers(), tp, token.offset, self._prefixes)
        if self._output_headers is not None:
            propagated = _overlay(propagated, self._output_headers(record, ctx))
        token.tp, token.refused = tp, self._failed  # as callback(), inline
        on_delivery: DeliveryCallback = (
            token if self._on_completed is None
            else DeliveredThenCompleted(token, record, self._on_completed)
        )  # fmt: skip
        produce = self._producer.produce
        for index, output in enumerate(ctx.outputs):
            try:
                suffix = self._suffixes[index]
            except IndexError:  # more outputs than any input had before
                suffix = self._seed_suffix(index)
            h = _blake2b_16()  # derived_id_bytes(parent + suffix), inline
            h.update(parent + suffix)
            own = _dash_join(_UUID_GROUPS(_hexlify(h.digest())))
            headers = [(EVENT_ID, own), (PARENT_ID, parent), *propagated, *output.headers]
            # A reply goes to the requester's own topic (no lanes, no delay: ctx.reply sets none).
            base = output.reply_to or self._physical[output.topic.name]
            topic = lane_topic(base, output.lane) if output.lane else base
            sent = headers
            if output.due_ms is not None:  # to a delay tier of its topic (whatever the lane)
                hop = delays.defer(topic, output.due_ms, self._clock.wall_ms(), headers, base=base)
                topic, sent = hop.topic, [*hop.headers]
            try:
                produce(topic, payloads[index], output.key, sent, on_delivery)
            except KafkaError as exc:  # refused locally (too large, unknown topic, txn state)
                on_delivery(exc, None)
                break

    def _seed_suffix(self, index: int) -> bytes:
        """``b"/<stage>/<index>"``: the part of a derived id's seed after the parent's id."""
        suffixes = self._suffixes
        suffixes.extend(f"/{self._stage}/{i}".encode() for i in range(len(suffixes), index + 1))
        return suffixes[index]

    def copy(
        self, record: RawRecord, topic: str, headers: Any, tp: TopicPartition, token: Token,
        acked: Callable[[], None] | None = None, *, dead_letter: bool = False,
    ) -> None:  # fmt: skip
        """Produce ``record`` unchanged to ``topic`` (a retry or dead-letter copy), tied to
        ``token``; ``acked`` is called once the broker has it (the outcome happened)."""
        failed = self._failed

        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                token.finish_one()
                if acked is not None:  # written, even if its input was rewound meanwhile
                    acked()
            elif not token.failed:
                token.failed = True
                failed.append((tp, token, err, msg, dead_letter))

        try:
            self._producer.produce(topic, record.value(), record.key(), headers, on_delivery)
        except KafkaError as exc:  # refused locally: as a failed delivery, the input waits
            on_delivery(exc, None)

    def callback(self, tp: TopicPartition, token: Token, record: RawRecord) -> DeliveryCallback:
        """The delivery report handler for one input's outputs: the token itself (see
        ``Token.__call__``), or, with ``on_completed`` hooks, a small object around it."""
        token.tp, token.refused = tp, self._failed
        if self._on_completed is None:
            return token
        return DeliveredThenCompleted(token, record, self._on_completed)

    @property
    def failed(self) -> bool:
        return bool(self._failed)

    def take_failed(self) -> list[FailedDelivery]:
        """Refused deliveries since the last call, their errors as ours (classified by the
        adapter: done here, on the failure path, not in every delivery callback)."""
        # Emptied in place: callbacks made earlier hold this very list.
        failed = self._failed[:]
        self._failed.clear()
        ours = self._producer.delivery_error
        return [
            (tp, token, ours(err, msg.topic() if msg is not None else "?"), dead_letter)
            for tp, token, err, msg, dead_letter in failed
        ]


def _carried(
    headers: RawHeaders, tp: TopicPartition, offset: int, prefixes: dict[TopicPartition, Any]
) -> tuple[bytes, HeaderList]:
    """One pass over an input's headers: its event id (the last non-empty one; for a record
    from another producer, its coordinates' id, ``headers.id_at`` inline, from the partition's
    hash state in ``prefixes``) and the headers its outputs carry forward, a correlation id
    among them (the input's own id when it had none)."""
    parent = None
    propagated: HeaderList = []
    correlated = False
    for k, v in headers or ():
        if k == EVENT_ID and v:
            parent = v
        elif k in PROPAGATED:
            propagated.append((k, v))
            correlated = correlated or k == CORRELATION_ID
    if parent is None:
        prefix = prefixes.get(tp)
        if prefix is None:
            prefix = prefixes[tp] = coordinates_prefix(*tp)
        h = prefix.copy()
        h.update(b"%d" % offset)
        # uuid5_text(h.digest()), inline
        a, b, c, variant, d, e = _UUID5_PARTS(_hexlify(h.digest()))
        parent = _dash_join((a, b, b"5" + c, _VARIANT[variant] + d, e))
    if not correlated:
        propagated.append((CORRELATION_ID, parent))
    return parent, propagated


def _overlay(propagated: HeaderList, contributed: Sequence[tuple[str, bytes]]) -> HeaderList:
    """The input's headers that outputs carry, with those the hooks contributed in place of
    the ones of the same names (a tracing hook's ``traceparent`` for the input's)."""
    if not contributed:
        return propagated
    names = {k for k, _ in contributed}
    return [h for h in propagated if h[0] not in names] + list(contributed)


class DeliveredThenCompleted:
    """The token's delivery report handling (``Token.__call__``), then the ``on_completed``
    hooks once the input's last output is acknowledged (its token not failed or cancelled)."""

    __slots__ = ("_completed", "_record", "_token")

    def __init__(
        self, token: Token, record: RawRecord, completed: Callable[[RawRecord], None]
    ) -> None:
        self._token, self._record, self._completed = token, record, completed

    def __call__(self, err: Any, msg: Any) -> None:
        token = self._token
        token(err, msg)
        if err is None and token.outstanding == 0 and not token.failed and not token.cancelled:
            self._completed(self._record)  # the input's last output is acknowledged
