"""``pipeline run --workers N``: N worker processes, each restarted when it dies.

A worker that dies (killed, crashed, or exited while nobody asked it to stop) is logged at once
with its exit status and started again after a backoff: 1 s, doubling per quick death up to
30 s; a worker that stayed up ``healthy_after_s`` starts again from 1 s. ``loop_deaths`` deaths
within ``loop_window_s`` mark it crash-looping: one error line, and restarts every ``max_s``
until it stays up. Exit status 2 (bad configuration or input) is fatal for the supervisor: the
configuration was validated before any worker started, so a worker that still finds it bad
will find it bad again on every restart; the supervisor stops the others and exits 2.

On SIGINT/SIGTERM the supervisor asks every worker to stop (SIGTERM: each shuts down
gracefully) and waits ``shutdown_timeout_s`` + 10 s for them, then kills what is left. Its exit
code is 0 if every worker then exited 0, else 1.

The restart bookkeeping (``RestartTracker``) is pure, on an injectable clock.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.backoff import Backoff, Clock

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

log = logging.getLogger("pipeline.supervisor")
CONFIG_ERROR_EXIT = 2  # what `pipeline run` exits with on bad configuration or input
POLL_S = 0.5  # longest the loop sleeps: a stop request is seen within this


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0  # up this long: the next death starts the backoff afresh
    loop_deaths: int = 5  # this many deaths within loop_window_s: crash-looping
    loop_window_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Death:
    restart_in_s: float
    crash_looping: bool
    loop_started: bool  # this death made it crash-looping (report it once)


class RestartTracker:
    """One worker slot's deaths: how long to wait before restarting it, and whether it is
    crash-looping."""

    def __init__(self, policy: RestartPolicy, clock: Clock = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._backoff = Backoff(policy.initial_s, policy.max_s, 2.0, jitter=0.0)
        self._quick_deaths = 0  # in a row, each before healthy_after_s of uptime
        self._deaths: deque[float] = deque()
        self._started_at = clock()
        self.crash_looping = False

    def started(self) -> None:
        self._started_at = self._clock()

    def died(self) -> Death:
        now = self._clock()
        policy = self._policy
        if now - self._started_at >= policy.healthy_after_s:
            self._quick_deaths = 0
            self.crash_looping = False
        self._quick_deaths += 1
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > policy.loop_window_s:
            self._deaths.popleft()
        was_looping = self.crash_looping
        self.crash_looping = self.crash_looping or len(self._deaths) >= policy.loop_deaths
        delay = policy.max_s if self.crash_looping else self._backoff.delay(self._quick_deaths)
        return Death(delay, self.crash_looping, self.crash_looping and not was_looping)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def set_process_title(title: str) -> None:
    """Name this process in ps/top (``/proc/<pid>/cmdline``, and ``comm`` where possible)."""
    try:
        import setproctitle
    except ImportError:  # a dependency, but a missing title must never stop a worker
        _set_comm(title)
        return
    setproctitle.setproctitle(title)


def _set_comm(title: str) -> None:
    import ctypes  # only without setproctitle

    try:
        libc = ctypes.CDLL(None)
        pr_set_name = 15
        libc.prctl(pr_set_name, title.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("cannot set the process title")


class Supervisor:
    """Keeps ``workers`` processes from ``spawn(index)`` running until ``stop`` is set."""

    def __init__(
        self,
        spawn: Callable[[int], BaseProcess],
        workers: int,
        stop: threading.Event,
        shutdown_timeout_s: float,
        policy: RestartPolicy | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._spawn = spawn
        self._stop = stop
        self._shutdown_timeout = shutdown_timeout_s
        self._clock = clock
        policy = policy or RestartPolicy()
        self._policy = policy
        self._trackers = [RestartTracker(policy, clock) for _ in range(workers)]
        self._procs: dict[int, BaseProcess] = {}
        self._restart_at: dict[int, float] = {}
        self._fatal = False
        # Told the pid of every worker that exited (died, or stopped at the end).
        self.on_death: Callable[[int | None], None] | None = None

    def run(self) -> int:
        for index in range(len(self._trackers)):
            self._start(index)
        while not self._stop.is_set() and not self._fatal:
            self._reap()
            self._restart_due()
            self._sleep()
        return self._stop_all()

    def _start(self, index: int) -> None:
        proc = self._spawn(index)
        proc.start()
        self._procs[index] = proc
        self._trackers[index].started()
        log.info("worker %d started (pid %s)", index, proc.pid)

    def _reap(self) -> None:
        for index, proc in list(self._procs.items()):
            if proc.is_alive() or self._stop.is_set():
                continue
            del self._procs[index]
            self._died(index, proc)

    def _died(self, index: int, proc: BaseProcess) -> None:
        if self.on_death is not None:
            self.on_death(proc.pid)
        code = proc.exitcode
        if code == CONFIG_ERROR_EXIT:
            log.error("worker %d (pid %s) %s (a configuration error, which restarting cannot "
                      "fix); stopping every worker",
                      index, proc.pid, describe_exit(code))  # fmt: skip
            self._fatal = True
            return
        death = self._trackers[index].died()
        log.error("worker %d (pid %s) %s; restarting it in %.0fs",
                  index, proc.pid, describe_exit(code), death.restart_in_s)  # fmt: skip
        if death.loop_started:
            log.error("worker %d is crash-looping (%d deaths within %.0fs); restarting it every "
                      "%.0fs until it stays up", index, self._policy.loop_deaths,
                      self._policy.loop_window_s, death.restart_in_s)  # fmt: skip
        self._restart_at[index] = self._clock() + death.restart_in_s

    def _restart_due(self) -> None:
        now = self._clock()
        for index, at in list(self._restart_at.items()):
            if at <= now and not self._stop.is_set():
                del self._restart_at[index]
                self._start(index)

    def _sleep(self) -> None:
        """Until a worker dies, a restart is due, or POLL_S (a stop request sets the event from
        a signal handler, seen at the next check)."""
        timeout = POLL_S
        if self._restart_at:
            timeout = max(0.0, min(timeout, min(self._restart_at.values()) - self._clock()))
        sentinels = [p.sentinel for p in self._procs.values()]
        if sentinels:
            # multiprocessing loads with a supervisor: a single worker (this module's process
            # titles) needs none of it.
            from multiprocessing.connection import wait as wait_for_sentinels

            wait_for_sentinels(sentinels, timeout)
        else:
            self._stop.wait(timeout)

    def _stop_all(self) -> int:
        procs = list(self._procs.items())
        for _, proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker shuts down gracefully
        deadline = time.monotonic() + self._shutdown_timeout + 10
        for index, proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker %d (pid %s) did not stop in time; killing it", index, proc.pid)
                proc.kill()
                proc.join(5)
        if self.on_death is not None:
            for _, proc in procs:
                self.on_death(proc.pid)
        codes = {index: proc.exitcode for index, proc in procs}
        log.info("workers exited: %s", ", ".join(
            f"{index}: {describe_exit(code)}" for index, code in sorted(codes.items())
        ) or "none running")  # fmt: skip
        if self._fatal:
            return CONFIG_ERROR_EXIT
        return 0 if all(code == 0 for code in codes.values()) else 1
