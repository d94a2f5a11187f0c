"""The hook vocabulary: what each hook hears and when, on the in-memory broker, and the rules
(resolved once, a raising hook is logged and the stage goes on, explicit registration)."""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline import (
    BreakerPolicy,
    Context,
    DeclarationError,
    Idempotency,
    Pipeline,
    RetryPolicy,
    Settings,
    Skip,
    Stage,
    Topic,
)
from pipeline.hookcalls import Hooks
from pipeline.hooks import Hook, StageInfo, WorkerInfo
from pipeline.stats import StageStats, StatsHook
from pipeline.testing import FakeClock, MemoryBroker, MemoryTransport, TestPipeline
from pipeline.worker import Worker
from tests.conftest import TEST_SCHEMAS
from tests.hookkit import Recorder
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

NO_RETRIES = RetryPolicy(in_process_attempts=1, tiers=())
PINGS_BY_ID = Topic("test.pings", Ping, id_field="ping_id")
CURRENT = contextvars.ContextVar("current", default="none")


class Answer(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = NO_RETRIES

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id == "poison":
            raise ValueError("poison")
        if event.ping_id == "skip":
            raise Skip("not for us")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answer"))


class Quiet(Stage):
    """No outputs: done as soon as the handler returns."""

    consumes = PINGS
    retry = NO_RETRIES

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


def _settings(**values: Any) -> Settings:
    return Settings(schemas_dir=TEST_SCHEMAS, **values)


def _at(t: TestPipeline, record: Any) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


# -- resolution -------------------------------------------------------------------------------


def test_an_event_nobody_overrides_resolves_to_none_and_the_stats_are_called_unguarded() -> None:
    stats = StageStats("s", "g")
    hooks = Hooks(StageInfo("s", "g", "w"), [StatsHook(stats)])
    assert hooks.on_tick is None and hooks.after_batch is None and hooks.on_completed is None
    assert hooks.on_succeeded is None, "the stats count successes once per step, not per record"
    assert isinstance(hooks.count_succeeded, functools.partial), "trusted: no guard around it"

    def handler(event: Any, ctx: Any) -> None:
        pass

    assert hooks.wrap(handler, is_async=False) is handler, "no around_handler: not wrapped"


def test_trusted_hooks_of_one_event_are_each_called_in_order_without_a_guard() -> None:
    one, two = StageStats("s", "g"), StageStats("s", "g")
    hooks = Hooks(StageInfo("s", "g", "w"), [StatsHook(one), StatsHook(two)])
    assert hooks.on_skipped is not None
    hooks.on_skipped(None, ValueError("x"))
    assert one.skipped == two.skipped == 1
    assert hooks.on_skipped.__name__ == "each", "trusted: called without a guard"


def test_a_runner_without_user_hooks_wraps_nothing_and_resolves_no_tick() -> None:
    with TestPipeline([Answer], _settings()) as t:
        runner = t.pipeline.runner(t.pipeline.plans[0], "w9")
        assert runner.hooks.on_tick is None and runner.hooks.on_completed is None
        assert runner.hooks.stage == StageInfo("answer", runner.plan.group, "w9")


# -- what is heard, and when ------------------------------------------------------------------


def test_a_success_is_heard_from_start_to_completion_and_commit() -> None:
    rec = Recorder()
    with TestPipeline([Answer], _settings(), hooks=[rec]) as t:
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    at = _at(t, sent)
    names = rec.names()
    assert names[0] == "stage_start" and names[-1] == "stage_stop"
    assert names.index("assign") < names.index("before_batch") < names.index("enter")
    assert rec.of("enter") == [("enter", "answer", at)]
    assert rec.of("exit") == [("exit", "answer", at, None)]
    assert rec.of("succeeded") == [("succeeded", "answer", at, 1)]
    assert rec.of("completed") == [("completed", "answer", at)]
    assert names.index("exit") < names.index("succeeded") < names.index("completed")
    assert names.index("before_batch") < names.index("after_batch")
    commits = [c[2] for c in rec.of("commit")]
    assert {(sent.topic, sent.partition): sent.offset + 1} in commits
    assert rec.of("revoke"), "closing the harness hands the partitions back"


def test_a_refused_commit_is_heard_and_its_offsets_are_committed_later() -> None:
    """The broker refuses two asynchronous commits: ``on_commit_failed`` names the partition
    each time, and the next commit carries its offset."""
    rec = Recorder()
    with TestPipeline([Quiet], _settings(), hooks=[rec]) as t:
        t.broker.fail_commits(t.pipeline.plans[0].group, 2)
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    tp = (sent.topic, sent.partition)
    assert [h[2] for h in rec.of("commit_failed")] == [[tp], [tp]]
    assert any(c[2].get(tp) == sent.offset + 1 for c in rec.of("commit")[2:])


def test_completed_waits_for_the_outputs_acknowledgement() -> None:
    """An output the broker refuses (once, retriably) does not complete its input: the
    partition stalls, the input is handled again, and completes once its output is in."""
    rec = Recorder()
    with TestPipeline([Answer], _settings(), hooks=[rec]) as t:
        t.broker.fail_deliveries(t.settings.topic(PONGS.name), 1)
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
        assert len(t.outputs(PONGS)) == 1
    at = _at(t, sent)
    assert [h[2] for h in rec.of("succeeded")] == [at, at]
    assert rec.of("completed") == [("completed", "answer", at)]
    assert [(h[3], h[4]) for h in rec.of("delivery_stall")] == [(sent.offset, 1)]
    names = rec.names()
    assert names.index("delivery_stall") < len(names) - names[::-1].index("succeeded") - 1


def test_an_event_without_outputs_is_completed_when_its_handler_returns() -> None:
    rec = Recorder()
    with TestPipeline([Quiet], _settings(), hooks=[rec]) as t:
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    assert rec.of("succeeded") == [("succeeded", "quiet", _at(t, sent), 0)]
    assert rec.of("completed") == [("completed", "quiet", _at(t, sent))]


def test_failures_are_heard_with_their_outcome() -> None:
    rec = Recorder()
    with TestPipeline([Answer], _settings(), hooks=[rec]) as t:
        poison = t.publish(PINGS, Ping(ping_id="poison", n=0), key="k")
        skip = t.publish(PINGS, Ping(ping_id="skip", n=1), key="k")
        t.run_until_idle()
        stats = t.stats(Answer)
    assert rec.of("failed") == [
        ("failed", "answer", _at(t, poison), "ValueError", 1, False),
        ("failed", "answer", _at(t, skip), "Skip", 1, False),
    ]
    assert rec.of("dead_lettered") == [("dead_lettered", "answer", _at(t, poison), "ValueError")]
    assert rec.of("skipped") == [("skipped", "answer", _at(t, skip))]
    assert ("exit", "answer", _at(t, poison), "ValueError") in rec.heard
    assert rec.of("succeeded") == [] and rec.of("completed") == []
    assert (stats.failed, stats.dead_lettered, stats.skipped) == (2, 1, 1)


class Flaky(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))
    calls = 0

    def handle(self, event: Ping, ctx: Context) -> None:
        type(self).calls += 1
        if type(self).calls == 1:
            raise ConnectionError("first delivery fails")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="flaky"))


def test_a_retry_is_heard_once_its_copy_is_acknowledged_then_the_success() -> None:
    Flaky.calls = 0
    rec = Recorder()
    with TestPipeline([Flaky], _settings(), hooks=[rec]) as t:
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    assert rec.of("retrying") == [("retrying", "flaky", _at(t, sent), "ConnectionError", 1, 0)]
    assert rec.of("failed") == [("failed", "flaky", _at(t, sent), "ConnectionError", 1, True)]
    [succeeded] = rec.of("succeeded")
    assert succeeded[2].startswith(t.pipeline.plans[0].retry_topics[0])
    names = rec.names()
    assert names.index("failed") < names.index("retrying") < names.index("succeeded")


class Guarded(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = NO_RETRIES
    breaker = BreakerPolicy(failure_threshold=1, cooldown_s=1.0)
    down = True

    def handle(self, event: Ping, ctx: Context) -> None:
        if type(self).down:
            type(self).down = False
            raise ConnectionError("dependency down")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="guarded"))


def test_the_breaker_is_heard_opening_probing_and_closing() -> None:
    Guarded.down = True
    rec = Recorder()
    with TestPipeline([Guarded], _settings(), hooks=[rec]) as t:
        assert t.stats(Guarded).breaker == "closed"
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    changes = [(old, new) for _, _, old, new in rec.of("breaker")]
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    [failed] = rec.of("failed")
    assert failed[3:] == ("ConnectionError", 1, True), "held by the breaker: tried again"
    assert rec.of("retrying") == [], "a hold is not a retry copy"


class InPlace(Stage):
    consumes = PINGS
    retry = RetryPolicy(in_process_attempts=1, ordered=True)
    calls = 0

    def handle(self, event: Ping, ctx: Context) -> None:
        type(self).calls += 1
        if type(self).calls < 3:
            raise ConnectionError("not yet")


def test_an_in_place_retry_is_heard_with_no_tier_and_counted_attempts() -> None:
    InPlace.calls = 0
    rec = Recorder()
    with TestPipeline([InPlace], _settings(), hooks=[rec]) as t:
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    at = _at(t, sent)
    assert [h[2:] for h in rec.of("failed")] == [
        (at, "ConnectionError", 1, True),
        (at, "ConnectionError", 2, True),
    ]
    assert [h[2:] for h in rec.of("retrying")] == [
        (at, "ConnectionError", 1, None),
        (at, "ConnectionError", 2, None),
    ]
    assert [h[2] for h in rec.of("completed")] == [at]


def test_a_duplicate_is_heard_and_not_handled(tmp_path: Path) -> None:
    rec = Recorder()

    class Once(Stage):
        consumes = PINGS
        retry = NO_RETRIES
        idempotency = Idempotency(url=f"sqlite:///{tmp_path}/done.db")

        def handle(self, event: Ping, ctx: Context) -> None:
            pass

    with TestPipeline([Once], _settings(), hooks=[rec]) as t:
        t.publish(PINGS_BY_ID, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
        again = t.publish(PINGS_BY_ID, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    assert rec.of("duplicate") == [("duplicate", "once", _at(t, again))]
    assert len(rec.of("succeeded")) == 1


def test_tick_comes_about_once_a_second_of_the_runners_clock() -> None:
    rec = Recorder()
    with TestPipeline([Quiet], _settings(), hooks=[rec]) as t:
        clock = t.clock
        assert isinstance(clock, FakeClock)
        t.step()
        before = len(rec.of("tick"))
        clock.advance(1.5)
        t.step()
        assert len(rec.of("tick")) == before + 1
        t.step()
        assert len(rec.of("tick")) == before + 1, "not again within the second"


# -- registration -----------------------------------------------------------------------------


class Mine(Stage):
    consumes = PINGS
    retry = NO_RETRIES
    hooks = (Recorder(),)

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


def test_a_stage_hook_hears_its_stage_only_and_a_pipeline_hook_hears_every_stage() -> None:
    everyone = Recorder()
    mine = Mine.hooks[0]
    assert isinstance(mine, Recorder)
    mine.heard.clear()
    with TestPipeline([Mine, Quiet], _settings(), hooks=[everyone]) as t:
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
    assert {h[1] for h in mine.heard} == {"mine"}
    assert {h[1] for h in everyone.of("succeeded")} == {"mine", "quiet"}


def test_hooks_must_be_hook_instances_in_a_list_or_tuple() -> None:
    with pytest.raises(DeclarationError, match=r"hooks.*Hook"):

        class Bad(Stage):
            consumes = PINGS
            hooks = (object(),)  # type: ignore[assignment]

            def handle(self, event: Ping, ctx: Context) -> None:
                pass

    with pytest.raises(DeclarationError, match="list or tuple"):

        class Single(Stage):
            consumes = PINGS
            hooks = Recorder()  # type: ignore[assignment]

            def handle(self, event: Ping, ctx: Context) -> None:
                pass

    with pytest.raises(DeclarationError, match="Pipeline hooks"):
        memory = MemoryTransport(MemoryBroker(), _settings())
        Pipeline.build(_settings(), [Quiet], memory, hooks=[Recorder])  # type: ignore[list-item]


def test_a_modules_hooks_list_is_the_pipelines_for_pipeline_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hooked_stages.py").write_text(
        textwrap.dedent(
            """
            from pipeline import Stage
            from tests.hookkit import Recorder
            from tests.integration.app_stages import PINGS

            class Watched(Stage):
                consumes = PINGS
                def handle(self, event, ctx):
                    pass

            STAGES = [Watched]
            HOOKS = [Recorder()]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        memory = MemoryTransport(MemoryBroker(), _settings())
        p = Pipeline.from_spec("hooked_stages", _settings(), memory)
        assert [type(h).__name__ for h in p.hooks] == ["Recorder"]
        assert p.hooks[0] is sys.modules["hooked_stages"].HOOKS[0]
    finally:
        sys.modules.pop("hooked_stages", None)


def test_a_worker_tells_its_start_and_stop() -> None:
    rec = Recorder()
    broker = MemoryBroker()
    settings = _settings()
    pipeline = Pipeline.build(settings, [Quiet], MemoryTransport(broker, settings), hooks=[rec])
    pipeline.ensure_topics()
    worker = Worker(pipeline, worker_id="w1")
    worker.start()
    try:
        assert rec.heard[0] == ("worker_start", "w1", ("quiet",))
    finally:
        worker.stop()
        assert worker.join(30)
    assert rec.heard[-1] == ("worker_stop", "w1", ("quiet",))
    assert rec.names().count("worker_stop") == 1
    worker.join(1)
    assert rec.names().count("worker_stop") == 1, "told once"


# -- a hook's own failure ---------------------------------------------------------------------


class Raising(Hook):
    def on_succeeded(self, stage: StageInfo, record: Any, ctx: Any) -> None:
        raise RuntimeError("hook bug")

    def on_tick(self, stage: StageInfo, now: float) -> None:
        raise RuntimeError("tick bug")

    @contextmanager
    def around_handler(self, stage: StageInfo, event: Any, ctx: Any) -> Iterator[None]:
        raise RuntimeError("enter bug")
        yield  # pragma: no cover


class SwallowsOnExit(Hook):
    def around_handler(self, stage: StageInfo, event: Any, ctx: Any) -> Any:
        return _Swallow()


class _Swallow:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True  # would swallow a with-block's exception


def test_a_raising_hook_is_logged_once_and_the_events_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    with (
        caplog.at_level(logging.ERROR, logger="pipeline.hooks"),
        TestPipeline([Answer], _settings(), hooks=[Raising(), rec]) as t,
    ):
        for n in range(3):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key="k")
        t.run_until_idle()
        pongs = t.outputs(PONGS)
        stats = t.stats(Answer)
    assert sorted(p.ping_id for p in pongs) == ["p0", "p1", "p2"]
    assert len(rec.of("succeeded")) == 3, "the next hook still hears every event"
    assert stats.processed == 3
    logged = [r for r in caplog.records if "Raising.on_succeeded raised" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert any("Raising.around_handler raised" in r.getMessage() for r in caplog.records)


def test_a_hook_cannot_swallow_the_handlers_exception() -> None:
    with TestPipeline([Answer], _settings(), hooks=[SwallowsOnExit()]) as t:
        t.publish(PINGS, Ping(ping_id="poison", n=0), key="k")
        t.run_until_idle()
        assert len(t.dead_letters(Answer)) == 1


class SetsCurrent(Hook):
    @contextmanager
    def around_handler(self, stage: StageInfo, event: Any, ctx: Any) -> Iterator[None]:
        token = CURRENT.set(f"span:{ctx.coordinates}")
        try:
            yield
        finally:
            CURRENT.reset(token)


SEEN_CURRENT: list[str] = []


class AsyncSees(Stage):
    consumes = PINGS
    retry = NO_RETRIES
    concurrency = 4

    async def handle(self, event: Ping, ctx: Context) -> None:
        SEEN_CURRENT.append(CURRENT.get())


class TimedSyncSees(Stage):
    consumes = PINGS
    retry = NO_RETRIES
    timeout_s = 5.0  # runs on a handler thread

    def handle(self, event: Ping, ctx: Context) -> None:
        SEEN_CURRENT.append(CURRENT.get())


@pytest.mark.parametrize("stage", [AsyncSees, TimedSyncSees])
def test_around_handler_runs_where_the_handler_runs(stage: type[Stage]) -> None:
    """A context variable the hook sets (a tracing span) is the handler's, for an async
    handler on its task and for a sync one on its own thread."""
    SEEN_CURRENT.clear()
    with TestPipeline([stage], _settings(), hooks=[SetsCurrent()]) as t:
        sent = [t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}") for n in range(3)]
        t.run_until_idle()
    assert sorted(SEEN_CURRENT) == sorted(f"span:{_at(t, r)}" for r in sent)


def test_worker_info_names_the_stages() -> None:
    assert WorkerInfo("w", ("a", "b")).stages == ("a", "b")


def test_alert_hooks_are_resolved_once_like_the_others_and_guarded() -> None:
    from pipeline.alerts import Alert

    heard: list[tuple[str, str, str]] = []

    class Pager(Hook):
        def on_alert(self, stage: StageInfo, alert: Alert) -> None:
            heard.append(("alert", stage.name, alert.kind))

        def on_resolved(self, stage: StageInfo, alert: Alert) -> None:
            raise RuntimeError("pager down")

    assert Hooks(StageInfo("s", "g", "w"), [Hook()]).on_alert is None
    hooks = Hooks(StageInfo("s", "g", "w"), [Pager()])
    assert hooks.on_alert is not None and hooks.on_resolved is not None
    hooks.on_alert(Alert("waiting", 11, 10, 0))
    hooks.on_resolved(Alert("waiting", 1, 10, 0))  # logged, not raised
    assert heard == [("alert", "s", "waiting")]
