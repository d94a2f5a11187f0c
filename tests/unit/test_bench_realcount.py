"""bench.realcount's arithmetic: which callgrind thread files count as Python threads, and the
per-message difference of two runs (the drains themselves need valgrind and a broker)."""

from __future__ import annotations

from pathlib import Path

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
