"""``python -m pipeline.localkafka``: up, down, status, logs, bootstrap, libs.

Progress and errors go to stderr, so ``bootstrap`` prints nothing but the address on stdout
(``export KAFKA_BOOTSTRAP_SERVERS=$(python -m pipeline.localkafka bootstrap)``).
Exit codes: 0 success, 1 failure (one ``localkafka: error:`` line, then the log tail),
3 from ``status`` when not every node is running and ready.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pipeline.errors import PipelineError
from pipeline.localkafka.cluster import LocalKafka
from pipeline.localkafka.security import CLIENT_USER, SECURITY_CHOICES

EXIT_FAILURE = 1
EXIT_NOT_RUNNING = 3


def _up(args: argparse.Namespace) -> int:
    kafka = LocalKafka(nodes=args.nodes, base_port=args.base_port, security=args.security)
    if args.fresh:
        kafka.wipe()
    kafka.start(timeout=args.timeout)
    print(f"Kafka is up: {kafka.bootstrap_servers}", file=sys.stderr)
    if kafka.security_files is not None:
        print(
            f"SASL_SSL (SCRAM-SHA-512) for user {CLIENT_USER!r}; client settings: "
            f"pipeline --config {kafka.security_files.client_config_file}",
            file=sys.stderr,
        )
    return 0


def _down(args: argparse.Namespace) -> int:
    kafka = LocalKafka.current()
    if not kafka.running_nodes():
        print("Kafka is not running", file=sys.stderr)
    kafka.stop(timeout=args.timeout)
    return 0


def _status(args: argparse.Namespace) -> int:
    kafka = LocalKafka.current()
    statuses = kafka.status()
    for s in statuses:
        state = "ready" if s.ready else ("starting" if s.running else "stopped")
        pid = f"pid {s.pid}" if s.pid is not None else "no process"
        print(f"node {s.node_id}  {s.address}  {state}  ({pid})")
    healthy = all(s.ready for s in statuses)
    return 0 if healthy else EXIT_NOT_RUNNING


def _logs(args: argparse.Namespace) -> int:
    kafka = LocalKafka.current()
    ids = [args.node] if args.node else [n.node_id for n in kafka.layout.nodes]
    for node_id in ids:
        if len(ids) > 1:
            print(f"===== node {node_id}: {kafka.layout.node(node_id).server_log} =====")
        print(kafka.log_tail(node_id, args.lines))
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    print(LocalKafka.current().bootstrap_servers)
    return 0


def _libs(args: argparse.Namespace) -> int:
    print(LocalKafka().assemble())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.localkafka",
        description="A local Apache Kafka (KRaft, no Docker) from Maven Central jars.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the cluster (downloads the jars on first use)")
    up.add_argument("--nodes", type=int, default=1, help="1 (default) or 3 for replication tests")
    up.add_argument("--fresh", action="store_true", help="delete all data before starting")
    up.add_argument("--base-port", type=int, default=None, help="first client port (19092)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    up.add_argument(
        "--security", choices=SECURITY_CHOICES, default="plaintext",
        help="client listener: plaintext (default) or sasl_ssl (TLS + SCRAM-SHA-512 logins)",
    )  # fmt: skip
    up.set_defaults(handler=_up)

    down = sub.add_parser("down", help="stop every node (SIGTERM, then SIGKILL)")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    down.set_defaults(handler=_down)

    status = sub.add_parser("status", help="show each node; exit 3 unless all are ready")
    status.set_defaults(handler=_status)

    logs = sub.add_parser("logs", help="print the tail of each node's server.log")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--node", type=int, default=None, help="only this node id")
    logs.set_defaults(handler=_logs)

    bootstrap = sub.add_parser("bootstrap", help="print the bootstrap servers string")
    bootstrap.set_defaults(handler=_bootstrap)

    libs = sub.add_parser("libs", help="print the broker's jar directory (downloads it if needed)")
    libs.set_defaults(handler=_libs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except PipelineError as exc:
        summary, _, details = str(exc).partition("\n")
        print(f"localkafka: error: {summary}", file=sys.stderr)
        if details:
            print(details, file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("localkafka: interrupted", file=sys.stderr)
        return 130
