"""The pure parts of the 3-node failover scenario: the schedule of node kills, which node a kill
hits, when the cluster is whole again and when a stage has recovered. No broker."""

from __future__ import annotations

import json

import pytest

from chaos.cluster import PartitionState, busiest_leader, controller_from_states, under_replicated
from chaos.faults import NODE_KILLS, FaultPlan, Kind, counts, schedule
from chaos.recovery import recovered
from chaos.scenario import Options


def part(partition: int, leader: int, isr: tuple[int, ...] = (1, 2, 3)) -> PartitionState:
    return PartitionState("in", partition, leader, (1, 2, 3), isr)


# -- the schedule ---------------------------------------------------------------------------


def test_node_kills_leave_the_rest_of_a_seeds_schedule_as_it_was() -> None:
    """Old seeds keep reproducing the same worker faults: node kills draw after them."""
    base = FaultPlan(window_s=200, kills=10, sigterms=2, scale_cycles=1, broker_restarts=0)
    with_nodes = FaultPlan(
        window_s=200, kills=10, sigterms=2, scale_cycles=1, broker_restarts=0,
        leader_kills=3, controller_kills=1,
    )  # fmt: skip
    faults = schedule(with_nodes, seed=5)
    assert [f for f in faults if f.kind not in NODE_KILLS] == schedule(base, seed=5)
    assert counts(faults)[Kind.LEADER_KILL] == 3
    assert counts(faults)[Kind.CONTROLLER_KILL] == 1
    assert with_nodes.total == base.total + 4


@pytest.mark.parametrize("seed", range(20))
def test_node_kills_are_spread_one_per_slot_with_a_restart_delay(seed: int) -> None:
    plan = FaultPlan(window_s=100, kills=0, sigterms=0, scale_cycles=0, broker_restarts=0,
                     leader_kills=3, controller_kills=1)  # fmt: skip
    faults = schedule(plan, seed)
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    width = (92 - 8) / 4  # start_frac 0.08 .. end_frac 0.92 of 100 s, four slots
    for slot, fault in enumerate(faults):
        # the middle 40% of its own slot: at least 0.6 of a slot from the next kill
        assert 8 + (slot + 0.3) * width <= fault.at_s <= 8 + (slot + 0.7) * width
        assert 2.0 <= fault.restart_after_s <= 5.0
    assert faults == schedule(plan, seed)


def test_node_kills_need_three_nodes_and_default_to_three_leaders_and_one_controller() -> None:
    assert Options(nodes=3).node_kills == (3, 1)
    assert Options(nodes=3, leader_kills=5, controller_kills=0).node_kills == (5, 0)
    assert Options().node_kills == (0, 0)
    assert Options(nodes=3).replication == (3, 2)
    assert Options().replication == (1, None)
    with pytest.raises(ValueError, match="3-node"):
        Options(leader_kills=1)
    with pytest.raises(ValueError, match="1 or 3"):
        Options(nodes=2)


def test_on_three_nodes_the_node_kills_replace_the_single_broker_restart() -> None:
    from chaos.scenario import Scenario
    from pipeline.config import Settings

    def plan(options: Options) -> FaultPlan:
        return Scenario(options, 1, None, Settings(), "", "").fault_plan()  # type: ignore[arg-type]

    assert (plan(Options()).broker_restarts, plan(Options()).node_kills) == (1, 0)
    assert (plan(Options(nodes=3)).broker_restarts, plan(Options(nodes=3)).node_kills) == (0, 4)


# -- which node a kill hits -----------------------------------------------------------------


def test_the_busiest_leader_leads_the_most_records() -> None:
    parts = [part(0, 1), part(1, 1), part(2, 2), part(3, 3)]
    ends = {("in", 0): 10, ("in", 1): 10, ("in", 2): 50, ("in", 3): 5}
    assert busiest_leader(parts, ends) == 2  # one busy partition beats two quiet ones


def test_the_busiest_leader_ties_go_to_the_lower_id_and_leaderless_partitions_count_for_none() -> (
    None
):
    parts = [part(0, 3), part(1, 2), part(2, -1)]
    ends = {("in", 0): 7, ("in", 1): 7, ("in", 2): 1000}
    assert busiest_leader(parts, ends) == 2
    assert busiest_leader([part(0, -1)], {("in", 0): 5}) is None


def quorum_state(leader: int, epoch: int) -> str:
    return json.dumps({"leaderId": leader, "leaderEpoch": epoch, "votedId": -1})


def test_the_controller_is_the_leader_of_the_highest_epoch() -> None:
    """A killed node's file stays behind with the epoch it last saw."""
    states = [quorum_state(2, 1), quorum_state(3, 2), quorum_state(3, 2)]
    assert controller_from_states(states) == 3


def test_an_election_in_progress_and_unreadable_files_name_no_controller() -> None:
    assert controller_from_states([quorum_state(-1, 5), "{not json", "{}"]) is None
    assert controller_from_states([quorum_state(-1, 5), quorum_state(1, 4)]) == 1


def test_a_partition_is_under_replicated_until_every_replica_is_in_sync() -> None:
    healthy, shrunk, leaderless = part(0, 1), part(1, 1, (1, 2)), part(2, -1)
    assert under_replicated([healthy, shrunk, leaderless]) == [shrunk, leaderless]
    assert under_replicated([part(3, 2, (3, 2, 1))]) == []  # ISR order does not matter


# -- recovery -------------------------------------------------------------------------------


def test_a_stage_recovers_once_every_partition_passed_its_end_at_the_kill() -> None:
    at_kill = {0: 100, 1: 80}
    assert not recovered(at_kill, {0: 100, 1: 80})  # caught up, but nothing after the kill
    assert not recovered(at_kill, {0: 101, 1: 80})  # one partition still stuck
    assert recovered(at_kill, {0: 101, 1: 95})


def test_work_committed_just_after_the_kill_is_not_recovery() -> None:
    """Lag at the kill: commits of what was already fetched land, but cannot pass the end."""
    assert not recovered({0: 100}, {0: 60})
    assert not recovered({0: 100}, {0: 100})


def test_no_committed_offset_is_not_recovered() -> None:
    assert not recovered({0: 5}, {})
    assert not recovered({0: 5}, {0: -1001})


def test_once_the_load_is_over_catching_up_with_the_end_counts() -> None:
    """Nothing is published after the load, so "past the end at the kill" may never come."""
    assert not recovered({0: 100, 1: 50}, {0: 100, 1: 50}, ends_now={0: 120, 1: 50})
    assert recovered({0: 100, 1: 50}, {0: 120, 1: 50}, ends_now={0: 120, 1: 50})
    # an empty partition, no commit ever: caught up
    assert recovered({0: 0}, {0: -1001}, ends_now={0: 0})


def test_a_leader_kill_spares_the_controller_unless_it_leads_alone() -> None:
    """Leader kills and the controller kill stay separate faults."""
    parts = [part(0, 1), part(1, 1), part(2, 2)]
    ends = {("in", 0): 10, ("in", 1): 10, ("in", 2): 1}
    assert busiest_leader(parts, ends, avoid=1) == 2
    assert busiest_leader([part(0, 1)], {("in", 0): 3}, avoid=1) == 1
