"""Apache Kafka 4.4 as a test broker: the real thing users run, beside tansu.

The jars come from Maven Central once (``tests/kafka/pom.xml``, ``mvn dependency:copy-dependencies``) into
``~/.cache/embedstream/kafka-4.4.0/libs`` (about 55 MB); after that starting a broker needs no network. A broker is
one JVM in KRaft combined mode (broker and controller in one process) on free 127.0.0.1 ports, its storage
formatted in a temporary folder, so it is empty at every start.

``secure=True`` adds a second listener, SASL_SSL with SCRAM-SHA-512, its certificate signed by a CA made for the
run (``ca_file``) and its users created at format time (``SCRAM_USERS``): what docs/configuration.md's Kafka security settings
talk to. The plaintext listener stays for the tests' own admin calls.

Kafka's own command-line tools run from the same jars (``tool``): consumer groups, the console producer.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from embedstream.schemas.settings import default_cache_dir
from embedstream.workers.broker import free_port, port_open
from tests.maven_jars import maven_libs

VERSION = "4.4.0"
HERE = Path(__file__).parent / "kafka"
READY_TIMEOUT_S = 90.0
SCRAM_USERS = {"ingest": "ingest-secret-1", "replayer": "replayer-secret-2"}


class KafkaUnavailable(RuntimeError):
    """Maven, Java or the broker itself failed: the message says which and where its log is."""


def kafka_libs(cache: Path | None = None) -> Path:
    """The folder of Kafka's jars, fetched with Maven the first time."""
    root = (cache or default_cache_dir()) / f"kafka-{VERSION}"
    return maven_libs(HERE / "pom.xml", root, f"Apache Kafka {VERSION}'s jars for the tests")


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found:
        raise KafkaUnavailable("java is not installed: Apache Kafka's test broker needs Java 17 or newer")
    return found


@dataclass
class ApacheKafka:
    """A running broker. ``bootstrap``: its PLAINTEXT listener; ``secure_bootstrap``: SASL_SSL when started so."""

    process: subprocess.Popen[bytes]
    folder: Path
    libs: Path
    port: int
    secure_port: int | None = None
    ca_file: Path | None = None
    log_file: Path = field(default_factory=Path)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        assert self.secure_port is not None, "started without secure=True"
        return f"127.0.0.1:{self.secure_port}"

    def tool(self, main_class: str, *args: str, input: bytes | None = None, timeout_s: float = 120) -> str:
        """Run one of Kafka's own command-line tools (its Java main class) and return what it printed."""
        result = subprocess.run(
            [java(), "-Xmx256m", "-cp", f"{self.libs}/*", main_class, *args],
            input=input,
            capture_output=True,
            timeout=timeout_s,
            env={**os.environ, "KAFKA_LOG4J_OPTS": ""},
        )
        out = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise KafkaUnavailable(
                f"{main_class} {' '.join(args)} exited {result.returncode}:\n{out}\n{result.stderr.decode()}"
            )
        return out

    def stop(self, timeout_s: float = 20.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _certificates(folder: Path) -> tuple[Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost: (the CA's PEM, the server's key + chain PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "embedstream test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, server_file = folder / "ca.pem", folder / "server.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    server_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + server.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    return ca_file, server_file


def _properties(folder: Path, port: int, controller: int, secure_port: int | None, server_pem: Path | None) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{port}"]
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={folder / 'data'}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "message.max.bytes=16777216",
        "log.cleaner.backoff.ms=500",
        "log.retention.check.interval.ms=1000",
        "auto.create.topics.enable=true",
    ]
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if secure_port is not None and server_pem is not None:
        listeners.append(f"SASL_SSL://127.0.0.1:{secure_port}")
        advertised.append(f"SASL_SSL://127.0.0.1:{secure_port}")
        protocols += ",SASL_SSL:SASL_SSL"
        lines += [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={server_pem}",
        ]
    lines += [
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
        f"listener.security.protocol.map={protocols}",
    ]
    return "\n".join(lines) + "\n"


def start_kafka(folder: Path, secure: bool = False, cache: Path | None = None) -> ApacheKafka:
    """Format a fresh KRaft storage in ``folder`` and start Apache Kafka on free loopback ports; wait until its
    metadata answers (a client's view, not only an open port)."""
    libs = kafka_libs(cache)
    folder.mkdir(parents=True, exist_ok=True)
    port, controller = free_port(), free_port()
    secure_port = free_port() if secure else None
    ca_file, server_pem = _certificates(folder) if secure else (None, None)
    config = folder / "server.properties"
    config.write_text(_properties(folder, port, controller, secure_port, server_pem))
    cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    classpath = f"{libs}/*"
    logging_opt = f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}"
    scram = [
        a for user, pw in SCRAM_USERS.items() for a in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]")
    ]
    formatted = subprocess.run(
        [
            java(),
            "-Xmx256m",
            logging_opt,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster,
            "-c",
            str(config),
            *(scram if secure else []),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if formatted.returncode != 0:
        raise KafkaUnavailable(f"kafka-storage format failed:\n{formatted.stdout}\n{formatted.stderr}")
    log_file = folder / "kafka.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [java(), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", logging_opt, "-cp", classpath, "kafka.Kafka", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    running = ApacheKafka(process, folder, libs, port, secure_port, ca_file, log_file)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (port_open("127.0.0.1", port) and _answers(running.bootstrap)):
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise KafkaUnavailable(f"Apache Kafka did not start on 127.0.0.1:{port}; see {log_file}")
        time.sleep(0.2)
    return running


def _answers(bootstrap: str) -> bool:
    """True once the broker answers a metadata request (its listener opens a moment before it serves)."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, bootstrap_timeout_ms=3000)
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()
