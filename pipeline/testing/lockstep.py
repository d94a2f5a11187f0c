"""Driving a ``StageRunner`` one step at a time, when the test says.

``StageRunner.run()`` owns a stage's whole life (setup, subscribe, the loop, the graceful
shutdown), and the test harness must not reimplement it. So ``run()`` runs on a thread of its
own, but in lockstep with the caller: the runner's ``step`` is replaced, on the instance, by one
that waits for the caller's go, takes one real step, and reports back; the caller is blocked
meanwhile. Nothing runs concurrently with the test, and an error the runner raises comes back
to the caller's thread.

A ``StageRunner.start()`` / ``stop()`` split of ``run()`` would let all of this happen on the
caller's thread with no thread at all.
"""

from __future__ import annotations

import threading
from typing import Any

from pipeline.errors import PipelineError


class HarnessError(PipelineError):
    """The test harness could not do what was asked: a stage did not become idle in time, a
    step did not return, or the stage named is not in the pipeline."""


class Lockstep:
    def __init__(self, runner: Any, name: str, step_timeout_s: float) -> None:
        self.runner = runner
        self.name = name
        self._step_timeout = step_timeout_s
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._error: BaseException | None = None
        self._real_step = runner.step
        runner.step = self._gated_step  # run() calls it: one step per go
        self._thread = threading.Thread(target=self._run, name=f"stage-{name}", daemon=True)
        self._thread.start()

    def step(self) -> None:
        """One step of the runner's loop; re-raises what ``run()`` raised, if it ended."""
        if not self._thread.is_alive():
            self._raise_error()
            raise HarnessError(f"stage {self.name} has stopped")
        self._go.release()
        if not self._done.acquire(timeout=self._step_timeout):
            raise HarnessError(
                f"stage {self.name}: a step did not return within {self._step_timeout:g}s "
                "(a handler blocked?)"
            )
        self._raise_error()

    def stop(self, timeout_s: float) -> None:
        """Graceful shutdown, as a worker's: ``run()`` flushes, commits and leaves the group."""
        self.runner.stop_event.set()
        self._go.release()  # a parked step sees the stop and returns without stepping
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise HarnessError(f"stage {self.name} did not stop within {timeout_s:g}s")
        self._raise_error()

    def _gated_step(self) -> None:
        self._go.acquire()
        if not self.runner.stop_event.is_set():
            # If this raises, run() shuts down and _run reports the error, not this.
            self._real_step()
        self._done.release()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # handed to the caller's thread by step() or stop()
            self._error = exc
        finally:
            self._done.release()  # a caller waiting for a step learns that run() ended

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error
