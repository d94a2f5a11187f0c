"""The optional mypyc-compiled hot path, and the pure-Python fallback.

``make install`` compiles the modules in ``MODULES`` with mypyc (``setup.py``; one shared
library, ``pipeline/_hotpath__mypyc*.so``, and one small extension next to each module) and
records a hash of each module's source in ``pipeline/_hotpath.json``. When ``pipeline`` is
imported, this module decides once, for all of them together (compiled modules call each
other natively, so they cannot be mixed with pure ones):

- ``PIPELINE_PURE_PYTHON=1`` (or any value but ``0`` / empty): pure Python;
- no build for this interpreter (a wheel, another Python, a failed build): pure Python;
- a source whose hash differs from the build's (a module edited since, a branch switched):
  pure Python, with a warning that says which file and how to rebuild. Old compiled code never
  runs in place of an edited source.
- otherwise the compiled modules.

Pure Python is then forced by a finder ahead of the normal ones that loads those modules from
their ``.py`` files (the import system would otherwise prefer the extensions). Both paths run
the same source, so they behave the same; ``make test`` runs the unit tests on both in CI.

Standard library only: it runs before anything else of the package (``pipeline/__init__.py``
imports it first), and ``setup.py`` and the Makefile read ``MODULES`` from it by path
(``python pipeline/compiled.py`` prints the sources).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The per-message path (decode → gates → token → handler call → encode → produce → settle),
# as profiled by ``python -m bench.instructions``. Left pure, as mypyc changes what they rely on:
# ``hookcalls`` (tests read its closures' ``__name__``), ``stats`` (a class-body alias),
# ``serde.single_object`` (a runtime-checkable protocol), ``serde.codec`` (its compiled
# ``except OutOfRange`` caught fastavro's ValueErrors too).
MODULES = (
    "pipeline.context",
    "pipeline.execute",
    "pipeline.gates",
    "pipeline.headers",
    "pipeline.invoke",
    "pipeline.offsets",
    "pipeline.outputs",
    "pipeline.parts",
    "pipeline.runner",
    "pipeline.serde.guard",
)
GROUP = "pipeline._hotpath"  # the shared library: pipeline/_hotpath__mypyc.<ext suffix>
ENV = "PIPELINE_PURE_PYTHON"
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
MANIFEST = PACKAGE_DIR / "_hotpath.json"

log = logging.getLogger("pipeline.compiled")


def source_of(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest() -> None:
    """Called by ``setup.py`` once the extensions are built in place."""
    sources = {m: digest(source_of(m)) for m in MODULES}
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    MANIFEST.write_text(json.dumps({"suffix": suffix, "sources": sources}, indent=1) + "\n")


def _pure_requested() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def _why_not_compiled() -> str | None:
    """None when the build is there and fresh, else why the pure modules run instead."""
    if _pure_requested():
        return f"{ENV} is set"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return "not built"
    if manifest.get("suffix") != suffix:
        return f"built for {manifest.get('suffix')}, not {suffix}"
    sources = manifest.get("sources", {})
    for module in MODULES:
        if not source_of(module).with_suffix(suffix).exists():
            return f"{module} is not built"
        if sources.get(module) != digest(source_of(module)):
            return f"stale: {source_of(module).relative_to(ROOT)} changed since the build"
    if not (PACKAGE_DIR / f"{GROUP.rpartition('.')[2]}__mypyc{suffix}").exists():
        return "the shared library is missing"
    return None


class _PureFinder(importlib.abc.MetaPathFinder):
    """Loads the hot-path modules from their sources, ahead of the compiled extensions."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(fullname))


_REASON = "undecided"


def select() -> None:
    """Decide, once per process, before any hot-path module is imported."""
    global _REASON
    if _REASON != "undecided":
        return
    reason = _why_not_compiled()
    loaded = [m for m in MODULES if m in sys.modules]
    if loaded:  # too late to choose (imported before pipeline?): take what is there
        reason = None if is_compiled(sys.modules[loaded[0]]) else "imported before pipeline"
    elif reason is not None:
        sys.meta_path.insert(0, _PureFinder())
        if reason.startswith("stale"):
            log.warning("compiled hot path %s; running pure Python (`make install` rebuilds)",
                        reason.partition(": ")[2])  # fmt: skip
    _REASON = reason or "compiled"


def active() -> bool:
    """True when the compiled hot path runs in this process."""
    return _REASON == "compiled"


def reason() -> str:
    """``compiled``, or why the pure-Python modules run (``not built``, ``stale: ...``, ...)."""
    return _REASON


def is_compiled(module: ModuleType) -> bool:
    return not str(getattr(module, "__file__", "")).endswith(".py")


if __name__ == "pipeline.compiled":  # imported first by pipeline/__init__.py
    select()
elif __name__ == "__main__":  # the Makefile's list of sources the build depends on
    print(" ".join(str(source_of(m).relative_to(ROOT)) for m in MODULES))
