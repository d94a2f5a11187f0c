"""What a run on a 3-node cluster needs to know about it: who leads which partition, which node
is the active KRaft controller, and whether every replica is back in sync.

Leaders and in-sync replicas come from the metadata any broker serves (``list_topics``). The
active controller does not: in KRaft mode a broker answers ``describe_cluster`` (and the
metadata request) with a *random* live broker as "controller", because clients were never
meant to talk to controllers (KIP-631; KAFKA-17404 proposed to change it). The local cluster's
nodes are combined broker+controller processes whose files we own, so the controller is read
where KRaft itself records it: each voter's ``__cluster_metadata-0/quorum-state`` file names
the leader it knows of and that leader's epoch, and the highest epoch wins (a killed node's
file is left behind with an older one).

The pure parts (``busiest_leader``, ``controller_from_states``, ``under_replicated``) take
plain values; ``ClusterView`` reads them from the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from pipeline.localkafka.layout import ClusterLayout

QUORUM_STATE = "__cluster_metadata-0/quorum-state"
INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")


@dataclass(frozen=True, slots=True)
class PartitionState:
    topic: str
    partition: int
    leader: int  # -1 while there is none
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def busiest_leader(
    parts: Sequence[PartitionState],
    ends: Mapping[tuple[str, int], int],
    avoid: int | None = None,
) -> int | None:
    """The node leading the most records: the sum of the end offsets of the partitions it
    leads (the run's topics all start empty, so that is what went through each). Ties go to
    the lower node id; None when no partition has a leader. ``avoid`` (the active controller,
    so that a leader kill and a controller kill are separate faults) is chosen only when no
    other node leads anything."""
    load: dict[int, int] = {}
    for p in parts:
        if p.leader >= 0 and p.leader != avoid:
            load[p.leader] = load.get(p.leader, 0) + ends.get((p.topic, p.partition), 0)
    if not load:
        return None if avoid is None else busiest_leader(parts, ends)
    return min(load, key=lambda node: (-load[node], node))


def controller_from_states(states: Iterable[str]) -> int | None:
    """The active controller according to the voters' ``quorum-state`` files (JSON texts): the
    ``leaderId`` of the highest ``leaderEpoch``. Unreadable files and ``leaderId`` -1 (an
    election in progress) are skipped."""
    best: tuple[int, int] | None = None  # (epoch, leader)
    for text in states:
        try:
            state = json.loads(text)
            epoch, leader = int(state["leaderEpoch"]), int(state["leaderId"])
        except (ValueError, KeyError, TypeError):
            continue
        if leader >= 0 and (best is None or epoch > best[0]):
            best = (epoch, leader)
    return None if best is None else best[1]


def under_replicated(parts: Iterable[PartitionState]) -> list[PartitionState]:
    """Partitions with a replica out of sync, or without a leader."""
    return [p for p in parts if p.leader < 0 or set(p.isr) != set(p.replicas)]


class ClusterView:
    """Reads leaders, ISRs, end offsets and the controller of the local cluster."""

    def __init__(self, layout: ClusterLayout, timeout_s: float = 5.0) -> None:
        self._layout = layout
        self._timeout = timeout_s
        self.bootstrap = layout.bootstrap_servers
        conf: dict[str, str | int | float | bool] = {
            "bootstrap.servers": layout.bootstrap_servers,
            "log_level": 2,
        }
        self._conf = conf
        self._admin = AdminClient(conf)

    def partitions(self, topics: Iterable[str]) -> list[PartitionState]:
        wanted = set(topics)
        meta = self._admin.list_topics(timeout=self._timeout).topics
        return [
            PartitionState(name, p, pm.leader, tuple(pm.replicas), tuple(pm.isrs))
            for name, tm in meta.items()
            if name in wanted
            for p, pm in tm.partitions.items()
        ]

    def ends(self, parts: Iterable[PartitionState]) -> dict[tuple[str, int], int]:
        """End offsets, read by a new client each time: one kept from before a failover asks
        the old leaders (NOT_LEADER_FOR_PARTITION) until its metadata is refreshed, which for
        a consumer that subscribes to nothing can take minutes."""
        consumer = Consumer(self._conf | {"group.id": "chaos-cluster-view"})
        try:
            return {
                (p.topic, p.partition): consumer.get_watermark_offsets(
                    TopicPartition(p.topic, p.partition), self._timeout, cached=False
                )[1]
                for p in parts
            }
        finally:
            consumer.close()

    def controller(self) -> int | None:
        texts = []
        for node in self._layout.nodes:
            try:
                texts.append((node.data_dir / QUORUM_STATE).read_text(encoding="utf-8"))
            except OSError:
                continue
        return controller_from_states(texts)

    def replication_problems(self, topics: Iterable[str], replicas: int, min_isr: int) -> list[str]:
        """What differs from ``replicas`` replicas and ``min.insync.replicas=min_isr`` among
        ``topics``; empty when everything is as asked. A missing topic is a problem too (the
        internal ones exist once a group, and a transactional producer, have used them)."""
        wanted = tuple(topics)
        parts = self.partitions(wanted)
        problems = sorted({t for t in wanted if not any(p.topic == t for p in parts)})
        problems = [f"{t}: missing" for t in problems]
        problems += sorted(
            {f"{p.topic}: {len(p.replicas)} replicas" for p in parts if len(p.replicas) != replicas}
        )
        present = sorted({p.topic for p in parts})
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in present]
        for resource, future in self._admin.describe_configs(resources).items():
            value = future.result(self._timeout)["min.insync.replicas"].value
            if value != str(min_isr):
                problems.append(f"{resource.name}: min.insync.replicas={value}")
        return problems

    def close(self) -> None:
        pass  # nothing is kept open but the AdminClient, which needs no closing
