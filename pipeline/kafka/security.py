"""The connection options every client gets, and what a refused connection means.

``options`` maps the typed settings to librdkafka's names; ``Settings.client_config`` is laid
over them, so any librdkafka option (``ssl.endpoint.identification.algorithm``,
``sasl.oauthbearer.*``...) can be set or changed for every client at once.

``refusal`` turns librdkafka's per-connection errors into ours: a SASL login the brokers refuse
is an ``AuthenticationError`` and a failed TLS handshake a ``TLSError``, each one line that says
which, instead of the "Broker transport failure" every failed connection ends in. librdkafka's
texts name the broker, the mechanism and the state, never a secret; ours add the user name.
"""

from __future__ import annotations

import re
from typing import Any

from confluent_kafka import KafkaError as CKafkaError

from pipeline.config import Settings
from pipeline.errors import AuthenticationError, BrokerUnavailableError, TLSError
from pipeline.security import read_secret

# "sasl_ssl://127.0.0.1:29392/bootstrap: " before, "(after 353ms in state AUTH_REQ)" after
_BROKER_PREFIX = re.compile(r"^\S+://\S+?: ")
_STATE_SUFFIX = re.compile(r"\s*\(after \d+ms in state \w+\)$")


def options(settings: Settings) -> dict[str, Any]:
    """``security.protocol``, ``sasl.*`` and ``ssl.*`` from settings, then ``client_config``."""
    conf: dict[str, Any] = {"security.protocol": settings.security_protocol.lower()}
    if settings.sasl_mechanism is not None:
        conf["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username is not None:
        conf["sasl.username"] = settings.sasl_username
    password = read_secret(settings.sasl_password, settings.sasl_password_file, "sasl_password")
    if password is not None:
        conf["sasl.password"] = password
    for field, option in (
        ("ssl_ca_file", "ssl.ca.location"),
        ("ssl_certificate_file", "ssl.certificate.location"),
        ("ssl_key_file", "ssl.key.location"),
    ):
        if (path := getattr(settings, field)) is not None:
            conf[option] = str(path)
    key_password = read_secret(
        settings.ssl_key_password, settings.ssl_key_password_file, "ssl_key_password"
    )
    if key_password is not None:
        conf["ssl.key.password"] = key_password
    return conf | settings.client_config


def refusal(err: Any, settings: Settings) -> BrokerUnavailableError | None:
    """Ours for an error callback's error that means "we may not connect", else None."""
    if not isinstance(err, CKafkaError):
        return None
    if err.code() == CKafkaError._AUTHENTICATION:
        user = settings.client_config.get("sasl.username", settings.sasl_username)
        mechanism = settings.client_config.get("sasl.mechanism", settings.sasl_mechanism)
        who = f"user {user!r}" if user else "no user name"
        return AuthenticationError(
            f"SASL authentication failed for {who} ({mechanism}) at "
            f"{settings.bootstrap_servers}: {_reason(err)}"
        )
    if err.code() == CKafkaError._SSL:
        return TLSError(
            f"TLS connection to {settings.bootstrap_servers} failed: {_reason(err)}"
            f"{_tls_hint(err, settings)}"
        )
    return None


def _reason(err: CKafkaError) -> str:
    text = _STATE_SUFFIX.sub("", _BROKER_PREFIX.sub("", err.str()))
    # librdkafka's own advice names its option (ssl.ca.location); the hint names our setting.
    return text.split(", verify that ssl.ca.location")[0]


def _tls_hint(err: CKafkaError, settings: Settings) -> str:
    if "certificate verify failed" not in err.str():
        return ""
    if settings.ssl_ca_file is None and "ssl.ca.location" not in settings.client_config:
        return " (set ssl_ca_file to the CA that signed the brokers' certificates)"
    return " (is ssl_ca_file the CA that signed the brokers' certificates?)"
