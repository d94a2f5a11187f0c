"""The fault schedule: what happens when, drawn from a seeded RNG. Pure: no processes, no clock.

Faults are spread over ``[start_frac, end_frac]`` of the load window, one per equal slot, each
at a random point of its slot's middle 70% (so two faults are never on top of each other), in
a shuffled order. Constraints kept after shuffling:

- scale events alternate, in time order: up, down, up, down, ... (every scale-up is undone);
- the broker restart (if any) falls in the middle third of the schedule, so there is load
  before it and after it.

Node kills (``kill -9`` of a cluster node: the leader of the busiest partitions, or the active
controller) are spread apart from the rest: one per equal slot of the same span, at a random
point of its slot's middle 40%, in a shuffled order, so that each has time to fail over,
restart and catch up before the next (the injector still waits for the cluster to be whole
again, see ``chaos.failover``). Without node kills the schedule is what it always was for a
seed.

Which worker a kill or SIGTERM hits is decided when it happens, among the workers then alive:
``pick`` in [0, 1) indexes that list, so the same seed makes the same choices given the same
pool.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from dataclasses import dataclass


class Kind(enum.Enum):
    KILL = "kill"  # SIGKILL one worker; a replacement starts restart_after_s later
    TERM = "sigterm"  # SIGTERM one worker, wait for its exit, start a replacement
    SCALE_UP = "scale_up"  # start `workers` more
    SCALE_DOWN = "scale_down"  # SIGTERM workers until the base count is left
    BROKER_RESTART = "broker_restart"  # stop the broker node, start it again
    LEADER_KILL = "leader_kill"  # SIGKILL the node leading the busiest partitions; restart it
    CONTROLLER_KILL = "controller_kill"  # SIGKILL the active KRaft controller; restart it


NODE_KILLS = (Kind.LEADER_KILL, Kind.CONTROLLER_KILL)


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float  # seconds after the load started
    kind: Kind
    pick: float  # in [0, 1): which of the live workers (kill, sigterm)
    restart_after_s: float = 0.0  # kill, node kill: delay before the replacement/node starts
    workers: int = 0  # scale_up: how many workers to add


@dataclass(frozen=True, slots=True)
class FaultPlan:
    window_s: float  # the load's duration: faults happen while events are published
    kills: int = 20
    sigterms: int = 4
    scale_cycles: int = 2
    broker_restarts: int = 1
    leader_kills: int = 0  # a cluster of 3 nodes only
    controller_kills: int = 0
    base_workers: int = 3
    max_workers: int = 5
    start_frac: float = 0.08
    end_frac: float = 0.92
    restart_delay_s: tuple[float, float] = (0.5, 3.0)
    node_restart_delay_s: tuple[float, float] = (2.0, 5.0)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or not 0 <= self.start_frac < self.end_frac <= 1:
            raise ValueError("need window_s > 0 and 0 <= start_frac < end_frac <= 1")
        fault_counts = (self.kills, self.sigterms, self.scale_cycles, self.broker_restarts)
        if min(*fault_counts, self.leader_kills, self.controller_kills) < 0:
            raise ValueError("fault counts cannot be negative")
        if self.base_workers < 1 or self.max_workers < self.base_workers:
            raise ValueError("need 1 <= base_workers <= max_workers")
        if self.scale_cycles and self.max_workers == self.base_workers:
            raise ValueError("scaling up needs max_workers > base_workers")

    @property
    def total(self) -> int:
        worker_faults = self.kills + self.sigterms + 2 * self.scale_cycles
        return worker_faults + self.broker_restarts + self.node_kills

    @property
    def node_kills(self) -> int:
        return self.leader_kills + self.controller_kills


def schedule(plan: FaultPlan, seed: int) -> list[Fault]:
    """The faults of ``plan`` in time order; the same plan and seed give the same list."""
    rng = random.Random(seed)
    kinds = _kinds(plan, rng)
    start, end = plan.start_frac * plan.window_s, plan.end_frac * plan.window_s
    width = (end - start) / max(len(kinds), 1)
    faults = []
    for slot, kind in enumerate(kinds):
        at = start + (slot + rng.uniform(0.15, 0.85)) * width
        faults.append(_fault(plan, kind, round(at, 3), rng))
    if plan.node_kills:
        faults = sorted(faults + _node_kills(plan, rng), key=lambda f: f.at_s)
    return faults


def _node_kills(plan: FaultPlan, rng: random.Random) -> list[Fault]:
    kinds = [Kind.LEADER_KILL] * plan.leader_kills + [Kind.CONTROLLER_KILL] * plan.controller_kills
    rng.shuffle(kinds)
    start, end = plan.start_frac * plan.window_s, plan.end_frac * plan.window_s
    width = (end - start) / len(kinds)
    return [
        Fault(
            round(start + (slot + rng.uniform(0.3, 0.7)) * width, 3),
            kind,
            0.0,
            restart_after_s=round(rng.uniform(*plan.node_restart_delay_s), 3),
        )
        for slot, kind in enumerate(kinds)
    ]


def _kinds(plan: FaultPlan, rng: random.Random) -> list[Kind]:
    scale = [Kind.SCALE_UP] * (2 * plan.scale_cycles)  # relabelled below
    kinds = [Kind.KILL] * plan.kills + [Kind.TERM] * plan.sigterms + scale
    rng.shuffle(kinds)
    up = True
    for i, kind in enumerate(kinds):
        if kind is Kind.SCALE_UP:
            kinds[i] = Kind.SCALE_UP if up else Kind.SCALE_DOWN
            up = not up
    for _ in range(plan.broker_restarts):
        n = len(kinds) + 1
        kinds.insert(rng.randint(n // 3, (2 * n) // 3), Kind.BROKER_RESTART)
    return kinds


def _fault(plan: FaultPlan, kind: Kind, at: float, rng: random.Random) -> Fault:
    pick = rng.random()
    if kind is Kind.KILL:
        return Fault(at, kind, pick, restart_after_s=round(rng.uniform(*plan.restart_delay_s), 3))
    if kind is Kind.SCALE_UP:
        return Fault(at, kind, pick, workers=rng.randint(1, plan.max_workers - plan.base_workers))
    return Fault(at, kind, pick)


def counts(faults: list[Fault]) -> Counter[Kind]:
    return Counter(f.kind for f in faults)
