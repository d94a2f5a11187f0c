"""Contender processes: start one, wait for its READY / RESULT lines, stop it.

Every contender is its own process so its CPU time and RSS are its own. Its stdout and stderr are
read together (faust logs what it prints), line by line on a thread, so a silent or hung process
is noticed at a deadline instead of blocking the run.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def module(python: Path, name: str, args: list[str]) -> list[str]:
    return [str(python), "-m", name, *args]


class Proc:
    def __init__(self, cmd: list[str], stdin: bool = False) -> None:
        env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.name = next((a for a in cmd if a.startswith("bench.")), cmd[0]).rsplit(".", 1)[-1]
        self.popen = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=30)
        self.ready = False
        self.started = time.monotonic()
        self.ready_s: float | None = None  # from the start to its READY line, when it came
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if self.ready_s is None and "READY" in line:
                self.ready_s = round(time.monotonic() - self.started, 3)
            self.tail.append(line.rstrip())
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, word: str, timeout_s: float) -> str | None:
        """The first line containing ``word`` (READY or RESULT), or None at EOF or timeout."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                return None
            if word in line:
                if word == "READY":
                    self.ready = True
                return line
        return None

    def result(self, timeout_s: float) -> dict[str, Any]:
        line = self.wait_for("RESULT ", timeout_s)
        if line is None:
            return {"error": self.describe_failure(timeout_s)}
        return dict(json.loads(line[line.index("RESULT ") + len("RESULT ") :]))

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text)
        self.popen.stdin.flush()

    def describe_failure(self, timeout_s: float) -> str:
        code = self.popen.poll()
        what = f"exited with {code}" if code is not None else f"no result within {timeout_s:.0f}s"
        return f"{self.name} {what}; last output: " + " | ".join(list(self.tail)[-6:])

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL after ``grace_s``."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def wait_exit(proc: Proc, timeout_s: float = 20.0) -> None:
    """After its RESULT a drain contender shuts down by itself; make sure it does."""
    try:
        proc.popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.stop(5)
