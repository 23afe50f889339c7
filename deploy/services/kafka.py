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

Every listener asks for a password (the install's ``kafka_user`` / ``kafka_password``):

- the client listener takes SASL/SCRAM only (``KAFKA_SASL_MECHANISM``); the broker also talks to
  itself there (transaction markers), so it signs in the same way;
- the controller listener takes SASL/PLAIN against the user in its JAAS configuration. SCRAM cannot
  serve there: its credentials live in the metadata log the controller itself serves.

A SCRAM credential lives in the metadata log, and Kafka stores one only through a broker a client
signed in to (its admin API refuses it through the controller listener). So a storage without the
credential for this user and password (a new one, one formatted before authentication, a changed
password) is started once with SASL/PLAIN also enabled on the client listener, the credential is
stored through it (Kafka's ``ConfigCommand``), and the broker is started again with SCRAM only. A
marker tied to the storage's ``meta.properties`` records that this was done; an older install keeps
its topics. The files holding the password are 0600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import struct
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from deploy.maven import Artifact, resolve
from deploy.service import Service, ServiceError, apt_install, port_open, run
from taobao_assets.atomic_file import write_private
from taobao_assets.settings import KAFKA_SASL_MECHANISM

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

_METADATA = (3, 4)  # the newest non-flexible version: no tagged fields to encode by hand
_SASL_HANDSHAKE = (17, 1)  # v1: the SCRAM messages then travel in SaslAuthenticate requests
_SASL_AUTHENTICATE = (36, 1)
#: PBKDF2 rounds of the stored SCRAM credential: Kafka's minimum for SHA-512 is 4096.
SCRAM_ITERATIONS = 8192


class _Connection:
    """Kafka's request/response framing over one socket, for the few non-flexible requests below."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation_id = 0x7F00

    def call(self, api: tuple[int, int], body: bytes) -> bytes:
        client_id = b"tfp-health"
        self.correlation_id += 1
        request = struct.pack(">hhih", *api, self.correlation_id, len(client_id)) + client_id + body
        self.sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(self.sock, 4))[0]
        reply = _recv_exact(self.sock, size)
        if struct.unpack_from(">i", reply)[0] != self.correlation_id:
            raise OSError(f"unexpected correlation id in the reply to API {api[0]}")
        return reply[4:]

    def authenticate(self, token: bytes) -> bytes:
        reply = self.call(_SASL_AUTHENTICATE, struct.pack(">i", len(token)) + token)
        error, message_size = struct.unpack_from(">hh", reply)
        if error:
            message = reply[4:4 + message_size].decode(errors="replace") if message_size > 0 else ""
            raise OSError(f"Kafka refused the sign-in (error {error}): {message}")
        size = struct.unpack_from(">i", reply, 4 + max(message_size, 0))[0]
        start = 8 + max(message_size, 0)
        return reply[start:start + size]


def _scram(connection: _Connection, user: str, password: str) -> None:
    """Sign in with SCRAM-SHA-512 (RFC 5802), and check that the broker knows the password too."""
    digest = KAFKA_SASL_MECHANISM.removeprefix("SCRAM-").replace("-", "").lower()
    mechanism = KAFKA_SASL_MECHANISM.encode()
    reply = connection.call(_SASL_HANDSHAKE, struct.pack(">h", len(mechanism)) + mechanism)
    if struct.unpack_from(">h", reply)[0]:
        raise OSError(f"the broker does not offer {KAFKA_SASL_MECHANISM}")
    nonce = secrets.token_urlsafe(18)
    first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
    server_first = connection.authenticate(f"n,,{first_bare}".encode()).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    if not fields["r"].startswith(nonce):
        raise OSError("the broker's SCRAM nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", digest)
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(digest, client_key).digest(), auth_message, digest)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    server_final = connection.authenticate(f"{without_proof},p={proof}".encode()).decode()
    server_key = hmac.digest(salted, b"Server Key", digest)
    if server_final != "v=" + base64.b64encode(hmac.digest(server_key, auth_message, digest)).decode():
        raise OSError("the broker's SCRAM signature is wrong")


def _metadata_brokers(host: str, port: int, user: str, password: str, timeout: float = 1.0) -> int:
    """Sign in, send a Metadata request for no topics and return the number of brokers in the reply.

    A bare socket rather than a Kafka client: it is called every half second while waiting for
    the start, must be quick and must not print client connection errors meanwhile. Signing in
    makes it also a check of the stored credential.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        connection = _Connection(sock)
        _scram(connection, user, password)
        reply = connection.call(_METADATA, struct.pack(">i?", 0, False))  # no topics; no auto-creation
    _throttle_ms, brokers = struct.unpack_from(">ii", reply)
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
    #: False from a start's :meth:`prepare` that found no credential stored for this storage, user
    #: and password: that start is the bootstrap one (see the module docstring).
    _credential_stored = True

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

    @property
    def client_config(self) -> Path:
        """Java client properties for the client listener (SCRAM), e.g. for a benchmark's producer."""
        return self.state / "client.properties"

    @property
    def credential_marker(self) -> Path:
        return self.state / "scram-credential.sha256"

    def _jaas(self, module: str, *extra: str) -> str:
        s = self.settings
        return " ".join([f"org.apache.kafka.common.security.{module} required",
                         f'username="{s.kafka_user}" password="{s.kafka_password}"', *extra]) + ";"

    def _credential_fingerprint(self) -> str:
        """What the stored credential was made for: this storage (its ``meta.properties``, new at
        every format) and this user and password."""
        s = self.settings
        meta = (self.data / "meta.properties").read_bytes()
        return hashlib.sha256(meta + b"\0" + f"{s.kafka_user}\0{s.kafka_password}".encode()).hexdigest()

    def prepare(self) -> None:
        formatted = (self.data / "meta.properties").exists()
        self._credential_stored = (formatted and self.credential_marker.exists()
                                   and self.credential_marker.read_text() == self._credential_fingerprint())
        self.write_config(bootstrap=not self._credential_stored)
        if not formatted:
            cluster_id_file = self.state / "cluster.id"
            if not cluster_id_file.exists():
                cluster_id_file.write_text(_new_cluster_id())
            run(
                self.java_command("kafka.tools.StorageTool", "format", "--standalone",
                                  "-t", cluster_id_file.read_text().strip(), "-c", self.config),
                what="formatting Kafka storage", log=self.settings.logs_dir / "kafka-format.log",
            )

    def write_config(self, bootstrap: bool = False) -> None:
        """The broker's configuration and the Java clients' sign-in file, each 0600: they hold the password.

        ``bootstrap``: the client listener also takes SASL/PLAIN (against its JAAS user, which needs
        no stored credential), and the broker signs in to itself with it, so that :meth:`after_start`
        can store the SCRAM credential through the broker.
        """
        self.state.mkdir(parents=True, exist_ok=True)
        s = self.settings
        host = "127.0.0.1"
        scram = self._jaas("scram.ScramLoginModule")
        plain = self._jaas("plain.PlainLoginModule", f'user_{s.kafka_user}="{s.kafka_password}"')
        client_mechanisms = [KAFKA_SASL_MECHANISM, "PLAIN"] if bootstrap else [KAFKA_SASL_MECHANISM]
        write_private(self.config, (
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.bootstrap.servers={host}:{s.kafka_controller_port}\n"
            f"listeners=SASL_PLAINTEXT://{host}:{s.kafka_port},CONTROLLER://{host}:{s.kafka_controller_port}\n"
            f"advertised.listeners=SASL_PLAINTEXT://{s.kafka_host}:{s.kafka_port},"
            f"CONTROLLER://{host}:{s.kafka_controller_port}\n"
            "inter.broker.listener.name=SASL_PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT\n"
            f"listener.name.sasl_plaintext.sasl.enabled.mechanisms={','.join(client_mechanisms)}\n"
            f"listener.name.sasl_plaintext.{KAFKA_SASL_MECHANISM.lower()}.sasl.jaas.config={scram}\n"
            + (f"listener.name.sasl_plaintext.plain.sasl.jaas.config={plain}\n" if bootstrap else "")
            + f"sasl.mechanism.inter.broker.protocol={client_mechanisms[-1]}\n"
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN\n"
            f"listener.name.controller.plain.sasl.jaas.config={plain}\n"
            "sasl.mechanism.controller.protocol=PLAIN\n"
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
        ))
        write_private(self.client_config, "security.protocol=SASL_PLAINTEXT\n"
                                          f"sasl.mechanism={KAFKA_SASL_MECHANISM}\nsasl.jaas.config={scram}\n")
        self.log4j_config.write_text(LOG4J2_PROPERTIES)

    def _store_credential(self) -> None:
        """Upsert the SCRAM credential through the broker, signed in with PLAIN (the bootstrap
        configuration). The password goes in 0600 files, not on a command line others can read."""
        s = self.settings
        with tempfile.TemporaryDirectory(dir=self.state) as folder:
            admin = write_private(Path(folder) / "admin.properties", "security.protocol=SASL_PLAINTEXT\n"
                                  f"sasl.mechanism=PLAIN\nsasl.jaas.config={self._jaas('plain.PlainLoginModule')}\n")
            # A file's value goes in without the brackets ``--add-config`` strips (the password holds
            # none of ``,[]``: the settings refuse them).
            request = write_private(Path(folder) / "scram.properties", f"{KAFKA_SASL_MECHANISM}="
                                    f"iterations={SCRAM_ITERATIONS},password={s.kafka_password}\n")
            run(self.java_command("kafka.admin.ConfigCommand", "--bootstrap-server", f"127.0.0.1:{s.kafka_port}",
                                  "--command-config", admin, "--alter", "--entity-type", "users",
                                  "--entity-name", s.kafka_user, "--add-config-file", request),
                what="storing Kafka's SCRAM credential", log=self.settings.logs_dir / "kafka-credential.log",
                secrets=[s.kafka_password])
        write_private(self.credential_marker, self._credential_fingerprint())

    def command(self) -> list[str]:
        return self.java_command("kafka.Kafka", self.config, jvm_opts=JVM_OPTS)

    def healthy(self) -> bool:
        """Signed in with SCRAM and answered. While a start has yet to store the credential, nobody
        can sign in so, and the client listener answering is all :meth:`after_start` needs."""
        s = self.settings
        if not self._credential_stored:
            return port_open("127.0.0.1", s.kafka_port)
        try:
            return _metadata_brokers("127.0.0.1", self.port(), s.kafka_user, s.kafka_password) >= 1
        except (OSError, struct.error, KeyError, ValueError):
            return False

    def after_start(self) -> None:
        """After a bootstrap start: store the credential, then start again without PLAIN."""
        if self._credential_stored:
            return
        self._store_credential()
        print(f"[{self.name}] SCRAM credential of {self.settings.kafka_user!r} stored; restarting with SCRAM only",
              flush=True)
        self.stop()
        self.start()
