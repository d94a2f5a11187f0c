"""`pipeline publish --priority`: a lane the topic does not have is one line and exit 2, before
anything connects."""

from __future__ import annotations

import json

from tests.unit.test_cli_errors import cli
from tests.unit.test_cli_publish_input import RESERVED


def test_a_priority_on_a_topic_without_lanes_is_refused() -> None:
    result = cli("publish", "orders.reservations", json.dumps(RESERVED), "--priority", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: topic 'orders.reservations': no priority 1; it takes 0 only (declare the topic "
        "with priorities=N for lanes)"
    ]
