"""The CLI behaves as people expect: --version, readable help, clear answers, close matches."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import Settings
from pipeline.cli import app
from pipeline.errors import DeclarationError
from pipeline.registry import load, module_spec
from pipeline.testing import MemoryBroker
from pipeline.testing.transport import MemoryTransport
from tests.conftest import ROOT
from tests.unit.test_cli_errors import cli

runner = CliRunner()


def test_version_names_the_package_and_its_kafka_client() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("kafka-pipeline ") and "confluent-kafka" in result.stdout


def test_config_help_shows_the_pipeline_table() -> None:
    """Rich markup would eat an unescaped "[pipeline]"."""
    for command in (["run", "--help"], ["topics", "list", "--help"], ["dlq", "list", "--help"]):
        result = runner.invoke(app, command, env={"COLUMNS": "200"})
        assert "TOML settings file ([pipeline] table)" in result.stdout, command


def test_a_log_level_that_is_none_is_one_line_and_exit_2() -> None:
    result = runner.invoke(app, ["run", "stages.video", "--log-level", "loud"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --log-level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'loud')"
    )


def test_topics_list_says_when_there_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty cluster is said on stderr; stdout stays one line per topic (here none)."""
    # The caller's broker (a developer's, or the test session's) would be the one named.
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    transport = MemoryTransport(MemoryBroker(), Settings())
    monkeypatch.setattr("pipeline.transport.kafka", lambda settings: transport)
    result = runner.invoke(app, ["topics", "list"])
    assert result.exit_code == 0
    assert (result.stdout, result.stderr) == ("", "no topics on 127.0.0.1:19092\n")


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize(
    ("typed", "module"),
    [
        ("stages/video.py", "stages.video"),
        ("./stages/video.py:Transcode", "stages.video:Transcode"),
        (str(ROOT / "stages" / "orders.py"), "stages.orders"),
        ("stages/__init__.py", "stages"),
        ("stages.video", "stages.video"),
    ],
)
def test_a_stage_file_is_taken_as_its_module(typed: str, module: str, in_root: None) -> None:
    assert module_spec(typed) == module


def test_a_file_outside_the_project_is_refused(in_root: None) -> None:
    with pytest.raises(DeclarationError, match="outside the current directory"):
        module_spec("/tmp/stages/images.py")


def test_running_a_file_says_which_module_it_is(
    in_root: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", "pipeline.registry")
    assert [s.__name__ for s in load("stages/orders.py:Payment")] == ["Payment"]
    assert "stages/orders.py:Payment is a file: running it as stages.orders:Payment" in caplog.text


@pytest.mark.parametrize(
    ("spec", "suggestion"),
    [
        ("stages.vidoe", "did you mean 'stages.video'?"),
        ("stagse.video", "did you mean 'stages.video'?"),
        ("stages.video:Transcod", "did you mean stages.video:Transcode?"),
        ("stages/vidoe.py", "did you mean 'stages.video'?"),
    ],
)
def test_a_misspelt_module_or_stage_gets_a_close_match(
    spec: str, suggestion: str, in_root: None
) -> None:
    with pytest.raises(DeclarationError, match=suggestion.replace("?", r"\?")):
        load(spec)


def test_the_cli_suggests_the_module_meant(tmp_path: Path) -> None:
    """From the shell: exit 2, one line, with the close match."""
    result = cli("run", "stages.vidoe")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no module named 'stages.vidoe' (did you mean 'stages.video'?)"
    ]
