"""`pipeline dlq` against a real broker: list, show, replay and purge a stage's dead letters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from pipeline import Context, Publisher, RetryPolicy, Stage
from pipeline.config import Settings
from tests.integration.app_stages import PINGS, Ping
from tests.integration.kit import (
    ROOT,
    end_offsets,
    running,
    settings_env,
    unique_settings,
    wait_until,
)

STAGES = "--stages=tests.integration.app_stages"
POISON = b"\x00\x00\x00\x00\x07not avro"


class Refuses(Stage):
    """Dead-letters every event at once: LookupError for ids starting 'missing', else ValueError."""

    consumes = PINGS
    group = "dlq-tool"
    retry = RetryPolicy(fatal=(LookupError, ValueError), tiers=())

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id.startswith("missing"):
            raise LookupError(f"no customer for {event.ping_id}")
        raise ValueError("cannot handle this")


class Fixed(Stage):
    """The fixed stage, deployed in the same group: remembers what it handled, with headers."""

    consumes = PINGS
    group = "dlq-tool"
    handled: list[tuple[str, dict[str, bytes]]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Fixed.handled.append((event.ping_id, dict(ctx.headers)))


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


def dead_lettered(settings: Settings) -> str:
    """Run Refuses over pings missing-1, missing-2 and bad-1 (in that order, keyed by id) and
    one poison record; return its DLQ topic once all four are there (and committed)."""
    with running(settings, [Refuses]) as worker, Publisher(settings) as publisher:
        for n, ping_id in enumerate(("missing-1", "missing-2", "bad-1")):
            publisher.publish(PINGS, Ping(ping_id=ping_id, n=n), key=ping_id)
        raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
        raw.produce(settings.topic(PINGS.name), POISON, b"poison", headers=[("origin", b"x")])
        assert raw.flush(10) == 0
        dlq = worker.runners[0].plan.dlq_topic
        wait_until(lambda: end_offsets(settings, dlq) == 4, 30, "four dead letters")
    return dlq


def test_list_counts_dead_letters_by_stage_and_exception_type(kafka_bootstrap: str) -> None:
    """`dlq list --json` counts this environment's dead letters per stage and exception type."""
    settings = unique_settings(kafka_bootstrap)
    dlq = dead_lettered(settings)
    result = cli(settings_env(settings), "dlq", "list", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    [entry] = data["topics"]  # other environments' DLQs (other prefixes) are not listed
    assert entry["topic"] == dlq and entry["total"] == data["total"] == 4
    assert {(c["stage"], c["exception_type"]): c["count"] for c in entry["causes"]} == {
        ("refuses", "builtins.LookupError"): 2,
        ("refuses", "builtins.ValueError"): 1,
        ("refuses", "pipeline.errors.BadMagicError"): 1,
    }


def test_show_decodes_the_events_and_previews_poison_bytes(kafka_bootstrap: str) -> None:
    """`dlq show` prints each dead letter's error and decoded event; a record that does not
    decode gets its decode error and a hex preview instead."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    dlq = dead_lettered(settings)
    result = cli(settings_env(settings), "dlq", "show", dlq, STAGES, "--traceback")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{dlq}[0]@0  key='missing-1'" in out
    assert "builtins.LookupError: no customer for missing-1" in out
    assert '"ping_id": "missing-1"' in out and '"ping_id": "bad-1"' in out
    assert 'raise LookupError(f"no customer for {event.ping_id}")' in out  # the traceback tail
    assert "undecoded  BadMagicError" in out
    assert "hex        00 00 00 00 07 6e 6f 74 20 61 76 72 6f" in out


def test_show_prints_only_the_records_asked_for(kafka_bootstrap: str) -> None:
    """--partition, --offset and --limit select records; nothing beyond them is printed."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    dlq = dead_lettered(settings)
    args = ["dlq", "show", dlq, STAGES, "--partition", "0", "--offset", "1", "--limit", "1"]
    result = cli(settings_env(settings), *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("── ") == 1
    assert f"{dlq}[0]@1" in result.stdout and '"ping_id": "missing-2"' in result.stdout
    assert "traceback" not in result.stdout


def test_replay_sends_matching_dead_letters_back_to_be_handled(kafka_bootstrap: str) -> None:
    """`dlq replay --error-type` republishes only the matching dead letters, without dlq-*
    headers and with replay-count=1, and the fixed stage handles them; the DLQ keeps its
    records."""
    settings = unique_settings(kafka_bootstrap)
    env, pings = settings_env(settings), settings.topic(PINGS.name)
    dlq = dead_lettered(settings)
    Fixed.handled.clear()
    with running(settings, [Fixed]):
        result = cli(env, "dlq", "replay", dlq, "--error-type", "LookupError")
        wait_until(lambda: len(Fixed.handled) >= 2, 30, "the replayed events to be handled")
    assert result.returncode == 0, result.stderr
    assert "matched=2 replayed=2 skipped=2 failed=0" in result.stdout
    assert sorted(ping_id for ping_id, _ in Fixed.handled) == ["missing-1", "missing-2"]
    for _, headers in Fixed.handled:
        assert not [name for name in headers if name.startswith("dlq-")]
        assert headers["replay-count"] == b"1"
        assert headers["replayed-from"].startswith(f"{dlq}[".encode())
    # The fixed deployment has retry topics: the replay entered through the first one, so
    # the input topic did not grow (the other two were not replayed at all).
    assert end_offsets(settings, pings) == 4
    assert end_offsets(settings, settings.topic("dlq-tool.retry.1s")) == 2
    assert end_offsets(settings, dlq) == 4


class Recovering(Stage):
    """Dead-letters everything until ``fixed`` is set; uses retry topics, so a replay can
    enter through them."""

    consumes = PINGS
    group = "dlq-recovering"
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,), fatal=(ValueError,))
    fixed = False
    handled: list[str] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        if not Recovering.fixed:
            raise ValueError("bug")
        Recovering.handled.append(event.ping_id)


class Bystander(Stage):
    """Another group on the same input: it must not see replays meant for Recovering."""

    consumes = PINGS
    group = "dlq-bystander"
    handled: list[str] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Bystander.handled.append(event.ping_id)


def test_replay_reaches_only_the_failing_stage_through_its_retry_topic(
    kafka_bootstrap: str,
) -> None:
    """A stage with retry topics gets its replayed dead letters through its first retry topic:
    it handles them once fixed, while a fan-out peer on the same input is not disturbed and the
    input topic does not grow."""
    Recovering.fixed, Recovering.handled, Bystander.handled = False, [], []
    settings = unique_settings(kafka_bootstrap)
    pings = settings.topic(PINGS.name)
    with running(settings, [Recovering, Bystander]) as worker, Publisher(settings) as publisher:
        for n in range(3):
            publisher.publish(PINGS, Ping(ping_id=f"r{n}", n=n))
        dlq = worker.runners[0].plan.dlq_topic
        wait_until(lambda: end_offsets(settings, dlq) == 3, 30, "three dead letters")
        wait_until(lambda: len(Bystander.handled) == 3, 30, "the peer to see the originals")
        Recovering.fixed = True
        result = cli(settings_env(settings), "dlq", "replay", dlq)
        wait_until(lambda: len(Recovering.handled) == 3, 30, "the replayed events")
        replayed_via = worker.runners[0].plan.retry_topics[0]
    assert result.returncode == 0, result.stderr
    assert sorted(Recovering.handled) == ["r0", "r1", "r2"]
    assert sorted(Bystander.handled) == ["r0", "r1", "r2"], "the peer saw the replay"
    assert end_offsets(settings, pings) == 3
    assert end_offsets(settings, replayed_via) == 3


def test_replay_dry_run_reports_matches_and_sends_nothing(kafka_bootstrap: str) -> None:
    """--dry-run names what would be replayed and leaves the original topic untouched."""
    settings = unique_settings(kafka_bootstrap)
    dlq = dead_lettered(settings)
    result = cli(
        settings_env(settings), "dlq", "replay", dlq, "--error-type", "ValueError", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert "matched=1 replayed=0 skipped=3 failed=0" in result.stdout
    assert result.stdout.count("would replay ") == 1
    assert end_offsets(settings, settings.topic(PINGS.name)) == 4


def test_purge_empties_the_dlq(kafka_bootstrap: str) -> None:
    """`dlq purge --yes` deletes every record the DLQ holds and says how many."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings)
    dlq = dead_lettered(settings)
    result = cli(env, "dlq", "purge", dlq, "--yes")
    assert result.returncode == 0, result.stderr
    assert f"removed 4 record(s) from {dlq}" in result.stdout
    listed = json.loads(cli(env, "dlq", "list", "--json").stdout)
    assert listed["total"] == 0


def test_purge_asks_first_and_a_no_deletes_nothing(kafka_bootstrap: str) -> None:
    """Without --yes, purge asks; answering no exits non-zero with every record still there."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings)
    dlq = dead_lettered(settings)
    result = cli(env, "dlq", "purge", dlq, stdin="n\n")
    assert result.returncode == 1
    assert "Delete 4 record(s)" in result.stdout
    assert json.loads(cli(env, "dlq", "list", "--json").stdout)["total"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "test.pings"], "is not a dead-letter topic"),
        (["purge", "nobody.dlq", "--yes"], "dead-letter topic 'nobody.dlq' does not exist"),
        (["replay", "nobody.dlq", "--since", "last tuesday"], "--since: 'last tuesday'"),
    ],
)
def test_bad_operator_input_exits_2_with_one_clear_line(
    kafka_bootstrap: str, args: list[str], message: str
) -> None:
    """A topic that is not a DLQ or does not exist, or a time that is not ISO 8601, exits 2."""
    settings = unique_settings(kafka_bootstrap)
    result = cli(settings_env(settings), "dlq", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
