"""The examples ship inside the package; the repository's stages/ and schemas/ are the same."""

from __future__ import annotations

from pathlib import Path

import stages.orders
import stages.video
from pipeline.examples import SCHEMAS_DIR, orders, video

ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_schemas_are_the_shipped_ones() -> None:
    """schemas/ (used by `pipeline run stages.video` in a checkout) equals the packaged copy."""

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.avsc"))}

    assert files(ROOT / "schemas") == files(SCHEMAS_DIR)
    assert files(SCHEMAS_DIR)


def test_the_repository_stages_are_the_shipped_ones() -> None:
    """stages.video and stages.orders re-export the packaged stages; group names are unchanged."""
    assert stages.video.STAGES is video.STAGES
    assert stages.orders.STAGES is orders.STAGES
    assert stages.video.Transcode.group_id() == "video.transcode"


def test_docker_and_the_local_broker_run_one_kafka_version() -> None:
    """docker-compose.yml uses the local broker's Kafka version (tests/brokers.py derives its image
    tag from the same constant)."""
    import re

    from pipeline.localkafka import DEFAULT_KAFKA_VERSION

    compose = (ROOT / "docker-compose.yml").read_text()
    versions = set(re.findall(r"apache/kafka:(\d+\.\d+\.\d+)", compose))
    assert versions == {DEFAULT_KAFKA_VERSION}
