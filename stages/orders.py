"""The repository's copy of the orders example: the code lives in ``pipeline.examples.orders``, so
``pipeline demo`` (from a wheel) and ``pipeline run stages.orders`` (in a checkout) run the same."""

from pipeline.examples.orders import *  # noqa: F403
from pipeline.examples.orders import STAGES as STAGES
