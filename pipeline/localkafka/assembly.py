"""Gathering the broker classpath from Maven Central, once per Kafka version.

Steps, each safe to interrupt:

1. take an exclusive lock on the version's dist dir (two pytest sessions may start together);
2. return at once when ``libs/.assembled`` exists;
3. copy this package's ``pom.xml`` next to the jars and let Maven copy the runtime
   dependencies into ``libs.partial/``, streaming its output so a first run visibly progresses;
4. write the marker into ``libs.partial/`` and rename it to ``libs/``: a half-finished download
   never looks complete.

Maven keeps its own cache in ``~/.m2``, so re-assembling (another version, a wiped ``.kafka``)
is offline-fast.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from pipeline.errors import BrokerUnavailableError

MARKER = ".assembled"
# Maven 3.8's launcher prints colour resets even in batch mode with colours off.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
Progress = Callable[[str], None]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held across processes (released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_assembled(libs_dir: Path) -> bool:
    return (libs_dir / MARKER).is_file()


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerUnavailableError(
            "no `java` found (set JAVA_HOME or put Java 17+ on PATH) to run a local Kafka"
        )
    return found


def _find_mvn() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise BrokerUnavailableError(
            "no `mvn` found on PATH; Maven 3.6+ is needed once to download the Kafka jars"
        )
    return found


def _run_maven(argv: list[str], cwd: Path, progress: Progress) -> None:
    last = deque[str](maxlen=40)
    with subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = _ANSI.sub("", line.rstrip("\n"))
            last.append(line)
            progress(line)
    if proc.returncode != 0:
        output = "\n".join(last)
        raise BrokerUnavailableError(
            f"Maven could not assemble the Kafka jars (exit {proc.returncode})\n{output}"
        )


def assemble(dist_dir: Path, version: str, progress: Progress) -> Path:
    """Make ``<dist_dir>/libs`` hold Kafka ``version``'s classpath; returns that directory."""
    libs = dist_dir / "libs"
    if is_assembled(libs):
        return libs
    with file_lock(dist_dir / ".lock"):
        if is_assembled(libs):  # another process finished while we waited for the lock
            return libs
        mvn = _find_mvn()
        partial = dist_dir / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)  # an unmarked libs/ is a broken earlier run
        pom = dist_dir / "pom.xml"
        pom.write_text(
            resources.files("pipeline.localkafka").joinpath("pom.xml").read_text(encoding="utf-8"),
            encoding="utf-8",
        )
        progress(f"Downloading Apache Kafka {version} jars from Maven Central (first run only)...")
        _run_maven(
            [
                mvn,
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(pom),
                f"-Dkafka.version={version}",
                f"-Dlibs.dir={partial}",
                "package",
            ],
            cwd=dist_dir,
            progress=progress,
        )
        jars = sorted(p.name for p in partial.glob("*.jar"))
        if not any(name.startswith(f"kafka_2.13-{version}") for name in jars):
            raise BrokerUnavailableError(
                f"Maven finished but no kafka_2.13-{version}.jar in {partial}"
            )
        (partial / MARKER).write_text("\n".join([f"kafka {version}", *jars]) + "\n")
        partial.rename(libs)
        progress(f"Kafka {version}: {len(jars)} jars in {libs}")
    return libs
