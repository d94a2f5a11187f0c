"""A SASL_SSL (SCRAM-SHA-512) client listener for the local cluster, as production has.

``LocalKafka(security="sasl_ssl")`` serves clients on the usual port over TLS with SCRAM-SHA-512
logins instead of PLAINTEXT (the controller listener stays PLAINTEXT, on 127.0.0.1 only).
Everything it needs is made here on first use, under ``run/security/``:

* a throwaway CA and a server certificate it signed for ``IP:127.0.0.1`` and ``DNS:localhost``
  (openssl, EC P-256: generated in milliseconds), so clients verify the broker's hostname as
  they would in production;
* two SCRAM users with random passwords, ``broker`` (inter-broker) and ``pipeline`` (clients),
  created in the metadata log by ``kafka-storage format --add-scram``. The password files are
  mode 0600, and ``pipeline.toml`` there holds the client settings that point at them
  (``pipeline --config .kafka/run/security/pipeline.toml``).

The files outlive a stop, so a restarted node keeps its users and its clients' trust.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BrokerUnavailableError, ConfigError
from pipeline.localkafka.layout import NodeSpec

PLAINTEXT = "plaintext"
SASL_SSL = "sasl_ssl"
SECURITY_CHOICES = (PLAINTEXT, SASL_SSL)
MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "broker"
CLIENT_USER = "pipeline"
_LISTENER = "SASL_SSL"
_CERT_DAYS = "3650"


def check_security(security: str) -> str:
    if security not in SECURITY_CHOICES:
        raise ConfigError(
            f"unknown local Kafka security {security!r} (choose {' or '.join(SECURITY_CHOICES)})"
        )
    return security


@dataclass(frozen=True)
class SecurityFiles:
    """The CA, the broker's key store and the SCRAM passwords of one cluster."""

    dir: Path

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def keystore_file(self) -> Path:
        # Kafka's PEM key store: the PKCS#8 private key followed by the certificate chain.
        return self.dir / "broker-keystore.pem"

    def password_file(self, user: str) -> Path:
        return self.dir / f"{user}.password"

    @property
    def client_config_file(self) -> Path:
        return self.dir / "pipeline.toml"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text(encoding="ascii").strip()

    def ensure(self) -> None:
        """Create whatever is missing (certificates, passwords, the client settings file)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.ca_file.is_file() and self.keystore_file.is_file()):
            _make_certificates(self.dir, self.ca_file, self.keystore_file)
        for user in (BROKER_USER, CLIENT_USER):
            path = self.password_file(user)
            if not path.is_file():
                # Hex only: --add-scram's [name=..,password=..] syntax has no quoting.
                _write_private(path, secrets.token_hex(16) + "\n")
        self.client_config_file.write_text(self._client_toml(), encoding="utf-8")

    def client_settings(self) -> dict[str, object]:
        """``Settings`` fields for a client of this cluster (the password comes from its file)."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_username": CLIENT_USER,
            "sasl_password_file": self.password_file(CLIENT_USER),
            "ssl_ca_file": self.ca_file,
        }

    def _client_toml(self) -> str:
        lines = ["# Written by pipeline.localkafka: the client settings of this cluster.", ""]
        lines.append("[pipeline]")
        for key, value in self.client_settings().items():
            lines.append(f'{key} = "{value}"')
        return "\n".join(lines) + "\n"


def server_properties(files: SecurityFiles, node: NodeSpec) -> dict[str, str]:
    """What replaces the PLAINTEXT client listener of ``properties.server_properties``."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{BROKER_USER}" password="{files.password(BROKER_USER)}";'
    )
    prefix = f"listener.name.{_LISTENER.lower()}"
    listeners = f"{_LISTENER}://{node.broker_address},CONTROLLER://{node.controller_address}"
    return {
        "listeners": listeners,
        "advertised.listeners": listeners,
        "inter.broker.listener.name": _LISTENER,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{_LISTENER}:SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"{prefix}.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(files.keystore_file),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files.ca_file),
    }


def format_arguments(files: SecurityFiles) -> list[str]:
    """``kafka-storage format`` flags that create the SCRAM users with the cluster's data."""
    args: list[str] = []
    for user in (BROKER_USER, CLIENT_USER):
        args += ["--add-scram", f"{MECHANISM}=[name={user},password={files.password(user)}]"]
    return args


def _make_certificates(directory: Path, ca_file: Path, keystore_file: Path) -> None:
    names = ("ca.key", "broker.key", "broker.csr", "broker.pem")
    ca_key, key, csr, cert = (directory / name for name in names)
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="ascii")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(["req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_file),
              "-days", _CERT_DAYS, "-subj", "/CN=pipeline localkafka CA"])  # fmt: skip
    _openssl(["req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"])
    _openssl(["x509", "-req", "-in", str(csr), "-CA", str(ca_file), "-CAkey", str(ca_key),
              "-CAcreateserial", "-out", str(cert), "-days", _CERT_DAYS,
              "-extfile", str(ext)])  # fmt: skip
    _write_private(keystore_file, key.read_text() + cert.read_text())
    for leftover in (key, csr, cert, ext, directory / "ca.srl"):
        leftover.unlink(missing_ok=True)
    os.chmod(ca_key, 0o600)


def _openssl(argv: list[str]) -> None:
    try:
        done = subprocess.run(
            ["openssl", *argv], capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise BrokerUnavailableError("no `openssl` on PATH to make the TLS certificates") from None
    if done.returncode != 0:
        raise BrokerUnavailableError(f"openssl {argv[0]} failed: {done.stderr.strip()[-500:]}")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
