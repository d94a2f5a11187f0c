"""Connection security settings: what they become for librdkafka, what they refuse, how a refused
connection is reported, and that no secret shows in a repr or a message. The real broker's side
is tests/integration/test_secured_cluster.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError as CKafkaError

from pipeline.config import Settings, load_settings
from pipeline.errors import AuthenticationError, ConfigError, TLSError
from pipeline.kafka import config as kconfig
from pipeline.kafka.security import options, refusal
from pipeline.localkafka.layout import plan_cluster
from pipeline.localkafka.properties import server_properties
from pipeline.localkafka.security import SecurityFiles, format_arguments

SECRET = "hunter2-do-not-print"
SCRAM = {
    "security_protocol": "sasl_ssl",
    "sasl_mechanism": "scram-sha-512",
    "sasl_username": "alice",
}


def scram(**values: Any) -> Settings:
    return Settings(**{**SCRAM, "sasl_password": SECRET, **values})


def test_every_client_gets_the_connection_options() -> None:
    """Consumers, producers and the admin client all carry security.protocol and sasl.*."""
    settings = scram()
    for conf in (
        kconfig.consumer(settings, "g", "c"),
        kconfig.producer(settings, "p"),
        kconfig.admin(settings),
    ):
        assert conf["security.protocol"] == "sasl_ssl"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert (conf["sasl.username"], conf["sasl.password"]) == ("alice", SECRET)


def test_client_config_is_laid_over_the_typed_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = Settings(
        security_protocol="SSL",
        ssl_ca_file=ca,
        client_config={"ssl.endpoint.identification.algorithm": "none", "client.rack": "a"},
    )
    conf = options(settings)
    assert conf["ssl.ca.location"] == str(ca)
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert conf["client.rack"] == "a"


def test_a_password_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    settings = Settings(**SCRAM, sasl_password_file=secret)
    assert options(settings)["sasl.password"] == SECRET


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({**SCRAM}, "needs sasl_username and sasl_password"),
        ({"sasl_username": "alice"}, "sasl_username is set but security_protocol is PLAINTEXT"),
        ({"ssl_ca_file": "/etc/hostname"}, "ssl_ca_file is set but security_protocol"),
        ({**SCRAM, "sasl_password": "x", "sasl_password_file": "/etc/hostname"}, "not both"),
        ({**SCRAM, "sasl_password_file": "/nonexistent/pw"}, "does not exist"),
        ({"consumer_config": {"sasl.password": "x"}}, "set it in client_config"),
    ],
)
def test_settings_that_cannot_work_are_refused_in_one_line(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Settings(**values)
    assert "\n" not in str(refused.value)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        options(Settings(**SCRAM, sasl_password_file=empty))


def test_no_secret_shows_in_a_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """SecretStr fields and secret-looking *_config options are masked in repr and str."""
    monkeypatch.setenv("PIPELINE_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PIPELINE_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PIPELINE_SASL_USERNAME", "alice")
    monkeypatch.setenv("PIPELINE_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("PIPELINE_CLIENT_CONFIG", f'{{"ssl.key.password": "{SECRET}"}}')
    settings = load_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert settings.client_config["ssl.key.password"] == SECRET  # masked only in the repr


def test_the_config_check_names_connection_options_librdkafka_refuses() -> None:
    settings = scram(client_config={"sasl.no.such.option": "1"})
    with pytest.raises(ConfigError, match=r"connection .*sasl\.no\.such\.option"):
        kconfig.check(settings)


def test_a_sasl_refusal_says_authentication_failed_for_the_user() -> None:
    err = CKafkaError(
        CKafkaError._AUTHENTICATION,
        "sasl_ssl://b:9093/bootstrap: SASL authentication error: Authentication failed "
        "due to invalid credentials with SASL mechanism SCRAM-SHA-512 "
        "(after 9ms in state AUTH_REQ)",
    )
    refused = refusal(err, scram(bootstrap_servers="b:9093"))
    assert isinstance(refused, AuthenticationError)
    assert str(refused) == (
        "SASL authentication failed for user 'alice' (SCRAM-SHA-512) at b:9093: SASL "
        "authentication error: Authentication failed due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512"
    )


def test_an_untrusted_certificate_is_a_tls_error_naming_the_setting() -> None:
    err = CKafkaError(
        CKafkaError._SSL,
        "ssl://b:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate "
        "verify failed: broker certificate could not be verified, verify that ssl.ca.location "
        "is correctly configured (after 3ms in state SSL_HANDSHAKE)",
    )
    refused = refusal(err, Settings(security_protocol="SSL", bootstrap_servers="b:9093"))
    assert isinstance(refused, TLSError)
    assert "certificate verify failed" in str(refused)
    assert str(refused).endswith(
        "(set ssl_ca_file to the CA that signed the brokers' certificates)"
    )


def test_a_plain_connection_failure_is_no_refusal() -> None:
    err = CKafkaError(CKafkaError._TRANSPORT, "b:9092/bootstrap: Connection refused")
    assert refusal(err, Settings()) is None


def test_the_local_sasl_ssl_broker_replaces_its_plaintext_listener(tmp_path: Path) -> None:
    """The client listener speaks SASL_SSL with SCRAM-SHA-512 from PEM files; the format
    creates both SCRAM users."""
    files = SecurityFiles(tmp_path)
    for user in ("broker", "pipeline"):
        files.password_file(user).write_text(f"{user}-pw\n")
    layout = plan_cluster(tmp_path, 1, 29092, "4.4.0")
    props = server_properties(layout, layout.nodes[0], files)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["ssl.keystore.type"] == "PEM"
    assert format_arguments(files) == [
        "--add-scram", "SCRAM-SHA-512=[name=broker,password=broker-pw]",
        "--add-scram", "SCRAM-SHA-512=[name=pipeline,password=pipeline-pw]",
    ]  # fmt: skip
