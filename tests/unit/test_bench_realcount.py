"""bench.realcount's arithmetic: which callgrind thread files count as Python threads, and the
per-message difference of two runs (the drains themselves need valgrind and a broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import realcount


def _dump(path: Path, total: int, functions: list[str]) -> None:
    body = "".join(f"fn=({i}) {name}\n0 1\n" for i, name in enumerate(functions, 1))
    path.write_text(f"version: 1\ncmd: python\n{body}summary: {total}\n")


def test_python_threads_are_those_that_ran_the_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "order-ours-2000-1"
    _dump(tmp_path / "order-ours-2000-1.41-01", 700, ["main", "_PyEval_EvalFrameDefault"])
    _dump(tmp_path / "order-ours-2000-1.41-02", 200, ["rd_kafka_broker_thread_main"])
    _dump(tmp_path / "order-ours-2000-1.41-03", 50, ["_PyEval_EvalFrameDefault"])
    (tmp_path / "order-ours-2000-1.41").write_text("version: 1\n")  # the base file: no totals
    _dump(tmp_path / "order-ours-2000-10.41-01", 9999, ["_PyEval_EvalFrameDefault"])  # another run
    assert realcount.thread_totals(out) == (750, 950)


def test_per_message_is_the_difference_over_the_records() -> None:
    assert realcount.per_message((1_000, 1_500), (5_000, 7_500), 2_000) == (2.0, 3.0)


def test_table_gives_each_contender_against_raw_and_raw_plus() -> None:
    rows = {
        "raw": {"python_threads": 100.0, "process": 120.0},
        "raw-guarded": {"python_threads": 110.0, "process": 132.0},
        "ours": {"python_threads": 121.0, "process": 150.0},
    }
    lines = realcount.table({"order": rows})
    assert lines[-1] == "| order | ours | 121 | 1.21x | 1.10x | 150 | 1.25x | 1.14x |"


def test_the_wrapper_and_valgrinds_log_are_not_counted(tmp_path: Path) -> None:
    out = tmp_path / "checkout-raw-6000-2"
    _dump(tmp_path / "checkout-raw-6000-2.7-01", 300, ["_PyEval_EvalFrameDefault"])
    (tmp_path / "checkout-raw-6000-2.log").write_text("summary: 99999 _PyEval_EvalFrameDefault\n")
    realcount.callgrind_python(out)
    assert realcount.thread_totals(out) == (300, 300)


def test_a_drain_killed_before_callgrind_wrote_its_counts_counts_nothing(tmp_path: Path) -> None:
    (tmp_path / "order-ours-6000-1.9").write_text("")  # all a SIGKILLed callgrind leaves
    assert realcount.thread_totals(tmp_path / "order-ours-6000-1") == (0, 0)


class _Run:
    """Run.drain's stand-in: each drain handles the next of ``handled`` records."""

    def __init__(self, handled: list[int]) -> None:
        self.handled = handled
        self.tags: list[str] = []

    def drain(self, c: object, src: str, tag: str, count: int, **extra: object) -> dict[str, int]:
        self.tags.append(tag)
        return {"processed": self.handled.pop(0)}


def test_a_drain_that_redelivered_or_left_no_counts_is_run_again_then_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    totals = iter([(0, 0), (500, 600)])  # the first attempt was killed: no counts
    monkeypatch.setattr(realcount, "thread_totals", lambda out: next(totals))
    run = _Run([2000, 2000])
    got = realcount.drain_counted(run, realcount.RAW, "src", "t", 2000, "order", tmp_path)  # type: ignore[arg-type]
    assert got == (500, 600) and run.tags == ["t.a1", "t.a2"]

    monkeypatch.setattr(realcount, "thread_totals", lambda out: (500, 600))
    with pytest.raises(RuntimeError, match="exactly once"):  # redelivered twice
        realcount.drain_counted(_Run([2100, 2050]), realcount.RAW, "src", "t", 2000, "order",  # type: ignore[arg-type]
                                tmp_path)  # fmt: skip
