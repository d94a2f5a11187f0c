"""server.properties for a combined (broker + controller) KRaft node.

The values differ from Kafka's defaults in three ways, each on purpose:

* replication factors and min ISR follow the node count (the defaults want 3 replicas, which a
  single node cannot host, so the internal topics would never be created);
* internal topics get few partitions and the group rebalance delay is 0, because a 2-core test
  box otherwise spends its start-up creating 50-partition ``__consumer_offsets``;
* ``auto.create.topics.enable=false``, so tests exercise the framework's own topic creation.
"""

from __future__ import annotations

import base64
import uuid

from pipeline.localkafka import security as security_
from pipeline.localkafka.layout import ClusterLayout, NodeSpec

INTERNAL_TOPIC_PARTITIONS = 4


def new_cluster_id() -> str:
    """A KRaft cluster id, made here to save a JVM start (``StorageTool random-uuid``).

    Same shape as Kafka's ``Uuid.randomUuid().toString()``: 16 random bytes in URL-safe base64
    without padding. Kafka never hands out ids that start with '-' (they read as CLI flags).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def _quorum_properties(layout: ClusterLayout) -> dict[str, str]:
    if len(layout.nodes) == 1:
        # Dynamic quorum (KIP-853): formatted with --standalone, the node is its own voter.
        return {"controller.quorum.bootstrap.servers": layout.nodes[0].controller_address}
    # Static voters: every node formats without a quorum flag and finds the others here.
    voters = ",".join(f"{n.node_id}@{n.controller_address}" for n in layout.nodes)
    return {"controller.quorum.voters": voters}


def _replication_properties(nodes: int) -> dict[str, str]:
    replicas = min(nodes, 3)
    min_isr = 2 if replicas >= 3 else 1
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
    }


def server_properties(
    layout: ClusterLayout, node: NodeSpec, security: security_.SecurityFiles | None = None
) -> dict[str, str]:
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "listeners": f"PLAINTEXT://{node.broker_address},CONTROLLER://{node.controller_address}",
        "advertised.listeners": (
            f"PLAINTEXT://{node.broker_address},CONTROLLER://{node.controller_address}"
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(node.data_dir),
        **_quorum_properties(layout),
        **_replication_properties(len(layout.nodes)),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.num.partitions": str(INTERNAL_TOPIC_PARTITIONS),
        "transaction.state.log.num.partitions": str(INTERNAL_TOPIC_PARTITIONS),
        "share.coordinator.state.topic.num.partitions": str(INTERNAL_TOPIC_PARTITIONS),
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "2",
    }
    if security is not None:  # the client listener speaks SASL_SSL instead
        props.update(security_.server_properties(security, node))
    return props


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\")


def render_properties(props: dict[str, str]) -> str:
    # java.util.Properties treats '\\' as an escape in values (':' and '=' only matter in
    # keys), so doubling backslashes is the only escaping a path can need.
    lines = ["# Written by pipeline.localkafka; regenerated on every start."]
    lines += [f"{key}={_escape(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"
