"""Carrying out a fault schedule against the worker pool and the broker, and recording it.

One thread, one queue of due actions (the schedule's faults plus the replacement starts that
kills add). Between actions it supervises the pool: a worker that exits on its own is recorded
as an *unexpected exit* (a crash: the fault matrix allows none) and replaced at once, as a
supervisor would, so the run goes on and the crash shows in the report with its log.

A SIGTERM does not hold up the schedule: the worker is reaped by the supervision loop (SIGKILL
if it outlives the shutdown timeout plus a margin), its exit code and duration are recorded,
and its replacement starts then. Kills and SIGTERMs only hit workers that have run a few
seconds, and SIGTERMs only those whose handler is installed (``Worker.handles_sigterm``); a
fault that finds none is retried a second later.

Node kills (3-node cluster only) go through ``chaos.failover.Failover``: one waits until the
cluster is whole again, and worker faults wait while a node kill's recovery is measured.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from chaos.failover import Failover, NodeKill
from chaos.faults import NODE_KILLS, Fault, Kind
from chaos.workers import Exit, Stopping, Worker, WorkerPool

log = logging.getLogger("chaos.inject")
SUPERVISE_EVERY_S = 0.2
MIN_TARGET_AGE_S = 5.0  # prefer workers that have had time to join and take partitions


class Restartable(Protocol):
    restartable: bool

    def restart(self) -> float: ...


@dataclass
class FaultLog:
    kills: list[tuple[float, int]] = field(default_factory=list)  # (at s, pid)
    exits: list[Exit] = field(default_factory=list)  # SIGTERMed and crashed workers
    scale_events: list[tuple[float, str, int]] = field(default_factory=list)  # (at, dir, n)
    broker_restarts: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds)
    broker_restart_skipped: str | None = None
    node_kills: list[NodeKill] = field(default_factory=list)
    node_kills_skipped: str | None = None
    timeline: list[str] = field(default_factory=list)

    def note(self, at_s: float, text: str) -> None:
        clock = time.strftime("%H:%M:%S")
        line = f"{clock} {at_s:8.1f}s  {text}"
        self.timeline.append(line)
        log.info("%s", line)

    @property
    def sigterm_exits(self) -> list[Exit]:
        return [e for e in self.exits if e.reason != "unexpected"]

    @property
    def unexpected_exits(self) -> list[Exit]:
        return [e for e in self.exits if e.reason == "unexpected"]


class Injector:
    def __init__(
        self,
        pool: WorkerPool,
        broker: Restartable,
        base_workers: int,
        term_timeout_s: float,
        record: FaultLog,
        failover: Failover | None = None,
    ) -> None:
        self._pool = pool
        self._failover = failover
        self._broker = broker
        self._base = base_workers
        self._term_timeout = term_timeout_s
        self.record = record
        self._t0 = time.monotonic()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = 0
        self._stopping: list[Stopping] = []
        self._owed = 0  # replacements to start: after kills (delayed) and SIGTERMs in progress

    def now_s(self) -> float:
        return time.monotonic() - self._t0

    def run(self, faults: list[Fault], t0: float) -> None:
        """Carry out ``faults`` (``at_s`` relative to ``t0``, a monotonic time) and every
        replacement start they cause; return when nothing is left to do."""
        self._t0 = t0
        for fault in faults:
            self._push(t0 + fault.at_s, self._action(fault))
        while self._queue or self._stopping or (self._failover and self._failover.busy()):
            due = self._queue[0][0] if self._queue else time.monotonic() + SUPERVISE_EVERY_S
            while time.monotonic() < due:
                self.supervise()
                time.sleep(min(SUPERVISE_EVERY_S, max(0.0, due - time.monotonic())))
            if self._queue:
                heapq.heappop(self._queue)[2]()
            self.supervise()

    def supervise(self) -> None:
        """Reap SIGTERMed workers (and start their replacements) and crashed ones."""
        for stopping in list(self._stopping):
            done = self._pool.finish_terminate(stopping)
            if done is not None:
                self._stopping.remove(stopping)
                self._record_exit(done)
                if done.reason == "sigterm":
                    self._owed -= 1
                    self._start("restart after SIGTERM")
        for crashed in self._pool.reap():
            self.record.exits.append(crashed)
            what = f"worker-{crashed.number} (pid {crashed.pid}, code {crashed.code})"
            self.record.note(self.now_s(), f"UNEXPECTED exit of {what}; see {crashed.log}")
            self._start("replacing a crashed worker")

    # -- actions --------------------------------------------------------------------------

    def _push(self, due: float, action: Callable[[], None]) -> None:
        self._order += 1
        heapq.heappush(self._queue, (due, self._order, action))

    def _action(self, fault: Fault) -> Callable[[], None]:
        actions = {
            Kind.KILL: self._kill,
            Kind.TERM: self._term,
            Kind.SCALE_UP: self._scale_up,
            Kind.SCALE_DOWN: self._scale_down,
            Kind.BROKER_RESTART: self._restart_broker,
            Kind.LEADER_KILL: self._kill_node,
            Kind.CONTROLLER_KILL: self._kill_node,
        }
        act = actions[fault.kind]

        def act_or_wait() -> None:
            measuring = self._failover is not None and self._failover.measuring()
            if measuring and fault.kind not in NODE_KILLS:
                self._later(fault)  # a worker fault would blur the failover's recovery time
            else:
                act(fault)

        return act_or_wait

    def _start(self, why: str) -> Worker:
        worker = self._pool.start()
        self.record.note(self.now_s(), f"start worker-{worker.number} (pid {worker.pid}): {why}")
        return worker

    def _targets(self, pick: float, *, sigterm: bool) -> list[Worker]:
        """Live workers that have run ``MIN_TARGET_AGE_S`` (and, for a SIGTERM, handle it),
        the one ``pick`` chooses first."""
        live = self._pool.live()
        ok = [w for w in live if w.age_s >= MIN_TARGET_AGE_S and (w.handles_sigterm or not sigterm)]
        first = int(pick * len(ok))
        return ok[first:] + ok[:first]

    def _later(self, fault: Fault) -> None:
        """No worker fits yet (all just started): try again in a second."""
        self._push(time.monotonic() + 1.0, self._action(fault))

    def _kill(self, fault: Fault) -> None:
        targets = self._targets(fault.pick, sigterm=False)
        if not targets:
            self._later(fault)
            return
        worker = targets[0]
        self._pool.kill(worker)
        self.record.kills.append((self.now_s(), worker.pid))
        self.record.note(self.now_s(), f"kill -9 worker-{worker.number} (pid {worker.pid})")
        self._owed += 1
        self._push(time.monotonic() + fault.restart_after_s, self._restart_after_kill)

    def _restart_after_kill(self) -> None:
        self._owed -= 1
        self._start("restart after kill -9")

    def _term(self, fault: Fault) -> None:
        targets = self._targets(fault.pick, sigterm=True)
        if not targets:
            self._later(fault)
            return
        self._sigterm(targets[0], "sigterm")
        self._owed += 1

    def _sigterm(self, worker: Worker, reason: str) -> None:
        self._stopping.append(self._pool.begin_terminate(worker, reason, self._term_timeout))
        self.record.note(
            self.now_s(), f"SIGTERM ({reason}) worker-{worker.number} (pid {worker.pid})"
        )

    def _record_exit(self, done: Exit) -> None:
        self.record.exits.append(done)
        code = "killed after timeout" if done.code is None else f"exit {done.code}"
        who = f"worker-{done.number} (pid {done.pid})"
        self.record.note(
            self.now_s(), f"{who} after SIGTERM ({done.reason}): {code} in {done.seconds:.1f}s"
        )

    def _scale_up(self, fault: Fault) -> None:
        for _ in range(fault.workers):
            self._start("scale up")
        live = len(self._pool.live())
        self.record.scale_events.append((self.now_s(), "up", live))
        self.record.note(self.now_s(), f"scaled up to {live} workers")

    def _scale_down(self, fault: Fault) -> None:
        extra = len(self._pool.live()) + self._owed - self._base
        targets = self._targets(fault.pick, sigterm=True)
        if extra > len(targets):
            self._later(fault)
            return
        for worker in targets[: max(0, extra)]:
            self._sigterm(worker, "scale_down")
        left = len(self._pool.live())
        self.record.scale_events.append((self.now_s(), "down", left))
        self.record.note(self.now_s(), f"scaled down to {left} workers (+{self._owed} owed)")

    def _restart_broker(self, _fault: Fault) -> None:
        if not self._broker.restartable:
            self.record.broker_restart_skipped = "external broker: not restarted"
            self.record.note(self.now_s(), "broker restart skipped (external broker)")
            return
        at = self.now_s()
        self.record.note(at, "broker restart: stopping node 1")
        seconds = self._broker.restart()
        self.record.broker_restarts.append((at, seconds))
        self.record.note(self.now_s(), f"broker node 1 ready again ({seconds:.1f}s)")

    def _kill_node(self, fault: Fault) -> None:
        if self._failover is None:
            self.record.node_kills_skipped = "no private 3-node cluster: nodes not killed"
            self.record.note(self.now_s(), f"{fault.kind.value} skipped (no 3-node cluster)")
            return
        before = self._failover.waiting
        kill = self._failover.kill(fault, self.now_s)
        if kill is None:
            if self._failover.waiting != before:  # once per reason, not once a second
                self.record.note(
                    self.now_s(), f"{fault.kind.value} waits: {self._failover.waiting}"
                )
            self._later(fault)
            return
        self.record.node_kills.append(kill)
        also = " (also the active controller)" if kill.was_controller else ""
        self.record.note(
            self.now_s(),
            f"kill -9 node {kill.node}, {kill.role}{also}, leading {kill.led} input partitions; "
            f"restart in {fault.restart_after_s:.1f}s",
        )
