"""How clients authenticate to the cluster and trust it: the checks on the ``Settings`` fields
``security_protocol``, ``sasl_*``, ``ssl_*`` and ``client_config``, and reading secrets.

Every client the framework builds (consumers, producers, admin, lag monitor, ``pipeline dlq``,
the schema topic) gets the same connection options, from ``pipeline.kafka.config.common``.

Secrets are ``SecretStr`` (``**********`` in every repr) or files (``sasl_password_file``,
``ssl_key_password_file``): a file is read each time a client is created, so a rotated
password is picked up by the next client without a restart. Nothing here puts a secret into a
message; the checks name fields and paths only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import SecretStr

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import Settings

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)
_USER_PASSWORD = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_FIELDS = ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file")
_SSL_FIELDS = (
    "ssl_ca_file", "ssl_certificate_file", "ssl_key_file", "ssl_key_password",
    "ssl_key_password_file",
)  # fmt: skip
_FILES = ("sasl_password_file", "ssl_ca_file", "ssl_certificate_file", "ssl_key_file",
          "ssl_key_password_file")  # fmt: skip
# librdkafka options that may hold a secret; their values are masked in a Settings repr.
SECRET_OPTION = re.compile(r"password|secret|\.pem$|token|credential", re.IGNORECASE)
# Options every client needs alike: in consumer_config or producer_config they would miss the
# admin client, the lag monitor and the schema topic, which then cannot connect.
_CONNECTION_OPTION = re.compile(r"^(security\.protocol|sasl\.|ssl\.|ssl_)")


def check(settings: Settings) -> None:
    """Raise ConfigError for connection settings that cannot work together."""
    _check_per_client_options(settings)
    _exclusive(settings, "sasl_password", "sasl_password_file")
    _exclusive(settings, "ssl_key_password", "ssl_key_password_file")
    for name in _FILES:
        path = getattr(settings, name)
        if path is not None:
            _readable(name, path)
    protocol = effective_protocol(settings)
    if "SASL" in protocol:
        _check_sasl(settings, protocol)
    else:
        _not_used(settings, _SASL_FIELDS, protocol, "SASL_SSL or SASL_PLAINTEXT")
    if "SSL" not in protocol:
        _not_used(settings, _SSL_FIELDS, protocol, "SSL or SASL_SSL")
    if (settings.ssl_certificate_file is None) != (settings.ssl_key_file is None):
        raise ConfigError("ssl_certificate_file and ssl_key_file go together (mutual TLS)")


def effective_protocol(settings: Settings) -> str:
    return str(settings.client_config.get("security.protocol", settings.security_protocol)).upper()


def read_secret(value: SecretStr | None, file: Path | None, field: str) -> str | None:
    """The secret from the setting or its file (trailing newline dropped), or None."""
    if value is not None:
        return value.get_secret_value()
    if file is None:
        return None
    try:
        text = file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{field}_file {file} cannot be read: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{field}_file {file} is empty")
    return text


def redact(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the values of secret-looking keys masked, for a repr."""
    return {k: "**********" if SECRET_OPTION.search(k) else v for k, v in options.items()}


def _check_sasl(settings: Settings, protocol: str) -> None:
    options = settings.client_config
    mechanism = options.get("sasl.mechanism") or options.get("sasl.mechanisms")
    mechanism = (mechanism or settings.sasl_mechanism or "").upper()
    if not mechanism:
        raise ConfigError(
            f"security_protocol {protocol} needs sasl_mechanism ({', '.join(MECHANISMS)})"
        )
    if mechanism not in _USER_PASSWORD:
        return  # OAUTHBEARER / GSSAPI are configured through client_config
    has_user = settings.sasl_username or options.get("sasl.username")
    has_password = (
        settings.sasl_password or settings.sasl_password_file or options.get("sasl.password")
    )
    if not (has_user and has_password):
        raise ConfigError(
            f"SASL {mechanism} needs sasl_username and sasl_password (or sasl_password_file)"
        )


def _check_per_client_options(settings: Settings) -> None:
    for field in ("consumer_config", "producer_config"):
        for key in getattr(settings, field):
            if _CONNECTION_OPTION.match(key):
                raise ConfigError(
                    f"{field}: {key!r} is a connection option every client needs; set it in "
                    "client_config, or use the security_protocol / sasl_* / ssl_* settings"
                )


def _exclusive(settings: Settings, a: str, b: str) -> None:
    if getattr(settings, a) is not None and getattr(settings, b) is not None:
        raise ConfigError(f"set {a} or {b}, not both")


def _readable(field: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{field} {path} does not exist or is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{field} {path} cannot be read: {exc.strerror}") from None


def _not_used(settings: Settings, fields: tuple[str, ...], protocol: str, wanted: str) -> None:
    given = [f for f in fields if getattr(settings, f) is not None]
    if given:
        raise ConfigError(
            f"{given[0]} is set but security_protocol is {protocol}; use {wanted} for it to apply"
        )
