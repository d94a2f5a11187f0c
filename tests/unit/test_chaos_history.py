"""The chaos checker turns a recorded history into figures; fed synthetic histories here, no
broker. Also the pure parts it relies on: the fault schedule and the load plan."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from chaos.broker import PrivateBroker
from chaos.faults import FaultPlan, Kind, counts, schedule
from chaos.history import (
    History,
    Published,
    SideEffect,
    check,
    missing_runs,
    order_violations,
    passed,
)
from chaos.load import Poison, plan_load


def pub(eid: str, key: str = "k1", seq: int = 0, *, poison: bool = False) -> Published:
    return Published(
        eid, key, -1 if poison else seq, partition=0, offset=int(eid[1:]), poison=poison
    )


def row(rank: int, eid: str, key: str = "k1", seq: int = 0, *, retry: bool = False) -> SideEffect:
    return SideEffect(rank, eid, key, seq, pid=1, via_retry=retry)


def history(
    published: Sequence[Published],
    side_effects: Sequence[SideEffect],
    *,
    deliveries: Sequence[str] | None = None,
    dlq: Sequence[str] = (),
    eos: Sequence[str] | None = None,
    eos_dlq: Sequence[str] | None = None,
) -> History:
    good = [p.eid for p in published if not p.poison]
    return History(
        published=published,
        side_effects=side_effects,
        deliveries=[r.event_id for r in side_effects] if deliveries is None else deliveries,
        dlq=dlq,
        eos_outputs=good if eos is None else eos,
        eos_dlq=list(dlq) if eos_dlq is None else eos_dlq,
    )


def clean_run() -> History:
    published = [pub("e1", seq=0), pub("e2", seq=1), pub("e3", poison=True)]
    return history(published, [row(1, "e1", seq=0), row(2, "e2", seq=1)], dlq=["e3"])


def test_a_clean_history_has_nothing_to_report_and_passes() -> None:
    figures = check(clean_run())
    assert (figures.published, figures.poison, figures.processed, figures.lost) == (3, 1, 2, 0)
    assert figures.duplicate_deliveries == figures.duplicate_side_effects == 0
    assert figures.dlq_equals_poison and figures.eos_dlq_equals_poison
    assert figures.order_violations == figures.eos_duplicate_outputs == 0
    assert figures.eos_missing_outputs == 0
    assert figures.samples == {}
    assert passed(figures, sigterms_clean=True, published_all=True)


def test_a_good_event_without_a_side_effect_is_lost_and_named_with_its_coordinates() -> None:
    published = [pub("e1", seq=0), pub("e2", seq=1)]
    figures = check(history(published, [row(1, "e1", seq=0)]))
    assert (figures.processed, figures.lost) == (1, 1)
    assert figures.samples["lost"] == ["e2 (k1 seq 1 @ partition 0 offset 2)"]
    assert not passed(figures, sigterms_clean=True, published_all=True)


def test_redeliveries_count_as_duplicate_deliveries_but_not_as_duplicate_effects() -> None:
    run = clean_run()
    figures = check(
        history(run.published, run.side_effects, deliveries=["e1", "e1", "e1", "e2"], dlq=["e3"])
    )
    assert (figures.duplicate_deliveries, figures.redelivered_events) == (2, 1)
    assert figures.duplicate_side_effects == 0
    assert passed(figures, sigterms_clean=True, published_all=True)


def test_a_second_side_effect_row_for_one_id_is_a_duplicate_and_fails_the_run() -> None:
    published = [pub("e1")]
    figures = check(history(published, [row(1, "e1"), row(5, "e1"), row(6, "e1")]))
    assert figures.duplicate_side_effects == 2
    assert figures.processed == 1
    assert figures.samples["duplicate_side_effects"] == ["e1 x3"]
    assert not passed(figures, sigterms_clean=True, published_all=True)


def test_side_effects_of_poison_or_unknown_ids_are_strays() -> None:
    published = [pub("e1"), pub("e2", poison=True)]
    figures = check(history(published, [row(1, "e1"), row(2, "e2"), row(3, "x9")], dlq=["e2"]))
    assert figures.stray_side_effects == 2


def test_the_dlq_must_hold_exactly_the_poison_set_duplicates_allowed() -> None:
    published = [pub("e1"), pub("e2", poison=True), pub("e3", poison=True)]
    effects = [row(1, "e1")]
    twice = check(history(published, effects, dlq=["e2", "e3", "e3"]))
    assert twice.dlq_equals_poison and twice.dlq_records == 3
    missing = check(history(published, effects, dlq=["e2"]))
    assert not missing.dlq_equals_poison and missing.dlq_missing == 1
    extra = check(history(published, effects, dlq=["e1", "e2", "e3"]))
    assert not extra.dlq_equals_poison and extra.dlq_unexpected == 1
    assert not passed(extra, sigterms_clean=True, published_all=True)


def test_exactly_once_outputs_are_counted_per_input() -> None:
    published = [pub("e1", seq=0), pub("e2", seq=1), pub("e3", seq=2)]
    effects = [row(1, "e1", seq=0), row(2, "e2", seq=1), row(3, "e3", seq=2)]
    figures = check(history(published, effects, eos=["e1", "e1", "e2", "zz"]))
    assert figures.eos_duplicate_outputs == 1
    assert figures.eos_missing_outputs == 1
    assert figures.eos_unexpected_outputs == 1
    assert figures.samples["eos_missing_outputs"] == ["partition 0 @3: 1 event(s) (e3)"]
    assert not passed(figures, sigterms_clean=True, published_all=True)


def test_an_unclean_sigterm_or_an_incomplete_load_fails_an_otherwise_clean_run() -> None:
    figures = check(clean_run())
    assert not passed(figures, sigterms_clean=False, published_all=True)
    assert not passed(figures, sigterms_clean=True, published_all=False)


def test_missing_outputs_are_named_as_runs_of_input_coordinates_per_partition() -> None:
    """The report says where outputs are missing: consecutive good events of a partition
    without an output form one run (poison between them does not split it, a present output
    does), so an early-stopping reader shows as one run at the end of a partition."""

    def at(eid: str, partition: int, offset: int, *, poison: bool = False) -> Published:
        return Published(eid, "k", -1 if poison else 0, partition, offset, poison=poison)

    good = [
        at("e10", 1, 0), at("e11", 1, 1), at("e12", 1, 3), at("e13", 1, 4),  # 2 poison: away
        at("e20", 0, 7), at("e21", 0, 9), at("e22", 0, 12),
    ]  # fmt: skip
    runs = missing_runs(good, {"e10", "e13", "e21"})
    assert [str(r) for r in runs] == [
        "partition 0 @7: 1 event(s) (e20)",
        "partition 0 @12: 1 event(s) (e22)",
        "partition 1 @1..3: 2 event(s) (e11..e12)",
    ]
    published = [*good, at("p1", 1, 2, poison=True)]
    figures = check(history(published, [], eos=["e10", "e13", "e21"]))
    assert figures.eos_missing_outputs == 4
    assert figures.samples["eos_missing_outputs"] == [str(r) for r in runs]


def test_a_run_whose_topics_were_not_read_back_completely_fails() -> None:
    """A partial read proves nothing: the verdict fails even when the figures are clean."""
    figures = check(clean_run())
    assert passed(figures, sigterms_clean=True, published_all=True, reads_complete=True)
    assert not passed(figures, sigterms_clean=True, published_all=True, reads_complete=False)


def test_an_effect_of_seq_n_plus_1_committed_before_that_of_n_is_an_order_violation() -> None:
    effects = [row(1, "e1", seq=0), row(2, "e3", seq=2), row(3, "e2", seq=1)]
    violations, by_retry = order_violations(effects)
    assert violations == [("k1", 1)]
    assert by_retry == 0


def test_only_the_first_row_of_an_event_counts_for_order() -> None:
    # e1 is written again after e2 (a duplicate, counted elsewhere): not a reordering.
    effects = [row(1, "e1", seq=0), row(2, "e2", seq=1), row(3, "e1", seq=0)]
    assert order_violations(effects) == ([], 0)


def test_an_inversion_through_a_retry_topic_is_counted_apart_not_as_a_violation() -> None:
    effects = [row(1, "e2", seq=1), row(2, "e1", seq=0, retry=True)]
    assert order_violations(effects) == ([], 1)


def test_order_is_per_key_and_gaps_are_not_compared() -> None:
    effects = [
        row(1, "b0", key="kb", seq=0),
        row(2, "a0", key="ka", seq=0),
        row(3, "a2", key="ka", seq=2),  # seq 1 of ka has no effect (lost): no pair to compare
        row(4, "b1", key="kb", seq=1),
    ]
    assert order_violations(effects) == ([], 0)


def test_the_schedule_is_reproducible_inside_the_window_and_complete() -> None:
    plan = FaultPlan(window_s=100, kills=20, sigterms=4, scale_cycles=2, broker_restarts=1)
    faults = schedule(plan, seed=42)
    assert faults == schedule(plan, seed=42)
    assert faults != schedule(plan, seed=43)
    assert all(8 <= f.at_s <= 92 for f in faults)
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert counts(faults) == {
        Kind.KILL: 20,
        Kind.TERM: 4,
        Kind.SCALE_UP: 2,
        Kind.SCALE_DOWN: 2,
        Kind.BROKER_RESTART: 1,
    }


@pytest.mark.parametrize("seed", range(20))
def test_scaling_alternates_up_and_down_and_the_broker_restarts_mid_schedule(seed: int) -> None:
    plan = FaultPlan(window_s=60, kills=5, sigterms=1, scale_cycles=2, broker_restarts=1)
    faults = schedule(plan, seed)
    scale = [f.kind for f in faults if f.kind in (Kind.SCALE_UP, Kind.SCALE_DOWN)]
    assert scale == [Kind.SCALE_UP, Kind.SCALE_DOWN] * 2
    assert all(1 <= f.workers <= 2 for f in faults if f.kind is Kind.SCALE_UP)
    [restart] = [i for i, f in enumerate(faults) if f.kind is Kind.BROKER_RESTART]
    assert len(faults) // 3 <= restart <= (2 * len(faults)) // 3
    assert all(0.5 <= f.restart_after_s <= 3.0 for f in faults if f.kind is Kind.KILL)


def test_a_plan_that_cannot_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        FaultPlan(window_s=10, base_workers=3, max_workers=3, scale_cycles=1)


def test_the_load_numbers_each_key_in_order_and_poisons_the_requested_share() -> None:
    plan = plan_load(events=2000, keys=7, poison_ratio=0.01, seed=3)
    assert plan == plan_load(events=2000, keys=7, poison_ratio=0.01, seed=3)
    assert len({e.eid for e in plan}) == 2000
    poison = [e for e in plan if e.poison is not None]
    assert len(poison) == 20 and all(e.seq == -1 for e in poison)
    assert {e.poison for e in poison} <= set(Poison)
    for key in {e.key for e in plan}:
        assert [e.seq for e in plan if e.key == key and e.poison is None] == list(
            range(sum(1 for e in plan if e.key == key and e.poison is None))
        )


def test_a_private_broker_keeps_each_nodes_server_log_in_the_run_dir(tmp_path: Path) -> None:
    """The next run wipes the broker's home: a run's own broker logs (its transaction
    coordinator's aborts of killed workers' transactions) stay with the run."""
    broker = PrivateBroker(tmp_path / "home", 19999, nodes=3)  # never started
    for node in broker.layout.nodes:
        node.server_log.parent.mkdir(parents=True, exist_ok=True)
        node.server_log.write_text(f"node {node.node_id}\n")
    broker.keep_logs(tmp_path / "run")
    kept = sorted((tmp_path / "run" / "broker").iterdir())
    assert [p.name for p in kept] == ["node-1.log", "node-2.log", "node-3.log"]
    assert kept[2].read_text() == "node 3\n"
