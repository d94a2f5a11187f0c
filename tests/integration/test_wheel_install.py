"""The package works from its wheel alone: built, installed into a fresh virtualenv (nothing of
the repository on its path), ``pipeline demo`` runs the shipped examples on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(
    *command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [str(c) for c in command]
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, ROOT)
    (built,) = out.glob("kafka_pipeline-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", home)
    # This interpreter's pip installs into the new one: no ensurepip, and pip's cache is reused.
    pip = [sys.executable, "-m", "pip", "--python", home / "bin" / "python", "install"]
    run(*pip, "--quiet", "--disable-pip-version-check", wheel)
    return home


def test_the_wheel_holds_the_examples_license_and_types_but_no_repo_files(wheel: Path) -> None:
    """Schemas of the examples, py.typed and LICENSE are in; stages/ and tests/ are not."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "pipeline/examples/video.py" in names
    assert "pipeline/examples/schemas/video/VideoUploaded.avsc" in names
    assert "pipeline/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("stages/", "tests/", "schemas/"))]


def test_pipeline_demo_runs_from_the_installed_wheel(
    venv: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """From an empty directory, the installed `pipeline demo` publishes, drains and exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "PYTHON"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        PIPELINE_TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
        PIPELINE_TOPIC_PARTITIONS="2",
    )
    where = run(venv / "bin" / "python", "-c", "import pipeline; print(pipeline.__file__)",
                cwd=tmp_path, env=env)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv)
    demo = run(venv / "bin" / "pipeline", "demo", "--events", "3", "--once", cwd=tmp_path, env=env)
    assert "all stages drained" in demo.stdout
