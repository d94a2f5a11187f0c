"""Running stages: one thread per stage in a worker process, N worker processes per command.

A worker stops gracefully on SIGINT/SIGTERM: every runner stops fetching, waits for its outputs
to be acknowledged, commits, and leaves its group; the process then exits 0. A runner that
crashes stops the whole worker (exit 1), because a half-running worker hides failures: let the
supervisor (systemd, Kubernetes, `pipeline run --workers`) restart it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, Protocol

from pipeline import bounded
from pipeline.app import Pipeline, default_worker_id
from pipeline.config import Settings
from pipeline.errors import ConfigError, DeclarationError, SchemaError
from pipeline.hookcalls import call_each
from pipeline.hooks import WorkerInfo
from pipeline.progress import ProgressLog, log_names
from pipeline.runner import StageRunner
from pipeline.startup import TopicsJob, TopicsStopped
from pipeline.stop import MIRROR_SLICE_S, StopEvent, own_stop
from pipeline.supervisor import Supervisor, set_process_title

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from pipeline.scheduler import Scheduler  # loaded by Pipeline.scheduler, with schedules

log = logging.getLogger("pipeline.worker")
# Once its stages stopped, a worker process exits within this long, whatever threads remain.
EXIT_GRACE_S = 3.0
_monotonic = time.monotonic
# Once the worker's stop is set, its StopMirror ends within MIRROR_SLICE_S: ample for that.
MIRROR_JOIN_S = 20 * MIRROR_SLICE_S


class Joinable(Protocol):
    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool: ...


class Worker:
    """All stages of a Pipeline, each on its own thread with its own consumer and producer."""

    def __init__(
        self,
        pipeline: Pipeline,
        worker_id: str | None = None,
        stop: threading.Event | None = None,
        topics: TopicsJob | None = None,
    ) -> None:
        """``stop``: an event that stops the worker when set (from any thread); a plain
        ``threading.Event`` is mirrored into the worker's own ``stop_event`` and set when the
        worker stops (``pipeline.stop.StopMirror``: a signal handler must not set a plain one).
        ``topics``: ``Pipeline.start_topics``' job, if it may still be ensuring the topics
        (the stages' consumers join meanwhile, and hand out nothing before it is done)."""
        self.pipeline = pipeline
        self._topics = topics
        self.stop_event, self._mirror = own_stop(stop)
        if topics is not None:
            topics.stop = self.stop_event  # a stop ends the stages' wait for it
        self.runners: list[StageRunner] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._worker_id = worker_id or default_worker_id()
        self._start_told = False  # on_worker_start told: on_worker_stop is owed
        self._stopped_told = False

    @property
    def info(self) -> WorkerInfo:
        names = tuple(plan.name for plan in self.pipeline.plans)
        return WorkerInfo(self._worker_id, names)

    def start(self) -> None:
        """Start a thread per stage and the schedules' thread. Should making one fail (a
        runner's clients refused, say), what already began is stopped before the error
        reaches the caller, who has no worker to stop: the stages started stop gracefully,
        the mirror of a user's plain Event ends (that event is set, as at any stop), and the
        hooks told ``on_worker_start`` are told ``on_worker_stop``."""
        try:
            if self._mirror is not None:
                self._mirror.start()
            self._start_told = True
            call_each(self.pipeline.hooks, "on_worker_start", self.info)  # only BaseExceptions
            self._start_stages()
            self._start_scheduler()
        except BaseException:
            self._stop_begun()
            raise

    def _start_stages(self) -> None:
        for plan in self.pipeline.plans:
            runner = self.pipeline.runner(plan, self._worker_id, topics=self._topics)
            runner.stop_event = self.stop_event
            thread = threading.Thread(target=self._run, args=(runner,), name=plan.name, daemon=True)
            thread.start()  # then kept: a thread that never started cannot be joined
            self.runners.append(runner)
            self._threads.append(thread)

    def _stop_begun(self) -> None:
        """What a failed ``start`` began stops: the stop reaches the stages and the mirror."""
        self.stop_event.set()
        if not self.join(self._grace_s):
            log.error("stages did not stop within %.0fs of a failed start", self._grace_s)
        if self._mirror is not None:
            if not self._mirror.join(MIRROR_JOIN_S):
                log.error("the mirror of the stop event did not end")
            # Set here too, whether or not the mirror ran or ended in time: the caller gets the
            # error with their event set (never in a signal handler, so their lock is free).
            self._mirror.theirs.set()

    @property
    def _grace_s(self) -> float:
        """How long the stages get to stop: their shutdown timeout, and some slack."""
        return self.pipeline.settings.shutdown_timeout_s + 5

    def _start_scheduler(self) -> None:
        """Schedules fire from a thread of their own, never from a stage's loop."""
        scheduler = self.pipeline.scheduler(self._worker_id)
        if scheduler is None:
            return
        scheduler.stop_event = self.stop_event
        thread = threading.Thread(target=self._run_scheduler, args=(scheduler,),
                                  name="schedules", daemon=True)  # fmt: skip
        thread.start()
        self._threads.append(thread)

    def _run_scheduler(self, scheduler: Scheduler) -> None:
        try:
            scheduler.run()
        except BaseException as exc:
            log.exception("the scheduler crashed; stopping the worker")
            self._errors.append(exc)
            self.stop_event.set()

    def _run(self, runner: StageRunner) -> None:
        try:
            runner.run()
        except BaseException as exc:
            if self._topics is not None and exc is self._topics.error:
                # Said once by the job, and by ``run_workers`` (one line, its exit code).
                log.error("stage %s stopped: its topics were not ensured", runner.plan.name)
            else:
                log.exception("stage %s crashed; stopping the worker", runner.plan.name)
            self._errors.append(exc)
            self.stop_event.set()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """True when every runner thread has finished, waiting at most ``timeout_s`` in all."""
        done = join_all(self._threads, timeout_s)
        if done and self._start_told and not self._stopped_told:
            self._stopped_told = True
            call_each(self.pipeline.hooks, "on_worker_stop", self.info)
        return done

    @property
    def failed(self) -> bool:
        return bool(self._errors)

    def run_until_signalled(self, parent_pid: int | None = None) -> int:
        """Run in the foreground until SIGINT/SIGTERM; return the process exit code.

        Callers that validate and create topics first install the handlers before doing so
        (``stop_on_signals``) and pass their event in, so a SIGTERM during startup is a clean
        exit too. With ``parent_pid`` (a child of ``pipeline run --workers N``), the worker also
        stops gracefully when that process is gone (killed with -9, say), instead of running on
        as an orphan nobody supervises."""
        if threading.current_thread() is threading.main_thread():
            _on_stop_signals(self.stop_event.set)  # a StopEvent, whatever the caller passed
        if self._mirror is not None:
            self._mirror.start()  # their event set already: ours is, now
        if self.stop_event.is_set():
            return 0  # asked to stop before anything started
        grace = self._grace_s
        self.start()  # a start that raises has stopped what it began (its topics job failed)
        while not self.stop_event.wait(0.5):
            if parent_pid is not None and os.getppid() != parent_pid:
                log.error("supervisor (pid %d) is gone: shutting down", parent_pid)
                self.stop_event.set()
        if not self.join(grace):
            log.error("stages did not stop within %.0fs; exiting without them", grace)
            abandon_process(1)
        return 1 if self.failed else 0


def join_all(
    threads: Sequence[Joinable], timeout_s: float | None, clock: Callable[[], float] = _monotonic
) -> bool:
    """Join ``threads`` within ``timeout_s`` in all (None: for as long as it takes); True when
    every one has finished. Each join gets only what is left of the one deadline: joining each
    thread with the whole timeout let a worker whose stages were stuck (a broker not answering
    their final commits) overrun its grace period once per stuck stage."""
    deadline = None if timeout_s is None else clock() + timeout_s
    for thread in threads:
        thread.join(None if deadline is None else max(deadline - clock(), 0.0))
    return not any(t.is_alive() for t in threads)


def abandon_process(code: int) -> NoReturn:
    """Exit now, skipping interpreter shutdown. Runner threads still inside librdkafka (a flush
    to a broker that is gone, say) would otherwise be torn down mid-call during finalization,
    which can crash the process instead of exiting with ``code``. Nothing uncommitted is lost:
    it is redelivered."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_within(code: int, grace_s: float = EXIT_GRACE_S) -> int:
    """Return ``code`` for a normal exit, and make sure it happens: should the interpreter's
    shutdown still wait ``grace_s`` later (a non-daemon thread the stage's code started, stuck
    in a call that never returns), the process exits with ``code`` anyway."""

    def force() -> None:
        stuck = [t.name for t in threading.enumerate() if not t.daemon and t.is_alive()]
        log.warning("still exiting %.0fs after the stages stopped (waiting for threads: %s); "
                    "exiting now", grace_s, ", ".join(stuck))  # fmt: skip
        abandon_process(code)

    if bounded.abandoned():  # a close or commit given up on is still inside librdkafka
        log.warning("a client call given up on at the shutdown timeout is still running; "
                    "exiting without the interpreter's shutdown")  # fmt: skip
        abandon_process(code)
    timer = threading.Timer(grace_s, force)
    timer.daemon = True
    timer.start()
    return code


def _on_stop_signals(callback: object) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "received %s: finishing work in flight, committing, leaving the group",
            signal.Signals(signum).name,
        )
        callback()  # type: ignore[operator]

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How ``pipeline run`` reports: its log level (None: ``PIPELINE_LOG_LEVEL``, else INFO)
    and the interval of its progress lines (None: ``--quiet``, no progress lines)."""

    log_level: str | None = None
    progress_interval_s: float | None = 10.0


def with_progress(pipeline: Pipeline, options: RunOptions) -> Pipeline:
    """``pipeline`` with a ``ProgressLog`` among its hooks, unless the options say quiet."""
    if options.progress_interval_s is None:
        return pipeline
    hook = ProgressLog(pipeline.plans, pipeline.transport.lag_monitor, options.progress_interval_s)
    return replace(pipeline, hooks=(*pipeline.hooks, hook))


def run_workers(
    spec: str, settings: Settings, workers: int, options: RunOptions = RunOptions()
) -> int:
    """``pipeline run``: one worker in this process, or ``workers`` supervised child processes
    (``pipeline.supervisor``: restarted when they die)."""
    stop = StopEvent()
    _on_stop_signals(stop.set)  # from the start: a SIGTERM while validating is a clean exit
    pipeline = Pipeline.from_spec(spec, settings)  # validate once, before forking anything
    log_names(pipeline.plans)
    if workers == 1:
        try:
            topics = pipeline.start_topics(stop)  # the consumers join while the rest are made
        except TopicsStopped:  # a stop while they were made at once: nothing started
            pipeline.close()
            return 0
        set_process_title(f"pipeline worker {spec}")
        endpoint = None
        if settings.metrics_port is not None:
            from pipeline.metrics import serve_worker

            pipeline, endpoint = serve_worker(pipeline, settings.metrics_port)
        try:
            worker = Worker(with_progress(pipeline, options), stop=stop, topics=topics)
            code = worker.run_until_signalled()
            if topics.error is not None:  # as when made first: one line, exit 2 or 1 (cli)
                raise topics.error
        finally:
            pipeline.close()
            if endpoint is not None:
                endpoint.close()
        return exit_within(code)
    try:
        pipeline.ensure_topics(stopping=stop.is_set)  # once, before any worker is forked
    except TopicsStopped:
        return 0
    if stop.is_set():
        return 0
    return _supervise(spec, settings, workers, pipeline, stop, options)


def _supervise(
    spec: str, settings: Settings, workers: int, pipeline: Pipeline, stop: StopEvent,
    options: RunOptions,
) -> int:  # fmt: skip
    import multiprocessing  # only a supervisor of worker processes needs it

    set_process_title(f"pipeline supervisor {spec} ({workers} workers)")
    ctx = multiprocessing.get_context("spawn")

    def spawn(index: int) -> BaseProcess:
        # Our pid, not the child's getppid(): if we die before the child looks, that would
        # already be init's, and the child would never notice it was orphaned.
        args = (spec, settings, index, workers, os.getpid(), options)
        return ctx.Process(target=_child, args=args, name=f"worker-{index}")

    if settings.metrics_port is None:
        return Supervisor(spawn, workers, stop, settings.shutdown_timeout_s).run()
    from pipeline.metrics import serve_supervisor

    endpoint = serve_supervisor(pipeline, settings.metrics_port)  # before any worker starts
    try:
        supervisor = Supervisor(spawn, workers, stop, settings.shutdown_timeout_s)
        supervisor.on_death = endpoint.worker_died
        return supervisor.run()
    finally:
        endpoint.close()


def _child(
    spec: str, settings: Settings, index: int, workers: int, parent: int, options: RunOptions
) -> None:
    from pipeline.logs import setup_logging

    set_process_title(f"pipeline worker {index}/{workers} {spec}")
    setup_logging(options.log_level)
    stop = StopEvent()
    _on_stop_signals(stop.set)
    try:
        pipeline = Pipeline.from_spec(spec, settings)
    except (ConfigError, DeclarationError, SchemaError) as exc:  # the supervisor gives up on 2
        log.error("worker %d: %s", index, exc)
        raise SystemExit(2) from None
    if settings.metrics_port is not None:  # the supervisor serves them, from the run's directory
        from pipeline.metrics import with_metrics

        pipeline = with_metrics(pipeline)
    worker = Worker(with_progress(pipeline, options), worker_id=f"w{index}", stop=stop)
    try:
        code = worker.run_until_signalled(parent_pid=parent)
    finally:
        pipeline.close()
    raise SystemExit(exit_within(code))
