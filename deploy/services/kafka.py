"""Apache Kafka in KRaft mode: one process that is both broker and controller, jars from Maven Central.

The replay writes the Ali-CCP topics here; bronze, the streaming runs and the sensor read them.
Choices that differ from Kafka's sample config, and why:

- ``auto.create.topics.enable=false``: topics are created by ``KafkaResource.create_topics`` with
  their partition count and config (``aliccp.common_features`` is compacted); a mistyped topic
  name then fails loudly instead of silently creating an empty, uncompacted topic.
- ``log.retention.ms=-1``: records carry *simulated* event times that can lie years in the past;
  time-based retention looks at those timestamps and would delete freshly written segments at
  once. Kafka is the replayable source of bronze, so nothing expires.
- ``log.message.timestamp.after.max.ms`` unbounded: Kafka 4 rejects timestamps more than an
  hour ahead of the broker clock, and a configured simulation start date may lie in the future.

The storage is formatted once (``--standalone``, a cluster id kept in the state folder); later
starts find ``meta.properties`` and reuse the data.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import uuid
from collections.abc import Sequence
from pathlib import Path

from deploy.maven import Artifact, resolve
from deploy.service import Service, ServiceError, apt_install, run

KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.25.4"  # the one kafka_2.13 itself depends on
SLF4J_VERSION = "2.0.17"  # log4j-slf4j2-impl needs SLF4J 2; kafka's pom alone resolves 1.7

ARTIFACTS = [
    # The broker (kafka.Kafka) and the storage tool (kafka.tools.StorageTool) live in the core jar.
    Artifact("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
    # Kafka's own load generator (ProducerPerformance), which bench/replay.py runs for context.
    Artifact("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
    Artifact("org.slf4j", "slf4j-api", SLF4J_VERSION),
    Artifact("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
]

JVM_OPTS = [
    "-Xms512m", "-Xmx1g",
    # Kafka's own launcher defaults: short GC pauses keep produce latency low.
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
]

# Everything goes to stdout, which the stack manager writes to the service log.
LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# One line per request and per state change would drown the log.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""

_METADATA_API_KEY = 3
_METADATA_VERSION = 4  # the newest non-flexible version: no tagged fields to encode by hand


def _metadata_brokers(host: str, port: int, timeout: float = 1.0) -> int:
    """Send a Metadata request for no topics and return the number of brokers in the reply.

    A bare socket rather than a Kafka client: it is called every half second while waiting for
    the start, must be quick and must not print client connection errors meanwhile.
    """
    client_id = b"tfp-health"
    correlation_id = 0x7F0A
    request = struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id))
    request += client_id + struct.pack(">i?", 0, False)  # topics: empty array; no auto-creation
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        reply = _recv_exact(sock, size)
    got_id, _throttle_ms, brokers = struct.unpack_from(">iii", reply)
    if got_id != correlation_id:
        raise OSError(f"unexpected correlation id {got_id} in metadata reply")
    return brokers


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed mid-reply")
        data += chunk
    return data


def _new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 (what ``kafka-storage random-uuid`` prints).

    Kafka's own generator avoids ids starting with '-' because they read as command-line options.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class Kafka(Service):
    name = "kafka"
    default = True

    @property
    def libs(self) -> Path:
        return self.cache / "kafka" / KAFKA_VERSION / "libs"

    @property
    def config(self) -> Path:
        return self.state / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.state / "log4j2.properties"

    @property
    def data(self) -> Path:
        return self.state / "data"

    def port(self) -> int:
        return self.settings.kafka_port

    def version(self) -> str:
        installed = (self.libs / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").exists()
        return KAFKA_VERSION if installed else f"{KAFKA_VERSION} (not installed)"

    def install(self) -> None:
        if shutil.which("java") is None:
            apt_install(["openjdk-17-jre-headless"])
        resolve(ARTIFACTS, self.libs, what=f"Kafka {KAFKA_VERSION}")

    def java_command(self, main: str, *args: str | Path, jvm_opts: Sequence[str] = (),
                     classpath: Sequence[Path] = ()) -> list[str]:
        """``main`` of Kafka's jars, or of ``classpath`` (classes compiled against them, e.g. by a benchmark)."""
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java not found on PATH; run: python -m deploy.stack install kafka")
        return [java, *jvm_opts, f"-Dlog4j2.configurationFile={self.log4j_config}",
                "-cp", os.pathsep.join([*map(str, classpath), f"{self.libs}/*"]), main, *(str(a) for a in args)]

    def prepare(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        s = self.settings
        host = "127.0.0.1"
        self.config.write_text(
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.bootstrap.servers={host}:{s.kafka_controller_port}\n"
            f"listeners=PLAINTEXT://{host}:{s.kafka_port},CONTROLLER://{host}:{s.kafka_controller_port}\n"
            f"advertised.listeners=PLAINTEXT://{s.kafka_host}:{s.kafka_port},"
            f"CONTROLLER://{host}:{s.kafka_controller_port}\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            f"log.dirs={self.data}\n"
            "num.partitions=3\n"
            "num.network.threads=2\n"
            "num.io.threads=4\n"
            "auto.create.topics.enable=false\n"
            "offsets.topic.replication.factor=1\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            # A single-member group starts consuming at once instead of after 3 s.
            "group.initial.rebalance.delay.ms=0\n"
            "log.retention.ms=-1\n"
            "log.message.timestamp.after.max.ms=9223372036854775807\n"
        )
        self.log4j_config.write_text(LOG4J2_PROPERTIES)
        if (self.data / "meta.properties").exists():
            return
        cluster_id_file = self.state / "cluster.id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(_new_cluster_id())
        run(
            self.java_command("kafka.tools.StorageTool", "format", "--standalone",
                       "-t", cluster_id_file.read_text().strip(), "-c", self.config),
            what="formatting Kafka storage", log=self.settings.logs_dir / "kafka-format.log",
        )

    def command(self) -> list[str]:
        return self.java_command("kafka.Kafka", self.config, jvm_opts=JVM_OPTS)

    def healthy(self) -> bool:
        try:
            return _metadata_brokers("127.0.0.1", self.port()) >= 1
        except (OSError, struct.error):
            return False
