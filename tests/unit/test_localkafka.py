"""pipeline.localkafka without a JVM: layout, properties, readiness, errors, pids, CLI."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pipeline.localkafka as localkafka
from pipeline.errors import BrokerUnavailableError, ConfigError
from pipeline.localkafka import cli, node, process, readiness
from pipeline.localkafka.layout import ClusterLayout, kafka_home, kafka_version, plan_cluster
from pipeline.localkafka.logconfig import log4j2_xml
from pipeline.localkafka.properties import new_cluster_id, render_properties, server_properties
from pipeline.localkafka.state import ClusterState, load_state, save_state


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_KAFKA_HOME", str(tmp_path))
    monkeypatch.delenv("PIPELINE_KAFKA_BASE_PORT", raising=False)
    monkeypatch.delenv("PIPELINE_KAFKA_VERSION", raising=False)
    return tmp_path


def single(home: Path) -> ClusterLayout:
    return plan_cluster(home, 1, 19092, "4.4.0")


def triple(home: Path) -> ClusterLayout:
    return plan_cluster(home, 3, 19092, "4.4.0")


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_public_api_is_curated() -> None:
    """The package exports exactly the names its docs promise."""
    assert sorted(localkafka.__all__) == [
        "DEFAULT_BASE_PORT",
        "DEFAULT_KAFKA_VERSION",
        "LocalKafka",
        "NodeStatus",
    ]


# -- layout ---------------------------------------------------------------------------------


def test_single_node_uses_19092_and_controller_19093(home: Path) -> None:
    """The default node serves clients on 19092 and its controller on 19093, under run/node-1."""
    layout = single(home)
    (n,) = layout.nodes
    assert (n.broker_port, n.controller_port) == (19092, 19093)
    assert layout.bootstrap_servers == "127.0.0.1:19092"
    assert n.dir == home / "run" / "node-1"
    assert layout.libs_dir == home / "dist" / "4.4.0" / "libs"


def test_three_nodes_take_every_other_port(home: Path) -> None:
    """Three nodes use 19092/19094/19096 for clients and the odd ports for controllers."""
    layout = triple(home)
    assert [(n.broker_port, n.controller_port) for n in layout.nodes] == [
        (19092, 19093),
        (19094, 19095),
        (19096, 19097),
    ]
    assert layout.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert len({n.dir for n in layout.nodes}) == 3


def test_unknown_node_id_is_a_config_error(home: Path) -> None:
    """Asking a 1-node cluster for node 2 names the nodes it has."""
    with pytest.raises(ConfigError, match="no node 2"):
        single(home).node(2)


def test_environment_overrides_version_and_home(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIPELINE_KAFKA_VERSION and PIPELINE_KAFKA_HOME replace the pinned version and .kafka root."""
    assert kafka_version() == localkafka.DEFAULT_KAFKA_VERSION
    monkeypatch.setenv("PIPELINE_KAFKA_VERSION", "4.3.1")
    assert kafka_version() == "4.3.1"
    assert kafka_home() == home.resolve()


def test_bad_base_port_env_is_rejected(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-numeric PIPELINE_KAFKA_BASE_PORT fails with a message naming the variable."""
    monkeypatch.setenv("PIPELINE_KAFKA_BASE_PORT", "abc")
    with pytest.raises(ConfigError, match="PIPELINE_KAFKA_BASE_PORT"):
        localkafka.LocalKafka()


# -- server.properties ----------------------------------------------------------------------


def test_single_node_properties_are_a_standalone_test_broker(home: Path) -> None:
    """One node: own quorum via bootstrap servers, replication 1, no auto-created topics."""
    layout = single(home)
    props = server_properties(layout, layout.nodes[0])
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert "controller.quorum.voters" not in props
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:19092")
    assert props["log.dirs"] == str(home / "run" / "node-1" / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
        "default.replication.factor",
        "min.insync.replicas",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1", key
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["offsets.topic.num.partitions"]) < 50


def test_three_node_properties_use_static_voters_and_rf3(home: Path) -> None:
    """Three nodes: static voters on all, replication factor 3 and min ISR 2 everywhere."""
    layout = triple(home)
    all_props = [server_properties(layout, n) for n in layout.nodes]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    for n, props in zip(layout.nodes, all_props, strict=True):
        assert props["node.id"] == str(n.node_id)
        assert props["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in props
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["share.coordinator.state.topic.min.isr"] == "2"
    assert len({p["log.dirs"] for p in all_props}) == 3
    assert len({p["listeners"] for p in all_props}) == 3


def test_rendered_properties_read_back_identically(home: Path) -> None:
    """The written file parses back to the same key/value pairs."""
    layout = triple(home)
    props = server_properties(layout, layout.nodes[1])
    assert parse_properties(render_properties(props)) == props


def test_backslashes_are_escaped_for_java_properties() -> None:
    """A backslash in a value is doubled, as java.util.Properties would otherwise drop it."""
    assert render_properties({"log.dirs": r"C:\kafka"}).splitlines()[1] == r"log.dirs=C:\\kafka"


def test_cluster_ids_look_like_kafka_uuids() -> None:
    """A cluster id is 16 bytes in unpadded URL-safe base64 and never starts with '-'."""
    for _ in range(200):
        cid = new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_format_command_is_standalone_only_for_one_node(home: Path) -> None:
    """--standalone is passed for a single node and never with static voters."""
    one, three = single(home), triple(home)
    cmd = node.format_command("java", Path("/libs"), one.nodes[0], "cid", standalone=True)
    assert cmd[-1] == "--standalone" and "kafka.tools.StorageTool" in cmd
    cmd3 = node.format_command("java", Path("/libs"), three.nodes[0], "cid", standalone=False)
    assert "--standalone" not in cmd3


def test_broker_command_names_its_properties_file_and_heap(home: Path) -> None:
    """The JVM command carries the heap cap, the log config and the node's properties path."""
    n = single(home).nodes[0]
    cmd = node.broker_command("/usr/bin/java", Path("/libs"), n, "512m")
    assert "-Xmx512m" in cmd and "/libs/*" in cmd
    assert f"-Dlog4j2.configurationFile={n.log4j_file}" in cmd
    assert cmd[-2:] == ["kafka.Kafka", str(n.properties_file)]


def test_log4j_config_writes_server_log_at_info() -> None:
    """The log4j2 XML is valid, logs to ${kafka.logs.dir}/server.log, and keeps kafka at INFO."""
    root = ET.fromstring(log4j2_xml())
    file_appender = root.find("./Appenders/File")
    assert file_appender is not None
    assert file_appender.get("fileName") == "${sys:kafka.logs.dir}/server.log"
    levels = {lg.get("name"): lg.get("level") for lg in root.iter("Logger")}
    assert levels["kafka"] == "INFO" and levels["org.apache.kafka"] == "INFO"
    assert levels["kafka.request.logger"] == "WARN"
    assert root.find("./Loggers/Root[@level='INFO']") is not None


# -- readiness and error messages -----------------------------------------------------------


def test_ready_only_after_the_ready_line() -> None:
    """A log is ready once 'Kafka Server started' follows the latest start banner."""
    starting = readiness.banner(1) + "[x] INFO starting (kafka.server.KafkaRaftServer)\n"
    assert not readiness.is_ready(starting)
    done = starting + "[x] INFO [KafkaRaftServer nodeId=1] Kafka Server started (kafka...)\n"
    assert readiness.is_ready(done)


def test_ready_line_of_an_earlier_run_does_not_count() -> None:
    """After a restart, the previous run's ready line is ignored until the new one appears."""
    old_run = readiness.banner(1) + "INFO Kafka Server started\nINFO shut down completed\n"
    assert not readiness.is_ready(old_run + readiness.banner(1) + "INFO starting\n")


def test_log_without_banner_is_judged_whole() -> None:
    """A log written by a broker we did not banner (manual start) still shows readiness."""
    assert readiness.is_ready("INFO Kafka Server started\n")


def test_failure_message_has_one_summary_line_then_the_last_40_lines(tmp_path: Path) -> None:
    """The error starts with a one-line summary and carries only the last 40 log lines."""
    server = tmp_path / "server.log"
    text = readiness.banner(1) + "".join(f"line {i}\n" for i in range(1, 101))
    message = readiness.failure_message("node 1 died", {server: text, tmp_path / "c.log": ""})
    lines = message.splitlines()
    assert lines[0] == "node 1 died"
    assert lines[1] == f"--- last 40 lines of {server} ---"
    assert lines[2:] == [f"line {i}" for i in range(61, 101)]


def test_failure_message_says_when_there_is_no_log() -> None:
    """With no output at all the message says so instead of ending abruptly."""
    message = readiness.failure_message("node 1 died", {Path("/nope.log"): ""})
    assert message == "node 1 died\n(the node wrote no log output)"


# -- processes, pids, ports (no JVM) --------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_pid_file_is_ignored_and_removed(home: Path) -> None:
    """A pid file whose process is gone does not count as running, and is cleaned up."""
    n = single(home).nodes[0]
    n.dir.mkdir(parents=True)
    process.write_pid(n.pid_file, dead_pid())
    assert node.node_pid(n) is None
    assert not n.pid_file.exists()


def test_pid_of_an_unrelated_process_is_not_our_broker(home: Path) -> None:
    """A recycled pid (a live process that is not this node's JVM) counts as stale."""
    n = single(home).nodes[0]
    n.dir.mkdir(parents=True)
    process.write_pid(n.pid_file, os.getpid())
    assert node.node_pid(n) is None


def test_dead_node_raises_with_its_log_tail(home: Path) -> None:
    """A node that exits during start-up raises at once, quoting its server.log."""
    n = single(home).nodes[0]
    n.logs_dir.mkdir(parents=True)
    n.server_log.write_text(readiness.banner(1) + "ERROR Exiting Kafka due to fatal exception\n")
    with pytest.raises(BrokerUnavailableError) as caught:
        node.wait_ready({n: dead_pid()}, time.monotonic() + 30, 30)
    assert "exited during start-up" in str(caught.value).splitlines()[0]
    assert "Exiting Kafka due to fatal exception" in str(caught.value)


def test_slow_node_times_out_with_its_log_tail(home: Path) -> None:
    """A live node that never logs readiness raises after the deadline, quoting its log."""
    n = single(home).nodes[0]
    n.logs_dir.mkdir(parents=True)
    n.server_log.write_text(readiness.banner(1) + "INFO still recovering logs\n")
    # A stand-in JVM: its command line carries the node's properties path, like the real one.
    code = "import time; time.sleep(30)"
    stand_in = subprocess.Popen([sys.executable, "-c", code, str(n.properties_file)])
    try:
        # Between fork and exec the child still has pytest's command line, which reads as "the
        # node exited": on a loaded machine that window outlasts a 0.3 s deadline.
        _await_command_line(stand_in.pid, str(n.properties_file))
        with pytest.raises(BrokerUnavailableError, match="did not log 'Kafka Server started'"):
            node.wait_ready({n: stand_in.pid}, time.monotonic() + 0.3, 0.3)
    finally:
        stand_in.kill()
        stand_in.wait()


def _await_command_line(pid: int, marker: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    cmdline = Path(f"/proc/{pid}/cmdline")
    while marker not in cmdline.read_bytes().decode(errors="replace"):
        assert time.monotonic() < deadline, f"pid {pid} never ran with {marker} in its command line"
        time.sleep(0.01)


def test_port_in_use_detects_a_listener() -> None:
    """A listening socket makes its port 'in use'; once closed the port is free again."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert process.port_in_use("127.0.0.1", port)
    assert not process.port_in_use("127.0.0.1", port)


def test_state_round_trips_and_tolerates_garbage(tmp_path: Path) -> None:
    """cluster.json reads back what was saved; an unreadable one reads as no state."""
    path = tmp_path / "run" / "cluster.json"
    state = ClusterState(nodes=3, base_port=19192, version="4.4.0", cluster_id="abc")
    save_state(path, state)
    assert load_state(path) == state
    path.write_text("{not json")
    assert load_state(path) is None


# -- CLI without a broker -------------------------------------------------------------------


def test_cli_bootstrap_follows_the_saved_layout(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bootstrap` prints the default address, or the saved cluster's addresses after an up."""
    assert cli.main(["bootstrap"]) == 0
    assert capsys.readouterr().out.strip() == "127.0.0.1:19092"
    save_state(home / "run" / "cluster.json", ClusterState(3, 19192, "4.4.0", "cid"))
    assert cli.main(["bootstrap"]) == 0
    assert capsys.readouterr().out.strip() == "127.0.0.1:19192,127.0.0.1:19194,127.0.0.1:19196"


def test_cli_status_and_down_when_nothing_runs(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` exits 3 and reports stopped nodes; `down` is a harmless no-op."""
    assert cli.main(["status"]) == cli.EXIT_NOT_RUNNING
    assert "stopped" in capsys.readouterr().out
    assert cli.main(["down"]) == 0
    assert "not running" in capsys.readouterr().err


def test_cli_failure_is_one_error_line_then_the_log_tail(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed `up` exits 1 with one 'localkafka: error:' line followed by the log tail."""

    def fail(self: localkafka.LocalKafka, timeout: float = 120.0) -> None:
        raise BrokerUnavailableError("node 1 exited during start-up\n--- tail ---\nFATAL boom")

    monkeypatch.setattr(localkafka.LocalKafka, "start", fail)
    assert cli.main(["up"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "localkafka: error: node 1 exited during start-up"
    assert err[-1] == "FATAL boom"


def test_a_long_running_node_stays_ready_after_its_log_grows_past_the_scan_window(
    home: Path,
) -> None:
    """Readiness is remembered for the JVM that logged it, so megabytes of later log lines do
    not turn a running broker back into 'starting'; a new JVM has to prove it again."""
    (n,) = single(home).nodes
    n.server_log.parent.mkdir(parents=True, exist_ok=True)
    n.pid_file.parent.mkdir(parents=True, exist_ok=True)
    process.write_pid(n.pid_file, 4242)
    n.server_log.write_text(
        readiness.banner(1) + "[x] INFO [KafkaRaftServer nodeId=1] Kafka Server started\n"
    )
    assert node.is_ready(n)
    with n.server_log.open("a") as log:
        for _ in range(9_000):
            log.write("[y] INFO group coordinator chatter " + "z" * 1000 + "\n")
    assert node.is_ready(n), "the ready line scrolled out of the scanned window"
    process.write_pid(n.pid_file, 4343)
    assert not node.is_ready(n)


def test_cli_libs_prints_an_assembled_jar_directory_without_maven(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`libs` prints the jar directory make kafka-image copies; an assembled one needs no Maven."""
    libs = home / "dist" / kafka_version() / "libs"
    libs.mkdir(parents=True)
    (libs / ".assembled").write_text("kafka\n")
    monkeypatch.setenv("PATH", "")  # a Maven run would fail: there is no mvn
    assert cli.main(["libs"]) == 0
    assert capsys.readouterr().out.strip() == str(libs)
