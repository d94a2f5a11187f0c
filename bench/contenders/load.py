"""Writing input records: pre-filling a topic (as fast as possible) or a paced stream whose records
carry their send time in ``sent_ns`` (for end-to-end latency).

As a process: ``python -m bench.contenders.load --bootstrap B --topic T --rate R --seconds S
--window-on-stdin`` sends until the end of the window written on its stdin (``<from_ns> <to_ns>``)
or for S seconds, then prints ``RESULT {"sent": n, "in_window": k, "behind_ms": b}``.
"""

from __future__ import annotations

import argparse
import select
import sys
import time
import uuid
from random import Random

from confluent_kafka import Producer

from bench.contenders import common
from bench.contenders.workloads import WORKLOADS


def _producer(bootstrap: str, linger_ms: int) -> Producer:
    return Producer(
        common.PRODUCER_CONFIG
        | {"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "client.id": "bench-load"}
    )


def _send(producer: Producer, topic: str, value: bytes, key: bytes, headers: bool = True) -> None:
    # with headers: as pipeline's Publisher sends; without: as any other producer
    sent: list[tuple[str, str | bytes | None]] | None = (
        [("event-id", str(uuid.uuid4()).encode())] if headers else None
    )
    while True:
        try:
            producer.produce(topic, value, key, headers=sent)
            return
        except BufferError:
            producer.poll(0.05)


def prefill(bootstrap: str, topic: str, count: int, seed: int = 7, workload: str = "order") -> None:
    """``count`` records of ``workload``, the same for every run with the same seed."""
    producer, rng, work = _producer(bootstrap, 20), Random(seed), WORKLOADS[workload]
    for _ in range(count):
        record = work.make_record(rng)
        value, key = work.encode_record(record), record[work.key_field].encode()
        _send(producer, topic, value, key, headers=work.event_id_header)
    if producer.flush(60):
        raise RuntimeError(f"pre-filling {topic}: records left unacknowledged")


class Stamped:
    """Records whose ``order_id`` (the key, unique per record) and ``sent_ns`` are written as
    they are sent. They are the first and last fields of ``bench.Order``, so a record is the
    framing, the id, the encoding of the fields between (from a few pre-encoded records) and
    the varint of ``sent_ns``: encoding whole records at 3,700/s took the generator a sixth of
    a core, which it took from the chain it feeds (and it fell behind on a loaded machine)."""

    ID_LENGTH = 36  # a UUID's text

    def __init__(self, seed: int = 11, variety: int = 1000) -> None:
        self._rng, self._run = Random(seed), uuid.uuid4().hex[:8].encode()
        self._middles: list[bytes] = []
        start = len(common.HEADER) + 1 + self.ID_LENGTH  # framing, the id's length and text
        for _ in range(variety):
            value = common.encode_record(common.make_record(self._rng, sent_ns=0))
            assert value[start - self.ID_LENGTH - 1] == 2 * self.ID_LENGTH and value[-1] == 0
            self._middles.append(value[start:-1])  # without the id and sent_ns' varint (0)

    def take(self, i: int, sent_ns: int) -> tuple[bytes, bytes]:
        key = b"%s-%027d" % (self._run, i)  # unique: the probe of bench.chain matches by key
        middle = self._middles[i % len(self._middles)]
        return common.HEADER + b"\x48" + key + middle + common.zigzag_varint(sent_ns), key


def paced(bootstrap: str, topic: str, rate: float, seconds: float, stop_at: Stop) -> None:
    """Send ``rate`` records per second, each stamped as it is produced, for ``seconds`` at
    most or until ``stop_at`` gives the end of the measured window (read from stdin: ``<from_ns>
    <to_ns>``); then report how many were sent in that window. Due records go out once a
    millisecond; ``behind_ms`` says how far the generator fell behind its schedule at worst
    (then its records went out in a burst, each stamped when sent)."""
    producer, records = _producer(bootstrap, 1), Stamped()
    sent_times: list[int] = []
    start, sent, behind = time.perf_counter(), 0, 0.0
    while (elapsed := time.perf_counter() - start) < seconds and not stop_at.passed():
        due = int(elapsed * rate)
        if due - sent > 1:
            behind = max(behind, (due - sent) / rate)
        for _ in range(due - sent):
            now = time.time_ns()
            value, key = records.take(sent, now)
            _send(producer, topic, value, key)
            sent_times.append(now)
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0, (sent + 1) / rate - (time.perf_counter() - start), 0.001))
    producer.flush(30)
    window = stop_at.window or (0, 2**63)
    in_window = sum(1 for t in sent_times if window[0] <= t < window[1])
    common.report({"sent": sent, "in_window": in_window, "behind_ms": round(behind * 1000, 1)})


class Stop:
    """The measured window, once the orchestrator writes it on stdin (never, without one)."""

    def __init__(self, stdin: bool) -> None:
        self.window: tuple[int, int] | None = None
        self._stdin = stdin

    def passed(self) -> bool:
        if self.window is None and self._stdin and select.select([sys.stdin], [], [], 0)[0]:
            start, end = sys.stdin.readline().split()
            self.window = int(start), int(end)
        return self.window is not None and time.time_ns() >= self.window[1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--window-on-stdin", action="store_true")
    a = parser.parse_args()
    paced(a.bootstrap, a.topic, a.rate, a.seconds, Stop(a.window_on_stdin))
