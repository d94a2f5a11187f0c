"""Reading a node's log: did it start, and what to show when it did not.

Each start appends a banner line to ``server.log`` before the JVM is launched. Readiness is the
broker's own ``Kafka Server started`` line *after the last banner*, so the line left by an
earlier run of the same node never counts. An open port is not readiness: the socket server
binds well before the broker is unfenced and can serve produce requests.
"""

from __future__ import annotations

import time
from pathlib import Path

READY_LINE = "Kafka Server started"
BANNER_PREFIX = "----- pipeline.localkafka: starting node"
TAIL_LINES = 40

# A node never reads more than this much of its log to judge readiness; the start-up of one
# run is a few hundred KB at most, and the banner sits at its beginning.
_MAX_SCAN_BYTES = 8 * 1024 * 1024


def banner(node_id: int, now: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return f"{BANNER_PREFIX} {node_id} at {stamp} -----\n"


def current_run(text: str) -> str:
    """The part of a log written since the last banner (all of it when there is none)."""
    index = text.rfind(BANNER_PREFIX)
    return text if index < 0 else text[index:]


def is_ready(text: str) -> bool:
    return READY_LINE in current_run(text)


def read_log(path: Path) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _MAX_SCAN_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def append_banner(path: Path, node_id: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(banner(node_id))


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def failure_message(summary: str, logs: dict[Path, str], lines: int = TAIL_LINES) -> str:
    """One summary line, then the last lines of each non-empty log, each under its path.

    The CLI prints the first line as the error and the rest as context, so ``summary`` must be
    a single line.
    """
    parts = [summary]
    for path, text in logs.items():
        body = tail(current_run(text), lines)
        if body.strip():
            parts.append(f"--- last {lines} lines of {path} ---\n{body}")
    if len(parts) == 1:
        parts.append("(the node wrote no log output)")
    return "\n".join(parts)
