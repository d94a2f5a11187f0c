"""Writing input records: pre-filling a topic (as fast as possible) or a paced stream whose records
carry their send time in ``sent_ns`` (for end-to-end latency).

As a process: ``python -m bench.contenders.load --bootstrap B --topic T --rate R --seconds S
--window-from-ns F`` prints ``RESULT {"sent": n, "in_window": k}``.
"""

from __future__ import annotations

import argparse
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


def paced(bootstrap: str, topic: str, rate: float, seconds: float, window_from_ns: int) -> None:
    """Send ``rate`` records per second for ``seconds``, each stamped as it is produced."""
    producer, rng = _producer(bootstrap, 1), Random(11)
    start, sent, in_window = time.perf_counter(), 0, 0
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(int(elapsed * rate) - sent):
            record = common.make_record(rng, sent_ns=time.time_ns())
            in_window += record["sent_ns"] >= window_from_ns
            _send(producer, topic, common.encode_record(record), record["order_id"].encode())
            sent += 1
        producer.poll(0)
        time.sleep(0.0005)
    producer.flush(30)
    common.report({"sent": sent, "in_window": in_window})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--window-from-ns", type=int, required=True)
    a = parser.parse_args()
    paced(a.bootstrap, a.topic, a.rate, a.seconds, a.window_from_ns)
