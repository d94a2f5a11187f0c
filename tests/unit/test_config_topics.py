"""The topic settings: replication factor and min.insync.replicas of the topics we create."""

from __future__ import annotations

import pytest

from pipeline import ConfigError, load_settings


def test_min_insync_replicas_defaults_to_the_brokers_own() -> None:
    settings = load_settings()
    assert settings.topic_min_insync_replicas is None
    assert settings.topic_config() == {}


def test_min_insync_replicas_becomes_a_topic_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TOPIC_REPLICATION", "3")
    monkeypatch.setenv("PIPELINE_TOPIC_MIN_INSYNC_REPLICAS", "2")
    settings = load_settings()
    assert (settings.topic_replication, settings.topic_min_insync_replicas) == (3, 2)
    assert settings.topic_config() == {"min.insync.replicas": "2"}


def test_min_insync_replicas_above_the_replication_factor_is_rejected() -> None:
    # Every acks=all write to such a topic would fail with NOT_ENOUGH_REPLICAS.
    with pytest.raises(ConfigError, match=r"topic_min_insync_replicas \(2\) cannot exceed"):
        load_settings(topic_replication=1, topic_min_insync_replicas=2)


def test_min_insync_replicas_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="topic_min_insync_replicas"):
        load_settings(topic_min_insync_replicas=0)
