"""The video pipeline: upload → transcode → thumbnail → CDN → notify.

Work is simulated (hashing stands in for CPU, no external services), so it runs anywhere.
Every event is keyed by ``video_id``: all events of one video stay on one partition, in order.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from pipeline import Context, Event, Stage, Topic

log = logging.getLogger(__name__)


class VideoUploaded(Event, schema="video.VideoUploaded"):
    video_id: str
    user_id: str
    filename: str
    size_bytes: int
    uploaded_at: datetime


class VideoTranscoded(Event, schema="video.VideoTranscoded"):
    video_id: str
    user_id: str
    renditions: list[str]
    duration_s: float


class ThumbnailReady(Event, schema="video.ThumbnailReady"):
    video_id: str
    user_id: str
    renditions: list[str]
    thumbnail_path: str


class VideoPublished(Event, schema="video.VideoPublished"):
    video_id: str
    user_id: str
    cdn_url: str
    thumbnail_url: str


UPLOADED = Topic("video.uploaded", VideoUploaded, key="video_id")
TRANSCODED = Topic("video.transcoded", VideoTranscoded, key="video_id")
THUMBNAILED = Topic("video.thumbnailed", ThumbnailReady, key="video_id")
PUBLISHED = Topic("video.published", VideoPublished, key="video_id")

RENDITIONS = ("1080p", "720p", "480p")


def _simulate_cpu(seed: str, rounds: int) -> str:
    digest = seed.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:12]


class Transcode(Stage):
    """Produces the renditions of an uploaded video."""

    consumes = UPLOADED
    emits = (TRANSCODED,)

    def handle(self, event: VideoUploaded, ctx: Context) -> None:
        fingerprint = _simulate_cpu(event.video_id, 200)
        renditions = [f"{event.video_id}/{r}-{fingerprint}.mp4" for r in RENDITIONS]
        duration = round(event.size_bytes / 1_000_000 * 0.8, 2)
        ctx.emit(
            TRANSCODED,
            VideoTranscoded(
                video_id=event.video_id,
                user_id=event.user_id,
                renditions=renditions,
                duration_s=duration,
            ),
        )


class Thumbnail(Stage):
    """Extracts a poster frame from the first rendition."""

    consumes = TRANSCODED
    emits = (THUMBNAILED,)

    def handle(self, event: VideoTranscoded, ctx: Context) -> None:
        frame = _simulate_cpu(event.renditions[0], 50)
        ctx.emit(
            THUMBNAILED,
            ThumbnailReady(
                video_id=event.video_id,
                user_id=event.user_id,
                renditions=event.renditions,
                thumbnail_path=f"{event.video_id}/poster-{frame}.jpg",
            ),
        )


class PublishToCdn(Stage):
    """Pushes renditions and thumbnail to the (simulated) CDN."""

    consumes = THUMBNAILED
    emits = (PUBLISHED,)
    name = "cdn"

    async def handle(self, event: ThumbnailReady, ctx: Context) -> None:
        base = f"https://cdn.example.com/v/{event.video_id}"
        ctx.emit(
            PUBLISHED,
            VideoPublished(
                video_id=event.video_id,
                user_id=event.user_id,
                cdn_url=f"{base}/{RENDITIONS[0]}.mp4",
                thumbnail_url=f"{base}/poster.jpg",
            ),
        )


class Notify(Stage):
    """Tells the uploader the video is live (simulated: logs at debug level)."""

    consumes = PUBLISHED

    async def handle(self, event: VideoPublished, ctx: Context) -> None:
        log.debug(
            "notify user %s: video %s is live (%s)", event.user_id, event.video_id, ctx.coordinates
        )


STAGES = [Transcode, Thumbnail, PublishToCdn, Notify]
