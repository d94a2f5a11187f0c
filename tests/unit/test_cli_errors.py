"""Bad input to the CLI is a clear message and exit code 2, before anything connects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    # An unroutable port: if anything tried to connect, the test would hang, not pass.
    base.update({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PYTHONPATH": str(ROOT)})
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=base,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_malformed_toml_config_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline\nbatch_size = 3")
    result = cli("run", "stages.video", "--config", str(bad))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr


def test_unknown_setting_in_config_file_gets_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[pipeline]\nbatch_sise = 3\n")
    result = cli("run", "stages.video", "--config", str(cfg))
    assert result.returncode == 2
    assert "unknown setting 'batch_sise'" in result.stderr and "batch_size" in result.stderr


def test_misspelt_environment_variable_gets_a_suggestion() -> None:
    result = cli("run", "stages.video", PIPELINE_BATCH_SIZ="10")
    assert result.returncode == 2
    assert "PIPELINE_BATCH_SIZ" in result.stderr and "PIPELINE_BATCH_SIZE" in result.stderr


def test_out_of_range_setting_names_the_field() -> None:
    result = cli("run", "stages.video", PIPELINE_BATCH_SIZE="0")
    assert result.returncode == 2
    assert "batch_size" in result.stderr


def test_run_an_unknown_module() -> None:
    result = cli("run", "stages.nope")
    assert result.returncode == 2
    assert "no module named 'stages.nope'" in result.stderr


def test_publish_rejects_invalid_json() -> None:
    result = cli("publish", "video.uploaded", "{not json")
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


def test_every_command_has_help() -> None:
    for command in (
        ["--help"],
        ["run", "--help"],
        ["publish", "--help"],
        ["topics", "--help"],
        ["topics", "create", "--help"],
        ["topics", "list", "--help"],
        ["demo", "--help"],
    ):
        result = cli(*command)
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage" in result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a bad-input exit (code 2, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def run_module(tmp_path: Path, source: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "user_stages.py").write_text(source)
    return cli("run", "user_stages", PYTHONPATH=f"{ROOT}:{tmp_path}", **env)


def test_a_stage_module_with_a_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    line = one_line_error(run_module(tmp_path, "import os\n\ndef broken(:\n    pass\n"))
    assert f"{tmp_path / 'user_stages.py'}, line 3" in line and "invalid syntax" in line


def test_a_stage_module_whose_import_fails_names_file_line_and_error(tmp_path: Path) -> None:
    line = one_line_error(run_module(tmp_path, "import os\nimport no_such_dependency_xyz\n"))
    assert f"{tmp_path / 'user_stages.py'}, line 2" in line
    assert "No module named 'no_such_dependency_xyz'" in line


def test_a_stage_module_that_raises_at_import_names_file_line_and_error(tmp_path: Path) -> None:
    line = one_line_error(run_module(tmp_path, "X = 1\nraise RuntimeError('no config')\n"))
    assert f"{tmp_path / 'user_stages.py'}, line 2" in line
    assert "RuntimeError: no config" in line


def test_a_misspelt_key_field_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    """All problems of a module at once: the key typo does not hide the unknown schema."""
    source = """
from datetime import datetime
from pipeline import Event, Stage, Topic

class Uploaded(Event, schema="video.NoSuchSchema"):
    video_id: str

UPLOADED = Topic("video.uploaded", Uploaded, key="vidoe_id")

class Transcode(Stage):
    consumes = UPLOADED
    def handle(self, event, ctx):
        pass

STAGES = [Transcode]
"""
    result = run_module(tmp_path, source)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "key field 'vidoe_id' is not a field of Uploaded" in result.stderr
    assert "no schema named 'video.NoSuchSchema'" in result.stderr


def test_producer_config_that_is_not_json_is_rejected() -> None:
    line = one_line_error(cli("run", "stages.video", PIPELINE_PRODUCER_CONFIG="linger.ms=5"))
    assert "PIPELINE_PRODUCER_CONFIG is not valid JSON" in line


def test_an_unknown_librdkafka_option_is_rejected_before_connecting() -> None:
    """Checked at startup, before topics are created: with an unreachable broker, the option
    is what is reported, not the broker."""
    result = cli("run", "stages.video", PIPELINE_PRODUCER_CONFIG='{"no.such.option": "1"}')
    line = one_line_error(result)
    assert "producer_config" in line and 'No such configuration property: "no.such.option"' in line


def test_an_invalid_consumer_option_value_is_rejected_before_connecting() -> None:
    result = cli("run", "stages.video", PIPELINE_CONSUMER_CONFIG='{"fetch.wait.max.ms": "soon"}')
    line = one_line_error(result)
    assert "consumer_config" in line and "fetch.wait.max.ms" in line


def test_an_unreachable_broker_is_a_short_log_and_one_clear_last_line() -> None:
    """librdkafka's reconnect attempts (one every ~50 ms) are logged once, not ~290 times."""
    result = cli("run", "stages.video")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) < 20, result.stderr
    assert lines[-1].startswith("error: cannot reach Kafka at 127.0.0.1:1"), result.stderr
    assert "Connection refused" in lines[-1]
