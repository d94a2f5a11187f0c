"""``make bench``: OURS against a hand-written confluent-kafka loop (RAW) and peer frameworks, on
one broker, with the same pre-filled topics and payloads, in one run.

1. start the local broker unless KAFKA_BOOTSTRAP_SERVERS names one; check RAW still mirrors OURS'
   librdkafka settings; find which peers can run;
2. create the run's topics (``bench-<uuid>.``) and pre-fill them;
3. drain rounds (throughput, CPU/msg, RSS growth, Produce requests/msg), then the time to the
   first output of a fresh start (``bench/first_output.py``);
4. chain rounds: RAW and OURS 4-stage chains at 25% of RAW's throughput (p50/p99 latency);
5. I/O rounds: a handler awaiting 10 ms (OURS sequential, FastStream sequential and concurrent);
6. OURS' features, each on topics of its own (``extra_phases``): priority lanes, request-reply
   round trips, job status lookups and visibility;
7. delete the run's topics and groups; print and save the tables; last line: the summary JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench import first_output, jobs_latency, phases, priority, reply_latency, report
from bench.contenders import common, load
from bench.phases import OURS, OURS_METRICS, PEERS, RAW, Contender, Run
from bench.procs import ROOT
from bench.topics import RunTopics

RESULTS = ROOT / "bench" / "results"
# The second workload's drain (issue 15): RAW and OURS only; the peers run the first.
CHECKOUT_CONTENDERS = [RAW, OURS]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="records each contender drains")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=30.0, help="longest drain (s); rate kept")
    p.add_argument("--chain-seconds", type=float, default=8.0, help="measured chain window")
    p.add_argument(
        "--chain-fractions", default="0.25,0.05",
        help="chain rates as fractions of RAW's throughput; the first is the headline",
    )  # fmt: skip
    p.add_argument("--io-messages", type=int, default=2000)
    p.add_argument("--io-ms", type=float, default=10.0)
    p.add_argument("--concurrency", default="1,8,32", help="I/O concurrency sweep")
    p.add_argument("--peers", default="faststream,quix,faust")
    p.add_argument("--priority-backlog", type=int, default=50_000, help="low-lane backlog")
    p.add_argument("--first-output-rounds", type=int, default=7,
                   help="rounds of the time to the first output (fresh topics each)")  # fmt: skip
    p.add_argument("--only-first-output", action="store_true",
                   help="only the time to the first output (RAW and OURS)")  # fmt: skip
    p.add_argument("--obs-cost", action="store_true",
                   help="only the cost of metrics and tracing (bench.obscost)")  # fmt: skip
    return p.parse_args()


def bootstrap_servers() -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the local broker: used as is when it answers, started when
    it does not. (Asking ``localkafka up`` first would trust its log-based readiness check, which
    misses a healthy broker whose server.log has grown past the part it scans.)"""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    kafka = [sys.executable, "-m", "pipeline.localkafka"]
    out = subprocess.run(
        [*kafka, "bootstrap"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    address = out.stdout.strip()
    if not _answers(address):
        subprocess.run([*kafka, "up"], cwd=ROOT, check=True)
    return address


def _answers(bootstrap: str) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=5)
    except KafkaException:
        return False
    return True


def config_drift() -> list[str]:
    """RAW copies OURS' librdkafka settings; say so if the framework's have changed since."""
    try:
        from pipeline.config import Settings
        from pipeline.kafka import config as kconfig
    except ImportError as exc:  # the framework is mid-change: OURS will fail and say why
        return [f"cannot compare RAW's settings with OURS': {exc}"]

    # Identity, and where librdkafka's log lines go: not settings that change performance.
    s, ids = Settings(), {"bootstrap.servers", "group.id", "client.id", "logger"}
    ids.add("security.protocol")  # plaintext, librdkafka's default, spelt out by OURS
    notes = []
    for name, ours, raw in (
        ("consumer", kconfig.consumer(s, "g", "c"), common.CONSUMER_CONFIG),
        ("producer", kconfig.producer(s, "c"), common.PRODUCER_CONFIG),
    ):
        ours = {k: v for k, v in ours.items() if k not in ids}
        if ours != raw:
            notes.append(f"RAW's {name} settings differ from OURS': ours={ours} raw={raw}")
    if (s.batch_size, s.batch_timeout_s, s.batch_linger_s) != (
        common.BATCH_SIZE, common.BATCH_TIMEOUT_S, common.BATCH_LINGER_S,
    ):  # fmt: skip
        notes.append("RAW's batch size/timeout/linger differ from Settings' defaults")
    return notes


def available_peers(wanted: list[str]) -> tuple[list[Contender], dict[str, str]]:
    imports = {"faststream": "faststream.confluent", "quix": "quixstreams", "faust": "faust"}
    ok, not_run = [], {}
    for name in wanted:
        if not phases.PEERS_PY.exists():
            not_run[name] = "bench/.venv-peers is missing (`make bench` creates it)"
            continue
        probe = subprocess.run(
            [str(phases.PEERS_PY), "-c", f"import {imports[name]}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if probe.returncode:
            not_run[name] = "cannot import: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
        else:
            ok.append(PEERS[name])
    return ok, not_run


def versions() -> dict[str, str]:
    import confluent_kafka

    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "pipeline"], capture_output=True, text=True
    )
    found = {
        "pipeline": head.stdout.strip()
        + (" + uncommitted changes" if dirty.stdout.strip() else ""),
        "python": sys.version.split()[0],
        "librdkafka (RAW/OURS)": confluent_kafka.libversion()[0],
    }
    if phases.PEERS_PY.exists():
        code = (
            "import json, importlib.metadata as m, confluent_kafka as c; d={}\n"
            "for p in ('faststream','quixstreams','faust-streaming','aiokafka'):\n"
            "    try: d[p]=m.version(p)\n    except Exception: pass\n"
            "d['librdkafka (peers)']=c.libversion()[0]; print(json.dumps(d))"
        )
        out = subprocess.run([str(phases.PEERS_PY), "-c", code], capture_output=True, text=True)
        found |= json.loads(out.stdout or "{}")
    return found


def io_cases(peers: list[Contender], sweep: list[int]) -> tuple[list[tuple[Contender, int]], str]:
    from pipeline import Stage

    if hasattr(Stage, "concurrency"):
        cases, note = [(OURS, n) for n in sweep], "OURS swept over Stage.concurrency."
    else:
        cases = [(OURS, 1)]
        note = "OURS: sequential only; Stage has no `concurrency` attribute yet (sweep skipped)."
    cases += [(p, n) for p in peers if p.name == "faststream" for n in sweep]
    return cases, note


def extra_phases(bootstrap: str, prefix: str, args: Any) -> dict[str, Any]:
    """The feature phases (OURS only), by their key in the saved data."""
    print(f"priority: {args.priority_backlog} events waiting on the low lane", flush=True)
    prio = priority.phase(bootstrap, prefix, args.priority_backlog)
    print("request-reply: round trips (bench/reply_latency.py)", flush=True)
    replies = reply_latency.measure(bootstrap, requests=500, warmup=50, in_flight=16)
    print("job status: lookups and visibility (bench/jobs_latency.py)", flush=True)
    job_status = jobs_latency.measure(bootstrap, entries=20_000, lookups=5_000, events=200)
    return {"priority": prio, "request_reply": replies, "job_status": job_status}


def extra_headline(extra: dict[str, Any]) -> dict[str, Any]:
    """The feature phases' figures in the summary line."""
    summary = {"priority_p99_s": extra["priority"]["io"].get("p99_s")}  # < 1 s (FIFO: minutes)
    summary |= reply_latency.headline(extra["request_reply"])  # issue 14: round trip p50 / p99
    summary |= jobs_latency.headline(extra["job_status"])  # issue 14: <= 20 ms, within 1 s
    return summary


def main() -> int:
    args, started = parse(), time.monotonic()
    try:  # before the other phases (and any broker), not at the priority phase
        if not (args.obs_cost or args.only_first_output):  # those run no priority phase
            priority.check_backlog(args.priority_backlog, flag="--priority-backlog")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.obs_cost:
        from bench import obscost

        return obscost.main(["--messages", str(args.messages), "--rounds", str(args.rounds)])
    bootstrap = bootstrap_servers()
    if args.only_first_output:
        return only_first_output(args, bootstrap)
    peers, not_run = available_peers([p for p in args.peers.split(",") if p])
    topics = RunTopics(bootstrap, f"bench-{uuid.uuid4().hex[:8]}.")
    run = Run(bootstrap, topics, args.time_limit)
    contenders = [RAW, OURS, OURS_METRICS, *peers]
    sweep = [int(n) for n in args.concurrency.split(",")]
    cases, io_note = io_cases(peers, sweep)
    notes = [io_note, *config_drift()] + [f"{p}: not run: {why}" for p, why in not_run.items()]
    print(
        f"bench: {bootstrap}, prefix {topics.prefix}, peers {[p.name for p in peers]}", flush=True
    )
    try:
        src, io_src = topics.name("src"), topics.name("io", "src")
        checkout_src = topics.name("checkout", "src")
        outs = [topics.name("out", c.name) for c in contenders]
        outs += [topics.name("out", "checkout", c.name) for c in CHECKOUT_CONTENDERS]
        topics.create([src, io_src, checkout_src, *outs])
        load.prefill(bootstrap, src, args.messages)
        load.prefill(bootstrap, checkout_src, args.messages, workload="checkout")
        load.prefill(bootstrap, io_src, args.io_messages)
        print(f"drain: {args.messages} records, {args.rounds} round(s)", flush=True)
        drain = phases.drain_rounds(run, contenders, src, args.messages, args.rounds)
        print(f"drain (checkout, no headers): {args.messages} records", flush=True)
        drain_checkout = phases.drain_rounds(
            run, CHECKOUT_CONTENDERS, checkout_src, args.messages, args.rounds, "checkout"
        )
        print(f"first output: {args.first_output_rounds} fresh start(s) each", flush=True)
        first = first_output.rounds(
            run, [RAW, OURS], first_output.RECORDS, args.first_output_rounds
        )
        raw_max = report.throughput(drain["raw"])
        rates = {f: float(f) * raw_max for f in args.chain_fractions.split(",")}
        print(
            f"chain: 4 stages at {', '.join(f'{r:.0f}' for r in rates.values())} records/s",
            flush=True,
        )
        chain = phases.chain_rounds(run, [RAW, OURS], rates, args.chain_seconds, args.rounds)
        print(f"io: handler awaits {args.io_ms:g} ms, {args.io_messages} records", flush=True)
        io = phases.io_rounds(run, cases, io_src, args.io_messages, args.io_ms, args.rounds)
        extra = extra_phases(bootstrap, topics.prefix, args)
    finally:
        deleted, left = topics.delete_all()
        print(f"deleted {len(deleted)} bench topics; groups left to expire: {left}", flush=True)
    summary = report.headline(drain, chain, [p.name for p in peers])
    summary |= report.checkout_headline(drain_checkout)
    summary |= first_output.headline(first)
    summary |= extra_headline(extra)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data = {"summary": summary, "drain": drain, "drain_checkout": drain_checkout,
            "first_output": first, "chain": chain, "io": io, **extra, "notes": notes,
            "params": vars(args) | {"chain_rates": rates}, "versions": versions()}  # fmt: skip
    markdown = render(stamp, args, rates, summary, data, time.monotonic() - started)
    path = report.save(RESULTS, stamp, markdown, data)
    print(markdown)
    print(f"saved {path.relative_to(ROOT)} (+ .json)")
    print(json.dumps(summary | {"peers_not_run": not_run, "results": str(path.relative_to(ROOT))}))
    return 0


def only_first_output(args: Any, bootstrap: str) -> int:
    """``--only-first-output``: that phase alone, saved and summarised like a whole run."""
    topics = RunTopics(bootstrap, f"bench-{uuid.uuid4().hex[:8]}.")
    run = Run(bootstrap, topics, args.time_limit)
    print(f"bench: {bootstrap}, prefix {topics.prefix}, first output only", flush=True)
    try:
        first = first_output.rounds(
            run, [RAW, OURS], first_output.RECORDS, args.first_output_rounds
        )
    finally:
        deleted, left = topics.delete_all()
        print(f"deleted {len(deleted)} bench topics; groups left to expire: {left}", flush=True)
    summary = first_output.headline(first) | {"load_average": list(os.getloadavg())}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data = {"summary": summary, "first_output": first, "params": vars(args),
            "versions": versions()}  # fmt: skip
    head = [f"# Benchmark {stamp}: first output only", "", f"Versions: {data['versions']}."]
    markdown = "\n".join([*head, f"Load average: {summary['load_average']}.", "",
                          *first_output.section(first), ""])  # fmt: skip
    path = report.save(RESULTS, stamp, markdown, data)
    print(markdown)
    print(f"saved {path.relative_to(ROOT)} (+ .json)")
    print(json.dumps(summary | {"results": str(path.relative_to(ROOT))}))
    return 0


def render(
    stamp: str,
    args: Any,
    rates: dict[str, float],
    summary: dict[str, Any],
    data: dict[str, Any],
    took: float,
) -> str:
    lines = [
        f"# Benchmark {stamp}",
        "",
        f"{args.messages} records per drain, {args.rounds} interleaved round(s), medians; "
        f"{os.cpu_count()} cores shared with other work, so read the ratios, not the absolute "
        f"numbers. Took {took / 60:.1f} min. Versions: {data['versions']}.",
        "",
        "## Targets",
        *report.targets_table(summary),
        "",
        "## Drain throughput (same pre-filled topic, own group each)",
        *report.drain_table(data["drain"]),
        "",
        "## Drain throughput, second workload: bench.Checkout (timestamp-millis, constrained "
        "fields, string-heavy), written by a plain producer with no headers",
        *report.drain_table(data["drain_checkout"]),
        "",
        *first_output.section(data["first_output"]),
        "",
        f"## End-to-end latency: 4-stage chain (4 processes), {args.chain_seconds:g} s measured "
        "after a warm-up until steady (bench/contenders/sink.py); the first rate is the headline",
        *report.chain_table(data["chain"], rates),
        "",
        f"## I/O-bound stage: handler awaits {args.io_ms:g} ms, {args.io_messages} records",
        *report.io_table(data["io"]),
        "",
        f"## Priority lanes: high events behind {args.priority_backlog} on the low lane "
        "(bench/priority.py)",
        *priority.table(data["priority"]),
        "",
        "## Request-reply round trip (one request at a time; 16 in flight)",
        f"`{json.dumps(data['request_reply'])}`",
        "",
        "## Job status: lookups among 20,000 jobs, visibility of 200 transitions "
        "(bench/jobs_latency.py)",
        f"`{json.dumps(data['job_status'])}`",
        "",
        "## Notes",
        *(f"- {n}" for n in data["notes"]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
