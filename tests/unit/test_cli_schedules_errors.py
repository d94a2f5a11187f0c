"""`pipeline schedules` refuses bad input with one line and exit 2, before connecting."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_cli_errors import ROOT, cli

SPEC = "tests.integration.schedule_stages"


def test_an_unknown_schedule_is_one_line_and_exit_2() -> None:
    result = cli("schedules", "pause", "nope", "--stages", SPEC)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: no schedule 'nope' in {SPEC}; schedules: every-second"
    )


def test_a_module_without_schedules_is_one_line_and_exit_2() -> None:
    result = cli("schedules", "list", "--stages", "tests.integration.app_stages")
    assert result.returncode == 2, result.stderr
    assert "declares no SCHEDULES" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_bad_cron_in_a_stages_module_stops_pipeline_run_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "badcron.py").write_text(
        "from pipeline import Schedule\n"
        "from tests.integration.schedule_stages import TICKS, TickSink, tick_event\n"
        "STAGES = [TickSink]\n"
        "SCHEDULES = [Schedule('x', cron='0 99 * * *', emit=TICKS, event=tick_event)]\n"
    )
    result = cli("run", "badcron", PYTHONPATH=f"{tmp_path}:{ROOT}",
                 PIPELINE_SCHEMAS_DIR=str(ROOT / "tests" / "schemas"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: Schedule 'x': '0 99 * * *' is not a cron expression" in result.stderr
