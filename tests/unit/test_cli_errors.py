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
    base.update(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", PYTHONPATH=str(ROOT), **env)
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
