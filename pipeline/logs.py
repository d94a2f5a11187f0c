"""Logging setup for the CLI and workers. Records carry coordinates, never payloads."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("PIPELINE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s",
    )
