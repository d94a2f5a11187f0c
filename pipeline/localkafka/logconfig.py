"""The log4j2 configuration each node runs with.

Without a configuration file log4j2 logs only ERROR to the console, and our readiness signal
(``Kafka Server started``, logged at INFO by ``kafka.server.KafkaRaftServer``) would never be
written. One file serves every node: the path comes from the ``kafka.logs.dir`` system property
that each JVM is started with.
"""

from __future__ import annotations

from pathlib import Path

# Loggers that are chatty at INFO but say nothing a test author needs: per-request logs,
# partition state transitions, the log cleaner, and the broker's own client connections
# (which log every reconnect while a peer node is down).
QUIET_LOGGERS = (
    "kafka.request.logger",
    "kafka.network.RequestChannel$",
    "kafka.log.LogCleaner",
    "state.change.logger",
    "kafka.authorizer.logger",
    "org.apache.kafka.clients",
    "org.apache.kafka.common.metrics",
)

_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by pipeline.localkafka; regenerated on every start. -->
<Configuration status="WARN" name="localkafka">
  <Appenders>
    <File name="server" fileName="${{sys:kafka.logs.dir}}/server.log" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="INFO">
      <AppenderRef ref="server"/>
    </Root>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
{quiet}
  </Loggers>
</Configuration>
"""


def log4j2_xml() -> str:
    quiet = "\n".join(f'    <Logger name="{name}" level="WARN"/>' for name in QUIET_LOGGERS)
    return _TEMPLATE.format(quiet=quiet)


def write_log4j2_xml(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(log4j2_xml(), encoding="utf-8")
