"""Priority lanes as declared and planned, and the share book that keeps lower lanes from
starving: pure logic, no broker, no clock."""

from __future__ import annotations

import pytest

from pipeline import Context, DeclarationError, Lanes, Settings, Stage, Topic
from pipeline.app import load_catalog
from pipeline.lanes import ShareBook, lane_group, lane_topic
from pipeline.registry import plan
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PONGS, Ping

SETTINGS = Settings(schemas_dir=TEST_SCHEMAS, topic_prefix="dev.")
LANED = Topic("test.pings", Ping, priorities=3)
NAMED = Topic("test.pings", Ping, priorities=("urgent", "normal", "bulk"))


class Reader(Stage):
    consumes = LANED
    emits = (PONGS,)
    group = "reader"

    def handle(self, event: Ping, ctx: Context) -> None: ...


def test_lane_0_is_the_topic_itself_and_lane_k_its_p_k_topic_and_group() -> None:
    """Producers that know nothing of lanes write lane 0, the highest."""
    assert [lane_topic("emails", k) for k in range(3)] == ["emails", "emails.p1", "emails.p2"]
    assert [lane_group("g", k) for k in range(3)] == ["g", "g.p1", "g.p2"]


def test_a_priority_is_an_index_0_highest_or_a_level_name() -> None:
    """None and 0 are lane 0; a name is its position; anything else is refused in one line."""
    assert [LANED.lane(p) for p in (None, 0, 1, 2)] == [0, 0, 1, 2]
    assert [NAMED.lane(p) for p in ("urgent", "normal", "bulk", 2)] == [0, 1, 2, 2]
    for bad in (3, -1, "nope", True):
        with pytest.raises(ValueError, match="no priority"):
            NAMED.lane(bad)
    with pytest.raises(ValueError, match="0 only"):
        PONGS.lane(1)
    assert PONGS.lane(None) == 0 and PONGS.lanes == 1


@pytest.mark.parametrize("bad", [0, 9, 2.5, ("a", "a"), ("ok", "not ok"), (), "abc"])
def test_a_bad_priorities_declaration_is_one_clear_error(bad: object) -> None:
    with pytest.raises(DeclarationError, match="priorities"):
        Topic("t", Ping, priorities=bad)  # type: ignore[arg-type]


def test_the_plan_reads_each_lane_in_its_own_group_after_the_retry_topics() -> None:
    """Lane topics are inputs (same binding), created with the stage's topics, and each lane's
    consumer group is the stage's group with .p<k>."""
    [p] = plan([Reader], load_catalog(SETTINGS), SETTINGS)
    assert p.lanes == (("dev.test.pings.p1",), ("dev.test.pings.p2",))
    assert list(p.inputs) == ["dev.test.pings", "dev.test.pings.p1", "dev.test.pings.p2"]
    assert {"dev.test.pings.p1", "dev.test.pings.p2"} <= set(p.topics)
    assert p.readers == [
        ("dev.reader.retry", list(p.retry_topics)),
        ("dev.reader", ["dev.test.pings"]),
        ("dev.reader.p1", ["dev.test.pings.p1"]),
        ("dev.reader.p2", ["dev.test.pings.p2"]),
    ]


def test_a_stage_emitting_to_a_laned_topic_gets_its_lane_topics_created() -> None:
    class Fan(Stage):
        consumes = PONGS
        emits = (LANED,)

        def handle(self, event: object, ctx: Context) -> None: ...

    [p] = plan([Fan], load_catalog(SETTINGS), SETTINGS)
    assert {"dev.test.pings.p1", "dev.test.pings.p2"} <= set(p.topics)
    assert p.lanes == ()


def test_a_topic_declared_with_two_sets_of_priorities_is_refused_at_plan() -> None:
    class Other(Stage):
        consumes = Topic("test.pings", Ping, priorities=2)
        group = "other"

        def handle(self, event: Ping, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError, match="two sets of priorities"):
        plan([Reader, Other], load_catalog(SETTINGS), SETTINGS)


def test_exactly_once_cannot_read_lanes() -> None:
    """One transaction commits one consumer's offsets, and each lane has a consumer."""
    with pytest.raises(DeclarationError, match="exactly_once"):

        class Eos(Stage):
            consumes = LANED
            guarantee = "exactly_once"

            def handle(self, event: Ping, ctx: Context) -> None: ...


@pytest.mark.parametrize(
    ("share", "match"),
    [(1.0, r"in \[0, 1\)"), (-0.1, r"in \[0, 1\)"), ((0.1,), "1 shares for 2"), (0.5, "sum")],
)
def test_shares_must_leave_room_for_lane_0(share: object, match: str) -> None:
    with pytest.raises(DeclarationError, match=match):

        class Greedy(Stage):
            consumes = LANED
            lanes = Lanes(min_share=share)  # type: ignore[arg-type]

            def handle(self, event: Ping, ctx: Context) -> None: ...


def test_the_default_guarantees_each_lower_lane_ten_percent() -> None:
    assert Lanes().shares(3) == (0.0, 0.1, 0.1)
    assert Lanes(min_share=(0.2, 0.05)).shares(3) == (0.0, 0.2, 0.05)
    assert Lanes(min_share=0).shares(2) == (0.0, 0.0)


def fetches(book: ShareBook, room: int, backlog: list[int], rounds: int) -> list[int]:
    """What each lane gets over ``rounds`` fetches of ``room``, taking as ConsumerSet does:
    owed first, then highest lane first; ``backlog`` (-1: endless) shrinks as taken."""
    total = [0] * len(backlog)
    for _ in range(rounds):
        asked, taken, left = [0] * len(backlog), [0] * len(backlog), room
        for passes in (book.owed(room), None):
            for lane in range(len(backlog)):
                want = passes[lane] if passes is not None else left
                if not want or left <= 0:
                    continue
                n = want if backlog[lane] < 0 else min(want, backlog[lane])
                asked[lane] += want
                taken[lane] += n
                left -= n
                if backlog[lane] > 0:
                    backlog[lane] -= n
        book.record(room, asked, taken, room - left)
        total = [t + n for t, n in zip(total, taken, strict=True)]
    return total


def test_a_backlogged_low_lane_gets_its_share_under_a_busy_high_lane() -> None:
    """Lane 0 and lane 2 endless: lane 2 gets 10 % of what is taken, lane 1 (empty) nothing."""
    total = fetches(ShareBook((0.0, 0.1, 0.1)), room=500, backlog=[-1, 0, -1], rounds=100)
    assert sum(total) == 50_000
    assert total[2] == pytest.approx(5_000, rel=0.02)
    assert total[1] == 0


def test_the_share_holds_one_record_at_a_time() -> None:
    """A concurrent stage asks for its free slots only, often one: the credit adds up over
    fetches, so one fetch in ten goes to the low lane."""
    total = fetches(ShareBook((0.0, 0.1)), room=1, backlog=[-1, -1], rounds=1000)
    assert total[1] == pytest.approx(100, abs=2)


def test_an_idle_high_lane_leaves_everything_to_the_low_one() -> None:
    total = fetches(ShareBook((0.0, 0.1)), room=500, backlog=[0, -1], rounds=10)
    assert total == [0, 5000]


def test_an_idle_lane_banks_no_credit_and_never_bursts_in() -> None:
    """A lane that came back short has no backlog: its credit goes, and is capped at its
    share of one batch anyway, so paying it back never takes a whole batch."""
    book = ShareBook((0.0, 0.1))
    book.record(500, asked=[500, 0], taken=[500, 0], total=500)
    assert book.credit == (0.0, 50.0)
    book.record(500, asked=[500, 0], taken=[500, 0], total=500)
    assert book.credit == (0.0, 50.0), "capped at 10 % of one batch"
    book.record(500, asked=[450, 50], taken=[450, 3], total=453)
    assert book.credit == (0.0, 0.0), "it had 3 of the 50 it was owed: nothing banked"


def test_strict_priority_starves_a_lower_lane_when_asked_to() -> None:
    total = fetches(ShareBook((0.0, 0.0)), room=500, backlog=[-1, -1], rounds=10)
    assert total == [5000, 0]
