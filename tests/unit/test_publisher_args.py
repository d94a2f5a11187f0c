"""Publisher.publish takes a Topic declaration; anything else is a clear TypeError."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.publisher import Publisher
from stages.video import UPLOADED, VideoUploaded

ROOT = Path(__file__).resolve().parents[2]
EVENT = VideoUploaded(
    video_id="v1", user_id="u1", filename="a.mp4", size_bytes=1, uploaded_at=datetime.now(UTC)
)


@pytest.fixture
def publisher() -> Publisher:
    # Nothing is sent, so nothing needs to be reachable.
    settings = Settings(bootstrap_servers="127.0.0.1:1", schemas_dir=ROOT / "schemas")
    pub = Publisher(settings, check_topics=False)
    yield pub
    pub.close(1)


def test_a_topic_name_string_is_refused_with_what_is_expected(publisher: Publisher) -> None:
    with pytest.raises(TypeError, match=r"takes a Topic, not str 'video.uploaded'"):
        publisher.publish(UPLOADED.name, EVENT)  # type: ignore[arg-type]


def test_publish_async_refuses_a_topic_name_string_too(publisher: Publisher) -> None:
    with pytest.raises(TypeError, match=r"takes a Topic, not str"):
        asyncio.run(publisher.publish_async(UPLOADED.name, EVENT))  # type: ignore[arg-type]
