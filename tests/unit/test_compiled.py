"""Which hot path runs: the mypyc-compiled modules or their pure-Python sources, all of them the
same way, chosen as ``pipeline.compiled`` says (env var, build present, build fresh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline import compiled

ROOT = Path(__file__).resolve().parents[2]


def test_every_hot_path_module_runs_the_way_the_process_chose() -> None:
    """All compiled or all pure (they call each other natively: a mix would break), matching
    ``active()``; CI says which one it expects (PIPELINE_EXPECT_COMPILED=1, or the env var)."""
    __import__("pipeline.runner")  # imports every module of the hot path
    kinds = {m: compiled.is_compiled(sys.modules[m]) for m in compiled.MODULES}
    assert set(kinds.values()) == {compiled.active()}, kinds
    if os.environ.get(compiled.ENV, "") not in ("", "0"):
        assert not compiled.active() and compiled.reason() == f"{compiled.ENV} is set"
    elif os.environ.get("PIPELINE_EXPECT_COMPILED") == "1":
        assert compiled.active(), f"expected the compiled hot path, got: {compiled.reason()}"


def _manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    sources = {m: compiled.digest(compiled.source_of(m)) for m in compiled.MODULES}
    data: dict[str, Any] = {"suffix": suffix, "sources": sources, **changes}
    path = tmp_path / "_hotpath.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(compiled, "MANIFEST", path)
    monkeypatch.delenv(compiled.ENV, raising=False)


def test_an_edited_source_makes_the_build_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module whose source no longer hashes as at the build: pure Python, naming the file."""
    _manifest(tmp_path, monkeypatch)
    fresh = compiled._why_not_compiled()
    if fresh is not None and not fresh.startswith("stale"):
        pytest.skip(f"no compiled build here ({fresh})")
    assert fresh is None
    sources = {m: compiled.digest(compiled.source_of(m)) for m in compiled.MODULES}
    sources["pipeline.offsets"] = "0" * 64
    _manifest(tmp_path, monkeypatch, sources=sources)
    assert compiled._why_not_compiled() == "stale: pipeline/offsets.py changed since the build"


def test_no_build_another_python_or_the_env_var_mean_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "MANIFEST", tmp_path / "missing.json")
    monkeypatch.delenv(compiled.ENV, raising=False)
    assert compiled._why_not_compiled() == "not built"
    _manifest(tmp_path, monkeypatch, suffix=".cpython-399-x86_64-linux-gnu.so")
    assert compiled._why_not_compiled() == (
        f"built for .cpython-399-x86_64-linux-gnu.so, not {compiled_suffix()}"
    )
    monkeypatch.setenv(compiled.ENV, "1")
    assert compiled._why_not_compiled() == f"{compiled.ENV} is set"


def compiled_suffix() -> str:
    import importlib.machinery

    return importlib.machinery.EXTENSION_SUFFIXES[0]


_CHILD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("hp", "pipeline/compiled.py")
hp = importlib.util.module_from_spec(spec); spec.loader.exec_module(hp)
hp.MANIFEST = hp.Path(sys.argv[1])
hp.select()
import pipeline.context, pipeline.runner
print(json.dumps([hp.reason(), pipeline.context.__file__, pipeline.runner.__file__]))
"""


def test_a_stale_build_loads_the_sources_and_warns(tmp_path: Path) -> None:
    """In a fresh interpreter: the finder loads the edited sources, never the old extensions,
    and the warning says which file and how to rebuild."""
    stale = tmp_path / "_hotpath.json"
    sources = {m: "0" * 64 for m in compiled.MODULES}
    stale.write_text(json.dumps({"suffix": compiled_suffix(), "sources": sources}))
    for module in compiled.MODULES:  # a build that was there, for an older source
        if not compiled.source_of(module).with_suffix(compiled_suffix()).exists():
            pytest.skip("no compiled build here: nothing could be stale")
    env = {k: v for k, v in os.environ.items() if k != compiled.ENV}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(stale)], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    reason, context_file, runner_file = json.loads(out.stdout)
    assert reason == "stale: pipeline/context.py changed since the build"
    assert context_file.endswith("context.py") and runner_file.endswith("runner.py")
    assert "pipeline/context.py changed since the build" in out.stderr
    assert "make install" in out.stderr


def test_the_env_var_runs_the_sources_in_a_fresh_interpreter() -> None:
    env = os.environ | {compiled.ENV: "1"}
    code = "import pipeline.outputs as o, pipeline.compiled as c; print(c.reason(), o.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    reason, _, path = out.stdout.strip().rpartition(" ")
    assert reason == f"{compiled.ENV} is set" and path.endswith("pipeline/outputs.py")
