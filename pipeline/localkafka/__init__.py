"""A local Apache Kafka broker (or 3-node cluster) without Docker.

The broker's jars come from Maven Central (assembled once into ``.kafka/dist``), the JVMs run
detached on 127.0.0.1 in KRaft mode, and readiness is the broker's own "Kafka Server started"
log line. From a shell::

    python -m pipeline.localkafka up [--nodes 3] [--fresh]
    python -m pipeline.localkafka status | logs -n 50 | bootstrap | down

From Python::

    kafka = LocalKafka()
    kafka.start()          # raises BrokerUnavailableError with the log tail on failure
    kafka.bootstrap_servers  # "127.0.0.1:19092"
    kafka.stop()

Environment: ``PIPELINE_KAFKA_VERSION`` (default 4.4.0), ``PIPELINE_KAFKA_HOME`` (default
``<cwd>/.kafka``), ``PIPELINE_KAFKA_BASE_PORT`` (default 19092).
"""

from pipeline.localkafka.cluster import LocalKafka
from pipeline.localkafka.layout import DEFAULT_BASE_PORT, DEFAULT_KAFKA_VERSION
from pipeline.localkafka.node import NodeStatus

__all__ = ["DEFAULT_BASE_PORT", "DEFAULT_KAFKA_VERSION", "LocalKafka", "NodeStatus"]
