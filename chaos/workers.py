"""Worker processes: ``python -m pipeline run chaos.stages --workers 1``, one per Popen, so a
fault hits exactly one worker. Each writes its log to ``<log dir>/worker-<n>.log``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = "chaos.stages"


@dataclass
class Worker:
    number: int  # 1, 2, 3, ... in start order over the whole run
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def handles_sigterm(self) -> bool:
        """Whether its SIGTERM handler is installed yet (``SigCgt`` in ``/proc/<pid>/status``,
        Linux). ``pipeline run`` installs it after validating and creating topics; a SIGTERM
        before that kills the process outright (exit -15), which says nothing about graceful
        shutdown."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                mask = next(line for line in status if line.startswith("SigCgt:")).split()[1]
        except (OSError, StopIteration):
            return False
        return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


@dataclass(frozen=True, slots=True)
class Stopping:
    """A worker sent SIGTERM, not yet reaped."""

    worker: Worker
    reason: str
    sent: float
    deadline: float


@dataclass(frozen=True, slots=True)
class Exit:
    """How a worker ended. ``code`` None: it did not exit in time and was killed."""

    number: int
    pid: int
    reason: str  # "sigterm", "scale_down", "final" or "unexpected"
    code: int | None
    seconds: float  # from the signal to the exit (0 for unexpected exits)
    log: Path


class WorkerPool:
    def __init__(self, env: dict[str, str], log_dir: Path, spec: str = SPEC) -> None:
        self._env = env
        self._log_dir = log_dir
        self._spec = spec
        self._live: list[Worker] = []
        self._started = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> Worker:
        self._started += 1
        log = self._log_dir / f"worker-{self._started}.log"
        cmd = [sys.executable, "-m", "pipeline", "run", self._spec, "--workers", "1"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, env=self._env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        worker = Worker(self._started, proc, log)
        self._live.append(worker)
        return worker

    def live(self) -> list[Worker]:
        return list(self._live)

    def kill(self, worker: Worker) -> None:
        self._live.remove(worker)
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(30)

    def begin_terminate(self, worker: Worker, reason: str, timeout_s: float) -> Stopping:
        """SIGTERM without waiting; ``finish_terminate`` reaps it."""
        self._live.remove(worker)
        worker.proc.send_signal(signal.SIGTERM)
        now = time.monotonic()
        return Stopping(worker, reason, now, now + timeout_s)

    def finish_terminate(self, stopping: Stopping) -> Exit | None:
        """The exit once it happened (SIGKILL past the deadline: code None), else None."""
        worker = stopping.worker
        if worker.proc.poll() is None and time.monotonic() < stopping.deadline:
            return None
        return self._wait_exit(worker, stopping.reason, stopping.sent, 0.0)

    def terminate_all(self, workers: list[Worker], reason: str, timeout_s: float) -> list[Exit]:
        """SIGTERM every one at once, then wait for each."""
        sent = time.monotonic()
        for worker in workers:
            self._live.remove(worker)
            worker.proc.send_signal(signal.SIGTERM)
        return [self._wait_exit(w, reason, sent, timeout_s) for w in workers]

    def _wait_exit(self, worker: Worker, reason: str, sent: float, timeout_s: float) -> Exit:
        left = max(0.0, sent + timeout_s - time.monotonic())
        try:
            code: int | None = worker.proc.wait(left)
        except subprocess.TimeoutExpired:
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(30)
            code = None
        return Exit(worker.number, worker.pid, reason, code, time.monotonic() - sent, worker.log)

    def reap(self) -> list[Exit]:
        """Workers that exited without being told to (crashes); they leave the pool."""
        gone = [w for w in self._live if w.proc.poll() is not None]
        for worker in gone:
            self._live.remove(worker)
        return [Exit(w.number, w.pid, "unexpected", w.proc.returncode, 0.0, w.log) for w in gone]

    def kill_all(self) -> None:
        """Last resort on an aborted run: nothing of ours keeps running."""
        for worker in self.live():
            self.kill(worker)
