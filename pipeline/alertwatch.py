"""``AlertWatch``: the hook subscriber that judges a stage's ``alerts = Alerts(...)``.

It hears the stage like any hook: each success and failure goes into the failure window, and
each ``on_tick`` (about once a second of the runner's clock) judges the thresholds
(``pipeline.alerts``) and tells what fired or resolved to the stage's ``on_alert`` /
``on_resolved`` hooks, after logging it (the default handler) and counting it (``StageStats``).

Waiting counts and the oldest waiting event's age come from the broker: a thread of the
watch's own reads them (``StatusReader.backlog``, each read bounded by ``READ_TIMEOUT_S``)
when a tick finds a read due every ``check_interval_s``; the tick only takes the last answer,
so the consume loop never waits for the broker. A read that fails makes the values unknown
(nothing fires or resolves on them) and is logged once until reads succeed again.

Which worker judges what, when a group has several members (``--workers N``, or N pods):

- **waiting** and **oldest_waiting** are the group's figures (its committed offsets against
  the log ends, as ``pipeline status`` reads them), the same whichever member reads them. So
  one member judges them: the one assigned the *judge partition*, partition 0 of the stage's
  first input topic (exactly one member holds it at a time). The others never read the
  backlog, and one backlog fires one alert, not N. When a rebalance moves that partition, the
  old judge forgets its thresholds' state silently and the new one starts afresh: an alert
  still firing then fires once more, from the new judge (it cannot know the old one fired).
- **failure_ratio** is judged by every worker over its own deliveries: failures are not
  recorded in the broker, so a worker knows only its own. A worker-local fault (a bad host,
  its own connection pool) shows there; a group-wide one fires on each worker that sees it.
  For one group-wide ratio, use the metrics (``pipeline_events_failed_total`` over
  ``failed + completed``, summed over workers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.alerts import Alert, AlertRules, Alerts, Change
from pipeline.clock import Clock
from pipeline.config import Settings
from pipeline.hookcalls import Hooks
from pipeline.hooks import Hook, StageInfo
from pipeline.ports import RawRecord, TopicPartition
from pipeline.registry import StagePlan
from pipeline.transport import Transport

if TYPE_CHECKING:
    from pipeline.context import Context
    from pipeline.queues import StatusReader

log = logging.getLogger("pipeline.alerts")
READ_TIMEOUT_S = 5.0
Reading = tuple[int | None, float | None]  # (waiting, oldest waiting age in s)


def watch(
    plan: StagePlan, settings: Settings, transport: Transport, clock: Clock
) -> AlertWatch | None:
    """The watch of ``plan``'s alerts, or None when the stage declares none."""
    alerts = plan.stage.alerts
    if alerts is None:
        return None
    poller = None
    if alerts.reads_broker:
        backlog = _Backlog(plan, settings, transport)
        poller = BacklogPoller(plan.name, backlog.read, backlog.close)
    return AlertWatch(alerts, clock, poller, judge=(next(iter(plan.inputs)), 0))


class AlertWatch(Hook):
    """``judge``: the partition whose holder judges the group-wide alerts (see the module
    docstring); None: this watch judges them whatever it is assigned (a lone worker, a test)."""

    def __init__(
        self,
        alerts: Alerts,
        clock: Clock,
        poller: BacklogPoller | None,
        judge: TopicPartition | None = None,
    ) -> None:
        self.rules = AlertRules(alerts)
        self._clock, self._poller = clock, poller
        self._interval = alerts.check_interval_s
        self._next_read: float | None = None  # monotonic; None: at the first tick
        self._tell: tuple[Callable[..., None] | None, Callable[..., None] | None] = (None, None)
        self._judge = judge
        self.judges_backlog = judge is None

    def on_assign(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        if self._judge in partitions and not self.judges_backlog:
            self.judges_backlog, self._next_read = True, None  # read at the next tick
            if self._poller is not None:
                self._poller.take()  # one read for an earlier role (it ended mid-read) is stale
            log.info("%s: this worker judges the group's waiting alerts (it holds %s[%d])",
                     stage.name, *self._judge)  # fmt: skip

    def on_revoke(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        if self._judge in partitions and self.judges_backlog:
            self.judges_backlog = False
            self.rules.forget_backlog()  # the new judge starts afresh
            if self._poller is not None:
                self._poller.take()  # an answer read for the old role is not judged

    on_lost = on_revoke

    def attach(self, hooks: Hooks) -> None:
        """Tell fired and resolved alerts to these hooks (the stage's, resolved)."""
        self._tell = (hooks.on_alert, hooks.on_resolved)

    def on_stage_start(self, stage: StageInfo) -> None:
        if self._poller is not None:
            self._poller.start()

    def on_stage_stop(self, stage: StageInfo) -> None:
        if self._poller is not None:
            self._poller.stop()

    def on_succeeded(self, stage: StageInfo, record: RawRecord, ctx: Context) -> None:
        self.rules.window.add(self._clock.monotonic(), failed=False)

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        self.rules.window.add(self._clock.monotonic(), failed=True)

    def on_tick(self, stage: StageInfo, now: float) -> None:
        wall = self._clock.time()
        changes = self.rules.failure_ratio(now, wall)
        poller = self._poller
        if poller is not None and self.judges_backlog:
            reading = poller.take()
            if reading is not None:
                changes += self.rules.backlog(*reading, at=wall)
            if self._next_read is None or now >= self._next_read:
                self._next_read = now + self._interval
                poller.request()
        for change in changes:
            self._report(stage, change)

    def _report(self, stage: StageInfo, change: Change) -> None:
        kind, alert = change
        if kind == "alert":
            log.warning("%s: alert %s: %s", stage.name, alert.kind, alert.describe())
            tell = self._tell[0]
        else:
            log.warning("%s: resolved %s: %s", stage.name, alert.kind, alert.describe())
            tell = self._tell[1]
        if tell is not None:
            tell(alert)


class BacklogPoller:
    """A thread that runs ``read`` when asked, keeping the last answer for ``take``."""

    def __init__(
        self, name: str, read: Callable[[], Reading], close: Callable[[], None] = lambda: None
    ) -> None:
        self._name, self._read, self._close = name, read, close
        self._wanted, self._stopped = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._answer: Reading | None = None
        self._failing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"{self._name}-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(1.0)  # a read in progress ends within its timeout, on a daemon

    def request(self) -> None:
        self._wanted.set()  # a read in progress already counts: requests do not queue up

    def take(self) -> Reading | None:
        with self._lock:
            answer, self._answer = self._answer, None
        return answer

    def poll_once(self) -> None:
        """One read (what the thread does when asked)."""
        try:
            answer: Reading = self._read()
        except Exception as exc:  # the broker, or anything else: unknown, and said once
            if not self._failing:
                log.warning("%s: cannot read the backlog for alerts (%s); waiting and oldest "
                            "age unknown until it can", self._name, exc)  # fmt: skip
            self._failing, answer = True, (None, None)
        else:
            if self._failing:
                log.info("%s: backlog readable again for alerts", self._name)
            self._failing = False
        with self._lock:
            self._answer = answer

    def _loop(self) -> None:
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopped.is_set():
                    return
                self.poll_once()
        finally:
            self._close()


class _Backlog:
    """The stage's backlog, read with one client kept by the poller's thread."""

    def __init__(self, plan: StagePlan, settings: Settings, transport: Transport) -> None:
        self._plan, self._settings, self._transport = plan, settings, transport
        self._reader: StatusReader | None = None

    def read(self) -> Reading:
        if self._reader is None:
            # Only alerts that read the broker load the status reader (and its live-metrics
            # HTTP client): every worker imports this module.
            from pipeline.queues import StatusReader

            self._reader = StatusReader(self._settings, [self._plan], transport=self._transport,
                                        timeout_s=READ_TIMEOUT_S)  # fmt: skip
        backlog = self._reader.backlog(self._plan)
        return backlog.waiting, backlog.oldest_waiting_s

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


__all__ = ["Alert", "AlertWatch", "BacklogPoller", "watch"]
