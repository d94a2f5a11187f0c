"""The ``output_headers`` hook: what a subscriber contributes goes on every output of the event,
in place of the input's header of the same name; nobody listening costs nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pipeline import Context, RetryPolicy, Settings, Stage
from pipeline.hookcalls import Hooks
from pipeline.hooks import Hook, StageInfo
from pipeline.ports import RawRecord
from pipeline.testing import TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

INPUT_TRACE = b"00-11111111111111111111111111111111-2222222222222222-01"
OURS = b"00-11111111111111111111111111111111-3333333333333333-01"


class TwoPongs(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Ping, ctx: Context) -> None:
        for n in range(2):
            ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=n, handled_by="two"),
                     headers={"emitted": str(n)})  # fmt: skip


class Stamps(Hook):
    def __init__(self) -> None:
        self.asked: list[str] = []

    def output_headers(
        self, stage: StageInfo, record: RawRecord, ctx: Context
    ) -> list[tuple[str, bytes]]:
        self.asked.append(ctx.coordinates)
        return [("traceparent", OURS), ("stamped-by", stage.name.encode())]


class Raises(Hook):
    def output_headers(self, stage: StageInfo, record: RawRecord, ctx: Context) -> Any:
        raise RuntimeError("broken stamp")


def _headers(t: TestPipeline) -> list[list[tuple[str, bytes | None]]]:
    return [list(r.headers) for r in t.records(PONGS)]


def test_contributed_headers_replace_the_inputs_copy_on_every_output() -> None:
    stamps = Stamps()
    with TestPipeline([TwoPongs], Settings(schemas_dir=TEST_SCHEMAS), hooks=[stamps]) as t:
        t.publish(PINGS, Ping(ping_id="p", n=0), key="k", headers={"traceparent": INPUT_TRACE})
        t.run_until_idle()
        outputs = _headers(t)
    assert len(stamps.asked) == 1, "asked once per event, not once per output"
    assert len(outputs) == 2
    for n, headers in enumerate(outputs):
        assert [v for k, v in headers if k == "traceparent"] == [OURS]
        assert ("stamped-by", b"two_pongs") in headers
        assert headers[-1] == ("emitted", str(n).encode()), "emit's own headers come last"
        assert any(k == "correlation-id" for k, _ in headers), "the rest is still carried"


def test_without_a_listener_the_inputs_trace_headers_are_copied_and_nothing_is_resolved() -> None:
    assert Hooks(StageInfo("s", "g", "w"), [Hook()]).output_headers is None
    with TestPipeline([TwoPongs], Settings(schemas_dir=TEST_SCHEMAS)) as t:
        t.publish(PINGS, Ping(ping_id="p", n=0), key="k", headers={"traceparent": INPUT_TRACE})
        t.run_until_idle()
        outputs = _headers(t)
    assert all([v for k, v in h if k == "traceparent"] == [INPUT_TRACE] for h in outputs)


def test_a_raising_contributor_is_logged_and_the_others_still_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(schemas_dir=TEST_SCHEMAS)
    with (
        caplog.at_level(logging.ERROR, logger="pipeline.hooks"),
        TestPipeline([TwoPongs], settings, hooks=[Raises(), Stamps()]) as t,
    ):
        t.publish(PINGS, Ping(ping_id="p", n=0), key="k", headers={"traceparent": INPUT_TRACE})
        t.run_until_idle()
        outputs = _headers(t)
    assert all([v for k, v in h if k == "traceparent"] == [OURS] for h in outputs)
    assert any("Raises.output_headers raised" in r.getMessage() for r in caplog.records)
