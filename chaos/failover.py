"""Node kills on the private 3-node cluster: pick the node, ``kill -9`` it, start it again, and
measure how long the stages take to recover.

A kill goes ahead only while the cluster is *whole*: every node runs and every partition of
the run's topics and of ``__consumer_offsets``/``__transaction_state`` has its full ISR. With
replication factor 3 and ``min.insync.replicas=2`` one node down is survivable and two are not,
so a kill that finds the cluster still catching up waits (the injector retries it a second
later) rather than turning a failover test into an outage.

- *leader kill*: the node that leads the busiest partitions of the run's topics
  (``chaos.cluster.busiest_leader``), other than the active controller, so that leader kills
  move partition leaders and group/transaction coordinators but not the controller;
- *controller kill*: the active KRaft controller (``ClusterView.controller``). Every node
  is a combined broker+controller, so it leads partitions too; a controller kill moves both.

After ``restart_after_s`` a timer thread starts the node again and waits until it is ready
and the cluster is whole again. From the moment of the kill a ``RecoveryProbe`` measures each
stage's recovery time (``chaos.recovery``); while it runs, the injector holds worker faults
back, so the figure is the failover's own and not a worker kill's rebalance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaException

from chaos.cluster import (
    INTERNAL_TOPICS,
    ClusterView,
    busiest_leader,
    under_replicated,
)
from chaos.faults import Fault, Kind
from chaos.recovery import RecoveryProbe

IN_SYNC_TIMEOUT_S = 180.0


class Nodes(Protocol):
    """The private cluster (``chaos.broker.PrivateBroker``)."""

    nodes: int

    def kill_node(self, node_id: int) -> None: ...
    def start_node(self, node_id: int) -> float: ...
    def running_nodes(self) -> list[int]: ...


@dataclass
class NodeKill:
    """One node kill and what followed it. Times are seconds after the kill, None if it did
    not happen (in time)."""

    role: str  # "leader" or "controller"
    node: int
    at_s: float  # after the load started
    led: int  # partitions of the input topic the node led at the kill
    was_controller: bool
    ready_s: float | None = None  # the restarted node logged readiness
    in_sync_s: float | None = None  # every replica in sync again
    recovery_s: dict[str, float | None] = field(default_factory=dict)  # per stage

    @property
    def recovered(self) -> bool:
        return bool(self.recovery_s) and all(s is not None for s in self.recovery_s.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "node": self.node,
            "at_s": round(self.at_s, 1),
            "led_input_partitions": self.led,
            "was_controller": self.was_controller,
            "recovery_s": self.recovery_s,
            "max_recovery_s": max((s for s in self.recovery_s.values() if s), default=None),
            "node_ready_s": self.ready_s,
            "in_sync_s": self.in_sync_s,
        }


@dataclass(frozen=True)
class Watch:
    """What the failover looks at: the run's topics, its input topic and stage groups."""

    topics: tuple[str, ...]
    input_topic: str
    groups: Mapping[str, str]  # stage name → group id


class Failover:
    def __init__(
        self,
        cluster: Nodes,
        view: ClusterView,
        watch: Watch,
        note: Callable[[str], None],
    ) -> None:
        self._cluster = cluster
        self._view = view
        self._watch = watch
        self._note = note
        self.load_done: Callable[[], bool] = lambda: False  # the runner sets it
        self._probes: list[RecoveryProbe] = []
        self._restarts: list[threading.Thread] = []
        self.waiting = ""  # why the last node kill could not go ahead

    def replication_problems(self, replicas: int, min_isr: int, *, internal: bool) -> list[str]:
        """The run's topics (or, ``internal``, the offsets and transaction topics) that are
        not replicated as asked (``ClusterView.replication_problems``)."""
        topics = INTERNAL_TOPICS if internal else self._watch.topics
        return self._view.replication_problems(topics, replicas, min_isr)

    def measuring(self) -> bool:
        """A recovery is being measured (worker faults wait)."""
        return any(p.is_alive() for p in self._probes)

    def busy(self) -> bool:
        return self.measuring() or any(t.is_alive() for t in self._restarts)

    def whole(self) -> bool:
        if self.busy():
            self.waiting = "the last node kill is still being measured or restarted"
        elif len(self._cluster.running_nodes()) < self._cluster.nodes:
            self.waiting = "a node is down"
        elif not self._in_sync():
            self.waiting = "replicas out of sync"
        else:
            return True
        return False

    def kill(self, fault: Fault, now_s: Callable[[], float]) -> NodeKill | None:
        """Kill the node ``fault`` asks for; None (try later) if the cluster is not whole."""
        if not self.whole():
            return None
        try:
            parts = self._view.partitions(self._watch.topics)
            ends = self._view.ends(parts)
        except KafkaException as exc:  # metadata catching up with moved leaders: try later
            self.waiting = f"reading leaders and end offsets failed: {exc}"
            return None
        controller = self._view.controller()
        if fault.kind is Kind.CONTROLLER_KILL:
            node = controller
        else:
            node = busiest_leader(parts, ends, avoid=controller)
        if node is None:
            self.waiting = "no node to kill (no leader, or no controller known)"
            return None
        self.waiting = ""
        inputs = [p for p in parts if p.topic == self._watch.input_topic]
        ends_at_kill = {p.partition: ends[(p.topic, p.partition)] for p in inputs}
        killed_at, at_s = time.monotonic(), now_s()
        self._cluster.kill_node(node)
        role = "controller" if fault.kind is Kind.CONTROLLER_KILL else "leader"
        kill = NodeKill(
            role, node, at_s, sum(1 for p in inputs if p.leader == node), node == controller
        )
        probe = RecoveryProbe(
            self._view.bootstrap,
            self._watch.input_topic,
            self._watch.groups,
            ends_at_kill,
            killed_at,
            self.load_done,
        )
        probe.start()
        self._probes.append(probe)
        restart = threading.Timer(fault.restart_after_s, self._restart, (kill, probe, killed_at))
        restart.daemon = True
        restart.start()
        self._restarts.append(restart)
        return kill

    def _restart(self, kill: NodeKill, probe: RecoveryProbe, killed_at: float) -> None:
        self._note(f"restarting node {kill.node}")
        try:
            self._cluster.start_node(kill.node)
        except Exception as exc:  # reported; the run goes on and its checks say the rest
            self._note(f"node {kill.node} did not start again: {exc}")
        else:
            kill.ready_s = round(time.monotonic() - killed_at, 2)
            self._note(f"node {kill.node} ready again ({kill.ready_s:.1f}s after the kill)")
            self._await_in_sync(kill, killed_at)
        probe.join()
        kill.recovery_s = dict(probe.seconds)
        self._note(
            f"node {kill.node}: in sync {kill.in_sync_s}s, recovery {kill.recovery_s} "
            "(seconds after the kill)"
        )

    def _await_in_sync(self, kill: NodeKill, killed_at: float) -> None:
        deadline = time.monotonic() + IN_SYNC_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._in_sync():
                kill.in_sync_s = round(time.monotonic() - killed_at, 2)
                return
            time.sleep(0.5)  # polling the cluster's metadata

    def _in_sync(self) -> bool:
        try:
            parts = self._view.partitions(self._watch.topics + INTERNAL_TOPICS)
        except KafkaException:
            return False
        return bool(parts) and not under_replicated(parts)

    def finish(self) -> None:
        """Wait for every restart and measurement to end."""
        for thread in self._restarts:
            thread.join()
