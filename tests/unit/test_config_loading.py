"""How settings are loaded: which source wins, what a file may hold, and stray variables."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline import ConfigError, load_settings
from pipeline.config import Settings


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(
        'bootstrap_servers = "file:1"\nbatch_size = 3\ntopic_prefix = "f."\n'
        '[producer_config]\n"linger.ms" = 20\nacks = "1"\n'
    )
    return path


def test_keyword_beats_environment_beats_file_beats_default(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each setting comes from the highest source that sets it."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # it would beat the file
    monkeypatch.setenv("PIPELINE_BATCH_SIZE", "9")
    monkeypatch.setenv("PIPELINE_TOPIC_PREFIX", "e.")
    settings = load_settings(cfg, topic_prefix="k.")
    assert settings.bootstrap_servers == "file:1"  # file only
    assert settings.batch_size == 9  # environment over file
    assert settings.topic_prefix == "k."  # keyword over environment and file
    assert settings.commit_interval_s == 1.0  # default


def test_top_level_keys_work_without_a_pipeline_table(cfg: Path) -> None:
    """Keys may sit at the top level of the file."""
    assert load_settings(cfg).producer_config == {"linger.ms": "20", "acks": "1"}


def test_an_environment_dict_setting_replaces_the_files_whole(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIPELINE_PRODUCER_CONFIG replaces the file's producer_config, it is not merged in."""
    monkeypatch.setenv("PIPELINE_PRODUCER_CONFIG", '{"linger.ms": "5"}')
    assert load_settings(cfg).producer_config == {"linger.ms": "5"}


def test_kafka_bootstrap_servers_beats_the_file(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Docker/CI variable wins over the file's bootstrap_servers, as any variable does."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:2")
    assert load_settings(cfg).bootstrap_servers == "env:2"


def test_pipeline_config_names_the_file(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIPELINE_CONFIG is read when no file is passed; a Settings built directly reads none."""
    monkeypatch.setenv("PIPELINE_CONFIG", str(cfg))
    assert load_settings().batch_size == 3
    assert Settings().batch_size == 500


def test_a_setting_spelt_in_another_case_is_unknown(tmp_path: Path) -> None:
    """File keys are exact names: `Batch_Size` is refused, with the real name suggested."""
    path = tmp_path / "p.toml"
    path.write_text("[pipeline]\nBatch_Size = 3\n")
    with pytest.raises(ConfigError, match=r"'Batch_Size' \(did you mean 'batch_size'"):
        load_settings(path)


def test_a_pipeline_key_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('pipeline = "yes"\n')
    with pytest.raises(ConfigError, match=r"\[pipeline\] must be a table"):
        load_settings(path)


def test_a_value_the_file_gets_wrong_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[pipeline]\nbatch_size = 0\n")
    with pytest.raises(ConfigError, match=rf"from {path}.*\n  batch_size:"):
        load_settings(path)


def test_a_stray_variable_like_no_setting_is_only_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PIPELINE_DEPLOY_ENV (another tool's, say) is ignored with a warning, not a failure."""
    monkeypatch.setenv("PIPELINE_DEPLOY_ENV", "prod")
    with caplog.at_level(logging.WARNING, "pipeline.config"):
        assert load_settings().batch_size == 500
    assert "ignoring environment variable PIPELINE_DEPLOY_ENV: no such setting" in caplog.text


@pytest.mark.parametrize(
    "name", ["PIPELINE_BATCH_SIZ", "PIPELINE_PARTITIONS", "PIPELINE_SCHEMA_DIR"]
)
def test_a_variable_close_to_a_setting_is_refused(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt (or mis-remembered) setting would be silently ignored: it is an error."""
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=rf"unknown environment variable {name} \(did you mean"):
        load_settings()


def test_the_default_bootstrap_follows_the_local_brokers_base_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second local broker (PIPELINE_KAFKA_BASE_PORT=19192) is the one the CLI uses."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("PIPELINE_KAFKA_BASE_PORT", "19192")
    assert load_settings().bootstrap_servers == "127.0.0.1:19192"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    assert load_settings().bootstrap_servers == "broker:9092"  # an explicit address wins


def test_a_base_port_that_is_no_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("PIPELINE_KAFKA_BASE_PORT", "abc")
    with pytest.raises(ConfigError, match="PIPELINE_KAFKA_BASE_PORT must be a port number"):
        load_settings()
