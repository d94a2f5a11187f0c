"""The repository's copy of the video example: the code lives in ``pipeline.examples.video``, so
``pipeline demo`` (from a wheel) and ``pipeline run stages.video`` (in a checkout) run the same."""

from pipeline.examples.video import *  # noqa: F403
from pipeline.examples.video import STAGES as STAGES
