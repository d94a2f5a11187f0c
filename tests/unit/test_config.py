"""Settings come from defaults, a TOML file and PIPELINE_* variables; mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import ConfigError, load_settings


def test_defaults_are_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "PIPELINE_KAFKA_BASE_PORT"):
        monkeypatch.delenv(name, raising=False)  # a developer's or the test session's broker
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.auto_offset_reset == "earliest"


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[pipeline]\nbatch_size = 7\ntopic_prefix = "dev."\n'
        '[pipeline.producer_config]\n"linger.ms" = 20\n'
    )
    monkeypatch.setenv("PIPELINE_BATCH_SIZE", "9")
    settings = load_settings(cfg)
    assert (settings.batch_size, settings.topic_prefix) == (9, "dev.")
    assert settings.producer_config == {"linger.ms": "20"}
    assert settings.topic("x") == "dev.x"


def test_kafka_bootstrap_servers_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    assert load_settings().bootstrap_servers == "broker:9092"


def test_bad_bootstrap_servers_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"bootstrap_servers.*not host:port"):
        load_settings(bootstrap_servers="localhost")


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.batch_size = 3  # type: ignore[misc]


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_json_librdkafka_overrides_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_CONSUMER_CONFIG", '{"fetch.min.bytes": 1024}')
    assert load_settings().consumer_config == {"fetch.min.bytes": "1024"}


def test_the_retry_consumer_waits_longer_on_empty_fetches_unless_overridden() -> None:
    from pipeline.kafka import config as kconfig

    settings = load_settings()
    assert kconfig.consumer(settings, "g", "c")["fetch.wait.max.ms"] == 100
    assert kconfig.retry_consumer(settings, "g.retry", "c-retry")["fetch.wait.max.ms"] == 500
    mine = load_settings(consumer_config={"fetch.wait.max.ms": "50"})
    assert kconfig.retry_consumer(mine, "g.retry", "c-retry")["fetch.wait.max.ms"] == "50"
