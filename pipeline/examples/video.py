"""The video pipeline: upload → transcode → thumbnail → CDN → notify.

Work is simulated (hashing stands in for CPU, no external services), so it runs anywhere.
Every event is keyed by ``video_id``: all events of one video stay on one partition, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from datetime import datetime

from pipeline import BreakerPolicy, Context, Event, RetryPolicy, Stage, Topic

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


class EncoderBusy(Exception):
    """The (simulated) encoder farm is saturated: worth retrying later."""


class CorruptUpload(Exception):
    """The file cannot be decoded: no retry will help."""


class Transcode(Stage):
    """Produces the renditions of an uploaded video.

    About one video in twelve finds the encoder busy on its first try and goes through the
    retry topics; corrupt uploads are dead-lettered at once.
    """

    consumes = UPLOADED
    emits = (TRANSCODED,)
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0, 5.0, 30.0), fatal=(CorruptUpload,))

    def setup(self) -> None:
        self._busy_once: set[str] = set()

    def handle(self, event: VideoUploaded, ctx: Context) -> None:
        if event.filename.endswith(".corrupt"):
            raise CorruptUpload(f"cannot demux {ctx.coordinates}")
        if zlib.crc32(event.video_id.encode()) % 12 == 0 and event.video_id not in self._busy_once:
            self._busy_once.add(event.video_id)
            raise EncoderBusy("all encoders busy")
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
    """Pushes renditions and thumbnail to the (simulated) CDN: an upload that mostly waits on
    the network, so one worker keeps up to 16 of them going (one at a time per video)."""

    consumes = THUMBNAILED
    emits = (PUBLISHED,)
    name = "cdn"
    concurrency = 16

    async def handle(self, event: ThumbnailReady, ctx: Context) -> None:
        await asyncio.sleep(0.005)  # the upload
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


class PushService:
    """A simulated push-notification provider with one outage: starting at its 150th call it
    refuses everything for 4 seconds."""

    OUTAGE_AT_CALL = 150
    OUTAGE_S = 4.0

    def __init__(self) -> None:
        self.calls = 0
        self.outage_until: float | None = None

    async def send(self, user_id: str, message: str) -> None:
        self.calls += 1
        if self.calls == self.OUTAGE_AT_CALL:
            self.outage_until = time.monotonic() + self.OUTAGE_S
        if self.outage_until is not None and time.monotonic() < self.outage_until:
            raise ConnectionError("push service unavailable")
        await asyncio.sleep(0)  # the network call


class Notify(Stage):
    """Tells the uploader the video is live, through a flaky push service.

    The stage's circuit breaker opens when the service goes down: the stage pauses instead of
    sending events to the retry topics or the DLQ, probes after a cooldown, and drains once the
    service is back.
    """

    consumes = PUBLISHED
    breaker = BreakerPolicy(failure_threshold=3, cooldown_s=1.0, max_cooldown_s=4.0)

    def setup(self) -> None:
        self.push = PushService()

    async def handle(self, event: VideoPublished, ctx: Context) -> None:
        await self.push.send(event.user_id, f"your video is live: {event.cdn_url}")


STAGES = [Transcode, Thumbnail, PublishToCdn, Notify]
