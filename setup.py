"""The optional mypyc build of the hot path (``pipeline/compiled.py`` says which modules, and how
the pure-Python fallback is chosen at import).

Everything else about the package is in pyproject.toml. A plain ``pip install`` (a wheel, an
sdist, ``pip install -e .``) builds nothing here and runs pure Python. ``make install`` then
runs, with mypy from the dev dependencies::

    PIPELINE_MYPYC=1 .venv/bin/python setup.py build_ext --inplace

which compiles the modules next to their sources and, only once that succeeded, writes the
manifest of source hashes that lets ``pipeline.compiled`` use them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _compiled_module() -> Any:
    # By path: importing the package would import its dependencies.
    spec = importlib.util.spec_from_file_location("_compiled", ROOT / "pipeline" / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildHotPath(build_ext):
    """build_ext that drops the manifest first (a failed build leaves none, so nothing half
    built is used) and writes it after an in-place build."""

    def run(self) -> None:
        compiled = _compiled_module()
        compiled.MANIFEST.unlink(missing_ok=True)
        super().run()
        if self.inplace:
            compiled.write_manifest()


def _extensions() -> list[Any]:
    if os.environ.get("PIPELINE_MYPYC") != "1":
        return []
    from mypyc.build import mypycify

    compiled = _compiled_module()
    paths = [str(compiled.source_of(m).relative_to(ROOT)) for m in compiled.MODULES]
    return mypycify(paths, opt_level="3", group_name=compiled.GROUP)  # type: ignore[no-any-return]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildHotPath})
