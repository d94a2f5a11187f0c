"""A run's parameters and what follows from them: settings, worker environment, store, plan."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from chaos.effects import DEFAULT_TABLE
from chaos.faults import FaultPlan
from chaos.stages import SCHEMAS_DIR, WORK, Effects, EosCopy
from chaos.workers import ROOT
from pipeline.config import Settings
from pipeline.deadletter import dlq_topic
from pipeline.retrytopics import topic_name as retry_topic

PARTITIONS = 12
COMMIT_INTERVAL_S = 0.3
SHUTDOWN_TIMEOUT_S = 15.0
_KEEP_ENV = {"PIPELINE_KAFKA_HOME", "PIPELINE_KAFKA_VERSION"}


@dataclass(frozen=True)
class Options:
    events: int = 100_000
    kills: int = 20
    seed: int | None = None  # None: a random one, printed
    keys: int = 500
    poison_ratio: float = 0.01
    workers: int = 3
    max_workers: int = 5
    sigterms: int = 4
    scale_cycles: int = 2
    broker_restart: bool = True
    rate: float = 400.0  # events published per second
    bootstrap: str | None = None  # None: KAFKA_BOOTSTRAP_SERVERS, else a private broker
    postgres: str | None = None  # None: TEST_POSTGRES_URL, else SQLite in the run dir
    run_dir: Path | None = None  # None: .chaos/runs/<time>-<seed>
    drain_timeout_s: float = 600.0
    broker_port: int = 19192
    keep_broker: bool = False
    broker_home: Path | None = None  # None: .chaos/kafka
    nodes: int = 1  # of the private cluster; 3: replication 3, min ISR 2, node kills
    leader_kills: int | None = None  # None: 3 on three nodes, else 0
    controller_kills: int | None = None  # None: 1 on three nodes, else 0

    def __post_init__(self) -> None:
        if self.nodes not in (1, 3):
            raise ValueError(f"--nodes must be 1 or 3, got {self.nodes}")
        if self.nodes == 1 and (self.leader_kills or self.controller_kills):
            raise ValueError("leader and controller kills need a 3-node cluster (--nodes 3)")

    @property
    def node_kills(self) -> tuple[int, int]:
        """(leader kills, controller kills)."""
        cluster = self.nodes == 3
        leaders = self.leader_kills if self.leader_kills is not None else (3 if cluster else 0)
        controllers = self.controller_kills
        return leaders, controllers if controllers is not None else (1 if cluster else 0)

    @property
    def replication(self) -> tuple[int, int | None]:
        """(replication factor, min.insync.replicas) of the run's topics."""
        return (3, 2) if self.nodes == 3 else (1, None)

    @property
    def load_s(self) -> float:
        return self.events / self.rate


@dataclass(frozen=True)
class Scenario:
    """Everything derived from the options once the broker is known."""

    options: Options
    seed: int
    run_dir: Path
    settings: Settings
    store_url: str
    effects_table: str

    @property
    def store(self) -> str:
        return "postgresql" if self.store_url.startswith("postgres") else "sqlite"

    def fault_plan(self) -> FaultPlan:
        o = self.options
        leader_kills, controller_kills = o.node_kills
        return FaultPlan(
            window_s=o.load_s,
            kills=o.kills,
            sigterms=o.sigterms,
            scale_cycles=o.scale_cycles,
            # On three nodes the node kills take the single broker's restart's place.
            broker_restarts=1 if o.broker_restart and o.nodes == 1 else 0,
            leader_kills=leader_kills,
            controller_kills=controller_kills,
            base_workers=o.workers,
            max_workers=max(o.max_workers, o.workers + (1 if o.scale_cycles else 0)),
        )

    def worker_env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        env.update({k: os.environ[k] for k in _KEEP_ENV if k in os.environ})
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=s.bootstrap_servers,
            PIPELINE_TOPIC_PREFIX=s.topic_prefix,
            PIPELINE_SCHEMAS_DIR=str(s.schemas_dir),
            PIPELINE_TOPIC_PARTITIONS=str(s.topic_partitions),
            PIPELINE_TOPIC_REPLICATION=str(s.topic_replication),
            PIPELINE_COMMIT_INTERVAL_S=str(s.commit_interval_s),
            PIPELINE_BATCH_TIMEOUT_S=str(s.batch_timeout_s),
            PIPELINE_SHUTDOWN_TIMEOUT_S=str(s.shutdown_timeout_s),
            PIPELINE_IDEMPOTENCY_URL=self.store_url,
            CHAOS_RUN_DIR=str(self.run_dir),
            CHAOS_EFFECTS_TABLE=self.effects_table,
            PYTHONPATH=str(ROOT),
        )
        if s.topic_min_insync_replicas is not None:
            env["PIPELINE_TOPIC_MIN_INSYNC_REPLICAS"] = str(s.topic_min_insync_replicas)
        return env

    # -- physical names -------------------------------------------------------------------

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def group(self, stage: type[Effects] | type[EosCopy]) -> str:
        return self.settings.topic(stage.group_id())

    def retry_topics(self, stage: type[Effects] | type[EosCopy]) -> tuple[str, ...]:
        return tuple(retry_topic(self.group(stage), t) for t in stage.retry.tiers)

    def dlq(self, stage: type[Effects] | type[EosCopy]) -> str:
        return dlq_topic(self.group(stage))

    @property
    def input_topic(self) -> str:
        return self.topic(WORK.name)


def build(options: Options, bootstrap: str) -> Scenario:
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (options.run_dir or ROOT / ".chaos" / "runs" / f"{stamp}-seed{seed}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{stamp.replace('-', '')}{seed}"
    postgres = options.postgres or os.environ.get("TEST_POSTGRES_URL")
    if postgres:
        store_url, table = postgres, f"{DEFAULT_TABLE}_{run_id}"
    else:
        store_url, table = f"sqlite:///{run_dir / 'store.db'}", DEFAULT_TABLE
    replication, min_isr = options.replication
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"chaos-{run_id}.",
        schemas_dir=SCHEMAS_DIR,
        topic_partitions=PARTITIONS,
        topic_replication=replication,
        topic_min_insync_replicas=min_isr,
        commit_interval_s=COMMIT_INTERVAL_S,
        batch_timeout_s=0.05,
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
        idempotency_url=store_url,
        # The orchestrator's own clients (publisher, readers) stay quiet through a broker
        # restart; the workers' settings come from worker_env() and keep the defaults.
        producer_config={"log_level": "2"},
        consumer_config={"log_level": "2"},
    )
    return Scenario(options, seed, run_dir, settings, store_url, table)
