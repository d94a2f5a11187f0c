"""When EosCopy inputs lack a committed output: where they are, and whether the outputs exist.

``eos_missing.txt`` in the run dir lists every such input: first the runs per input partition
(``chaos.history.missing_runs``), then one line per event (``<id> <partition> <offset>``). The
copies topic is then read again with ``read_uncommitted``: an output there but not among the
committed ones was written in a transaction that aborted or is still open; none there means it
was never written. Those two point at different bugs (offsets committed past an aborted
transaction's records, versus a handler or router that emitted nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos import readback
from chaos.history import History, missing_runs
from pipeline.config import Settings


def keep_missing(
    settings: Settings,
    copies: str,
    extract: Callable[[Any], str | None],
    run_dir: Path,
    history: History,
) -> int:
    """Write ``eos_missing.txt``; return how many of the inputs concerned have an output in
    ``copies`` that is not committed (aborted or open)."""
    committed = set(history.eos_outputs)
    good = [p for p in history.published if not p.poison]
    missing = [p for p in good if p.eid not in committed]
    lines = [str(run) for run in missing_runs(good, committed)]
    lines += [f"{p.eid} {p.partition} {p.offset}" for p in missing]
    (run_dir / "eos_missing.txt").write_text("\n".join(lines) + "\n")
    written = readback.read_topic(settings, copies, extract, isolation="read_uncommitted")
    present = set(written.values)
    return sum(1 for p in missing if p.eid in present)
