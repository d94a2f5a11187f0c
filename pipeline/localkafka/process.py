"""OS plumbing: detached JVMs, pid files, liveness, signals and ports.

A pid file alone is not trusted: the process may be gone (a stale file after a reboot or a
SIGKILL), or the pid may since belong to something else. A pid counts as our node only while
its command line names that node's ``server.properties`` and it is not a zombie.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

# The shell backgrounds the JVM and exits at once, so the JVM is re-parented away from us:
# it survives this Python process, never becomes our zombie, and `make kafka-up` returns.
# stdio goes to a file so no caller's pipe is held open by the broker.
_DETACH_SCRIPT = '"$@" </dev/null >"$LOCALKAFKA_CONSOLE" 2>&1 & echo $!'


def launch_detached(argv: Sequence[str], console_log: Path, cwd: Path) -> int:
    console_log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOCALKAFKA_CONSOLE": str(console_log)}
    done = subprocess.run(
        ["/bin/sh", "-c", _DETACH_SCRIPT, "localkafka-launch", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        # A new session: no controlling terminal, so Ctrl-C in the shell that ran `up` or
        # pytest does not reach the broker.
        start_new_session=True,
        check=True,
    )
    return int(done.stdout.strip())


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        return None


def write_pid(pid_file: Path, pid: int) -> None:
    pid_file.write_text(f"{pid}\n", encoding="ascii")


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _exists(pid: int) -> bool:
    if not Path("/proc").is_dir():  # not Linux: the best we can do without psutil
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _proc_state(pid) not in (None, "Z", "X")


def is_alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs, is not a zombie and its command line contains ``marker``."""
    if not _exists(pid):
        return False
    return not Path("/proc").is_dir() or marker in _cmdline(pid)


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: dict[int, str], timeout: float) -> dict[int, str]:
    """Wait until every pid has exited; returns those still alive at the deadline.

    Only existence is checked here, not the command-line marker: an exiting process loses its
    cmdline (its memory is released) before its sockets are closed, and the next start needs
    those ports free.
    """
    deadline = time.monotonic() + timeout
    alive = dict(pids)
    while alive:
        alive = {pid: m for pid, m in alive.items() if _exists(pid)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return alive


def terminate(pids: dict[int, str], timeout: float) -> None:
    """SIGTERM (a controlled shutdown), then SIGKILL whatever is left after ``timeout``."""
    signal_all(pids, signal.SIGTERM)
    leftovers = wait_gone(pids, timeout)
    if leftovers:
        kill(leftovers)


def kill(pids: dict[int, str]) -> None:
    signal_all(pids, signal.SIGKILL)
    wait_gone(pids, 5.0)


def port_in_use(host: str, port: int) -> bool:
    """Whether a listening socket holds ``host:port``.

    Binding (with SO_REUSEADDR, as the JVM does) is the check, not connecting: a port left in
    TIME_WAIT by a stopped broker is free for the next one, and connect would miss a listener
    that does not accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
