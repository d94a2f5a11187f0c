"""``python -m chaos.runner``: one chaos run, end to end.

1. broker: a private one (restarted mid-run) unless ``--bootstrap``/``KAFKA_BOOTSTRAP_SERVERS``;
   ``--nodes 3``: a private 3-node cluster whose nodes are killed (``chaos.failover``);
2. topics (12 partitions, unique prefix; on 3 nodes replication 3 and min ISR 2, checked) and
   the side-effect table;
3. the base workers, awaited until both groups hold partitions;
4. the load (a publisher thread at ``--rate``) and, over the same window, the fault schedule;
5. drain: lag 0 everywhere and the DLQs stable, then SIGTERM to every worker;
6. read the history back, check it (``chaos.history``), print the table and the JSON line.

Exit status: 0 when the run passed, 1 when an invariant failed, 2 when the run could not be
carried out (no broker, workers that never joined, a load that could not be published).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chaos import broker as brokers
from chaos import effects, forensics, observe, readback
from chaos.cluster import ClusterView
from chaos.failover import Failover, Watch
from chaos.faults import schedule
from chaos.history import History, Published, check, passed
from chaos.inject import FaultLog, Injector
from chaos.load import ID_HEADER, Acked, Loader, PlannedEvent, plan_load
from chaos.report import RunFacts, clean, json_line, render, summary
from chaos.scenario import Options, Scenario, build
from chaos.stages import COPIES, STAGES, Copy, Effects, EosCopy, Work
from chaos.workers import ROOT, WorkerPool
from pipeline.app import Pipeline
from pipeline.kafka.schema_topic import TOPIC as SCHEMAS_TOPIC

log = logging.getLogger("chaos.runner")
JOIN_TIMEOUT_S = 120.0
DRAIN_STABLE_S = 6.0  # longer than the longest retry tier (5 s)
DRAIN_STALL_S = 25.0  # longer than a session timeout (10 s) plus a rebalance
TERM_WAIT_S = 25.0  # SIGKILL after this; "clean" still means exit 0 within the shutdown timeout


class RunAborted(Exception):
    """The run could not be carried out; nothing was proven either way."""


@dataclass
class Run:
    scenario: Scenario
    pipeline: Pipeline
    pool: WorkerPool
    broker: brokers.Broker
    injector: Injector
    began: float
    failover: Failover | None  # on the private 3-node cluster
    record: FaultLog = field(init=False)

    def __post_init__(self) -> None:
        self.record = self.injector.record


def run(options: Options) -> int:
    began = time.monotonic()
    home = (options.broker_home or ROOT / ".chaos" / "kafka").resolve()
    if options.nodes > 1 and (options.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        raise RunAborted(
            "--nodes 3 kills nodes of a private cluster: drop --bootstrap and unset "
            "KAFKA_BOOTSTRAP_SERVERS"
        )
    broker = brokers.choose(
        options.bootstrap, home, options.broker_port, nodes=options.nodes, keep=options.keep_broker
    )
    try:
        scenario = build(options, broker.bootstrap)
        log.info(
            "run dir %s, seed %d, broker %s (%s), store %s",
            scenario.run_dir,
            scenario.seed,
            broker.bootstrap,
            broker.kind,
            scenario.store,
        )
        pipeline = Pipeline.build(scenario.settings, STAGES)
        pipeline.ensure_topics()
        effects.create_table(scenario.store_url, scenario.effects_table)
        pool = WorkerPool(scenario.worker_env(), scenario.run_dir / "logs")
        record = FaultLog()

        def note(text: str) -> None:  # on the injector's clock (seconds after the load began)
            record.note(injector.now_s(), text)

        failover = _failover(scenario, pipeline, broker, note)
        injector = Injector(pool, broker, options.workers, TERM_WAIT_S, record, failover)
        try:
            state = Run(scenario, pipeline, pool, broker, injector, began, failover)
            return _execute(state)
        finally:
            pool.kill_all()
            if isinstance(broker, brokers.PrivateBroker):
                broker.keep_logs(scenario.run_dir)
    finally:
        broker.close()


def _failover(
    s: Scenario,
    pipeline: Pipeline,
    broker: brokers.Broker,
    note: Callable[[str], None],
) -> Failover | None:
    """On the private 3-node cluster: check that every topic of the run has replication 3 and
    min ISR 2 (else the run would prove nothing), and set up the node kills."""
    if not isinstance(broker, brokers.PrivateBroker) or broker.nodes < 3:
        return None
    topics = (*pipeline.topics(), s.topic(SCHEMAS_TOPIC))
    groups = {"effects": s.group(Effects), "eos-copy": s.group(EosCopy)}
    watch = Watch(topics, s.input_topic, groups)
    failover = Failover(broker, ClusterView(broker.layout), watch, note)
    _check_replication(s, failover, internal=False)
    return failover


def _check_replication(s: Scenario, failover: Failover, *, internal: bool) -> None:
    replicas, min_isr = s.options.replication
    problems = failover.replication_problems(replicas, min_isr or 1, internal=internal)
    if problems:
        raise RunAborted(f"topics not replicated as asked: {'; '.join(problems)}")
    which = "internal offsets and transaction topics" if internal else "the run's topics"
    log.info("%s: replication %d, min ISR %s", which, replicas, min_isr)


def _execute(r: Run) -> int:
    o = r.scenario.options
    for _ in range(o.workers):
        r.pool.start()
    _await_joined(r)
    if r.failover is not None:
        _check_replication(r.scenario, r.failover, internal=True)
    plan = plan_load(o.events, o.keys, o.poison_ratio, r.scenario.seed)
    fingerprint = r.pipeline.catalog.bind(Work).fingerprint
    loader = Loader(r.scenario.settings, plan, o.rate, fingerprint)
    faults = schedule(r.scenario.fault_plan(), r.scenario.seed)
    if r.failover is not None:  # recovery after the load: catching up is what is left
        r.failover.load_done = lambda: not loader.is_alive()
    loader.start()
    r.injector.run(faults, time.monotonic())
    while loader.is_alive():
        r.injector.supervise()
        loader.join(0.5)
    if loader.error is not None or loader.failed:
        raise RunAborted(f"load not fully published: {loader.error or loader.failed[:3]}")
    r.record.note(r.injector.now_s(), f"load published ({len(loader.acked)} acked); draining")
    drained = _drain(r)
    r.record.exits += r.pool.terminate_all(r.pool.live(), "final", TERM_WAIT_S)
    r.record.note(r.injector.now_s(), "all workers stopped")
    behind = _behind(r)
    published = _published(plan, loader.acked)
    history, unread = _collect(r, published)
    (r.scenario.run_dir / "faults.log").write_text("\n".join(r.record.timeline) + "\n")
    return _report(r, history, drained, behind, unread, published_all=len(published) == len(plan))


def _await_joined(r: Run) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    groups = [r.scenario.group(Effects), r.scenario.group(EosCopy)]
    while time.monotonic() < deadline:
        r.injector.supervise()
        counts = [observe.members_with_partitions(r.scenario.settings, g) for g in groups]
        if all(n >= r.scenario.options.workers for n in counts):
            return
        time.sleep(0.5)
    raise RunAborted(f"workers did not join both groups within {JOIN_TIMEOUT_S:.0f}s")


def _lag_checks(s: Scenario) -> list[observe.LagCheck]:
    effects_group, eos_group = s.group(Effects), s.group(EosCopy)
    return [
        observe.LagCheck("effects", effects_group, (s.input_topic,)),
        observe.LagCheck("effects.retry", effects_group + ".retry", s.retry_topics(Effects)),
        observe.LagCheck("eos-copy", eos_group, (s.input_topic,)),
        observe.LagCheck("eos-copy.retry", eos_group, s.retry_topics(EosCopy), True),
    ]


def _drain(r: Run) -> observe.DrainResult:
    s = r.scenario
    result = observe.drain(
        s.settings,
        _lag_checks(s),
        (s.dlq(Effects), s.dlq(EosCopy)),
        timeout_s=s.options.drain_timeout_s,
        stable_s=DRAIN_STABLE_S,
        stall_s=DRAIN_STALL_S,
        tick=r.injector.supervise,
        progress=lambda: effects.count_rows(s.store_url, s.effects_table),
    )
    state = "drained" if result.drained else ("STALLED" if result.stalled else "NOT drained")
    r.record.note(r.injector.now_s(), f"{state} after {result.seconds:.1f}s: {result.lags}")
    return result


def _behind(r: Run) -> list[observe.Behind]:
    """After the final stop (every worker committed on its way out): what is still behind."""
    behind = [
        b
        for c in _lag_checks(r.scenario)
        for b in observe.partitions_behind(r.scenario.settings, c)
    ]
    for b in behind:
        r.record.note(r.injector.now_s(), f"still behind after the final stop: {b}")
    return behind


def _published(plan: list[PlannedEvent], acked: list[Acked]) -> list[Published]:
    by_id = {e.eid: e for e in plan}
    return [
        Published(
            a.eid,
            by_id[a.eid].key,
            by_id[a.eid].seq,
            a.partition,
            a.offset,
            poison=by_id[a.eid].poison is not None,
        )
        for a in acked
    ]


def _collect(r: Run, published: list[Published]) -> tuple[History, list[str]]:
    """The history, and what could not be read back (a topic read that ran out of time)."""
    scenario = r.scenario
    by_header = readback.header(ID_HEADER)
    reads = [
        _read(r, scenario.dlq(Effects), by_header),
        _read(r, scenario.topic(COPIES.name), _copy_id(r.pipeline)),
        _read(r, scenario.dlq(EosCopy), by_header),
    ]
    history = History(
        published=published,
        side_effects=effects.read_side_effects(scenario.store_url, scenario.effects_table),
        deliveries=effects.read_deliveries(scenario.run_dir / "deliveries"),
        dlq=reads[0].values,
        eos_outputs=reads[1].values,
        eos_dlq=reads[2].values,
    )
    return history, [problem for read in reads for problem in read.problems()]


def _copy_id(pipeline: Pipeline) -> Callable[[Any], str | None]:
    binding = pipeline.catalog.bind(Copy)

    def copy_id(msg: Any) -> str:
        event: Copy = pipeline.codec.decode(msg.value(), binding)
        return event.eid

    return copy_id


def _read(r: Run, topic: str, extract: Callable[[Any], str | None]) -> readback.TopicRead:
    """A complete read_committed read of ``topic``; time spent waiting for transactions still
    open (a killed worker's, until the broker aborts it) goes into the timeline."""
    read = readback.read_topic(r.scenario.settings, topic, extract)
    if read.held:
        held = ", ".join(f"[{p}] LSO {lso} < high {high}" for p, (lso, high) in read.held.items())
        r.record.note(r.injector.now_s(), f"read back {topic}: waited {read.waited_s:.1f}s for "
                      f"open transactions ({held}); {len(read.values)} records")  # fmt: skip
    return read


def _report(
    r: Run,
    history: History,
    drained: observe.DrainResult,
    behind: list[observe.Behind],
    unread: list[str],
    *,
    published_all: bool,
) -> int:
    s = r.scenario
    figures = check(history)
    uncommitted = None
    if figures.eos_missing_outputs:
        copies, copy_id = s.topic(COPIES.name), _copy_id(r.pipeline)
        uncommitted = forensics.keep_missing(s.settings, copies, copy_id, s.run_dir, history)
    facts = RunFacts(
        events=s.options.events,
        seed=s.seed,
        store=s.store,
        broker=r.broker.kind,
        run_dir=str(s.run_dir),
        elapsed_s=time.monotonic() - r.began,
        drained=drained.drained,
        drain_s=drained.seconds,
        residual_lag=sum(b.high - b.committed for b in behind),
        behind=[str(b) for b in behind],
        shutdown_timeout_s=s.settings.shutdown_timeout_s,
        published_all=published_all,
        passed=False,
        nodes=r.broker.nodes,
        unread=unread,
        eos_missing_uncommitted=uncommitted,
    )
    terms_clean = all(clean(e.code, e.seconds, facts) for e in r.record.sigterm_exits)
    verdict = passed(
        figures,
        sigterms_clean=terms_clean,
        published_all=published_all,
        failovers_recovered=all(k.recovered for k in r.record.node_kills),
        reads_complete=not unread,
    )
    facts = replace(facts, passed=verdict)
    data = summary(figures, r.record, facts)
    render(data, figures, r.record, facts.behind)
    line = json_line(data)
    (s.run_dir / "summary.json").write_text(line + "\n")
    if verdict and s.store == "postgresql":
        effects.drop_table(s.store_url, s.effects_table)
    print(line, flush=True)
    return 0 if verdict else 1


def parse(argv: list[str] | None = None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(
        prog="python -m chaos.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=d.events)
    p.add_argument("--kills", type=int, default=d.kills)
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--keys", type=int, default=d.keys)
    p.add_argument("--poison-ratio", type=float, default=d.poison_ratio)
    p.add_argument("--workers", type=int, default=d.workers, help="base worker processes")
    p.add_argument("--max-workers", type=int, default=d.max_workers)
    p.add_argument("--sigterms", type=int, default=d.sigterms)
    p.add_argument("--scale-cycles", type=int, default=d.scale_cycles)
    p.add_argument("--no-broker-restart", dest="broker_restart", action="store_false")
    p.add_argument("--rate", type=float, default=d.rate, help="events published per second")
    p.add_argument("--bootstrap", help="an external broker (never restarted)")
    p.add_argument("--postgres", help="PostgreSQL URL for the idempotency store")
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--drain-timeout", dest="drain_timeout_s", type=float, default=d.drain_timeout_s)
    p.add_argument("--broker-port", type=int, default=d.broker_port, help="private broker")
    p.add_argument("--keep-broker", action="store_true", help="leave the private broker up")
    p.add_argument("--broker-home", type=Path, help="private broker's home (.chaos/kafka)")
    p.add_argument("--nodes", type=int, default=d.nodes, help="private cluster: 1 or 3")
    p.add_argument("--leader-kills", type=int, help="3 nodes: kill -9 the busiest leader (3)")
    p.add_argument("--controller-kills", type=int, help="3 nodes: kill -9 the controller (1)")
    try:
        return Options(**vars(p.parse_args(argv)))
    except ValueError as exc:
        p.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    # Our own publisher's connection errors while the broker restarts are expected noise.
    logging.getLogger("pipeline.kafka").setLevel(logging.ERROR)
    try:
        return run(parse(argv))
    except RunAborted as exc:
        log.error("run aborted: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
