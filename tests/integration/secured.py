"""A private SASL_SSL (SCRAM-SHA-512) Kafka for the secured-cluster tests, started once per
session on free ports under a temporary home, with a CA and certificate made by openssl at test
time and SCRAM users created when its storage is formatted (``pipeline.localkafka.security``).
The broker jars are shared with the project's ``.kafka/dist`` (a symlink), not fetched again."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.localkafka import LocalKafka
from pipeline.localkafka.layout import HOST, kafka_home
from pipeline.localkafka.process import port_in_use
from pipeline.localkafka.security import CLIENT_USER, SecurityFiles

START_TIMEOUT_S = 100.0


@dataclass(frozen=True)
class SecuredKafka:
    bootstrap: str
    files: SecurityFiles

    @property
    def password(self) -> str:
        return self.files.password(CLIENT_USER)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The security fields of a client with the right credentials, then ``overrides``."""
        return {**self.files.client_settings(), **overrides}

    def env(self, **overrides: str) -> dict[str, str]:
        """The same as PIPELINE_* environment variables (for CLI subprocesses)."""
        values = {k: str(v) for k, v in self.files.client_settings().items()}
        values.update(overrides)
        return {f"PIPELINE_{k.upper()}": v for k, v in values.items() if v}


def free_base_port(first: int = 29392) -> int:
    for base in range(first, first + 400, 7):
        if not (port_in_use(HOST, base) or port_in_use(HOST, base + 1)):
            return base
    raise RuntimeError("no two free ports for the SASL_SSL broker")


def _share_jars(home: Path) -> None:
    shared = kafka_home()
    LocalKafka(root=shared).assemble()  # a no-op once assembled (the session broker did it)
    home.mkdir(parents=True, exist_ok=True)
    os.symlink((shared / "dist").resolve(), home / "dist")


@contextmanager
def secured_kafka(home: Path) -> Iterator[SecuredKafka]:
    for tool in ("java", "openssl"):
        if shutil.which(tool) is None and not (tool == "java" and os.environ.get("JAVA_HOME")):
            raise RuntimeError(f"no `{tool}` on PATH for the SASL_SSL broker")
    _share_jars(home)
    kafka = LocalKafka(root=home, base_port=free_base_port(), security="sasl_ssl")
    assert kafka.security_files is not None
    kafka.start(timeout=START_TIMEOUT_S)
    try:
        yield SecuredKafka(kafka.bootstrap_servers, kafka.security_files)
    finally:
        kafka.stop()
