"""`pipeline schedules` refuses bad input with one line and exit 2, before connecting."""

from __future__ import annotations

from tests.unit.test_cli_errors import cli

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
