"""The container image, built for real: the runtime image from infra/docker/Dockerfile (no registry: the base is
made with mmdebstrap, wheels and encoders come from the host), a drain inside it, and compose.ci.yaml brought up
with events produced from the host and found through the published API port.

Docker must be able to start here (``make docker`` installs it; the fixture starts dockerd as root). The test
is skipped, saying why, only where no Docker daemon can run at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from embedstream.schemas.settings import Settings
from embedstream.workers.broker import free_port
from tests.helpers import read_topic, send_raw, text_event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.infra]

ROOT = Path(__file__).parents[1]
BASE_IMAGE = "local/debian:bookworm"
IMAGE = "embedstream:test"


def docker(*args: str, timeout: float = 300, check: bool = True, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def daemon_up() -> bool:
    return (
        shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A running Docker daemon: the one that runs already, or dockerd started here (as root) and stopped after."""
    if daemon_up():
        yield
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.skip("no Docker daemon can start here (dockerd missing or not root): `make docker` installs it")
    log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "wb")  # noqa: SIM115 - lives with the daemon
    process = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not daemon_up():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.skip(f"dockerd did not start (see {log.name})")
        time.sleep(0.5)
    yield
    process.terminate()
    process.wait(timeout=60)
    log.close()


@pytest.fixture(scope="session")
def image(docker_daemon: None) -> str:
    """embedstream's runtime image, built by infra/docker/build.sh on a Debian base made here."""
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        assert shutil.which("mmdebstrap"), "mmdebstrap is missing: `make docker` installs it"
        subprocess.run([str(ROOT / "infra" / "docker" / "debian-base.sh"), BASE_IMAGE], check=True, timeout=600)
    env = {**os.environ, "BASE_IMAGE": BASE_IMAGE, "PYTHON": sys.executable}
    build = subprocess.run(
        [str(ROOT / "infra" / "docker" / "build.sh"), "runtime", IMAGE],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def test_the_image_runs_the_cli_as_a_non_root_user_without_torch(image: str) -> None:
    assert "usage: embedstream" in docker("run", "--rm", image, "--help")
    assert docker("run", "--rm", "--entrypoint", "id", image, "-u").strip() == "10001"
    models = docker("run", "--rm", image, "models", "list")
    for name in ("minilm@1", "effnet@1", "effnet-conse@1", "voice@1"):
        assert name in models
    probe = "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)"
    assert docker("run", "--rm", "--entrypoint", "python3", image, "-c", probe).split() == ["True", "True"]


def test_a_drain_inside_the_image_with_a_read_only_root(image: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    events = [(None, text_event(f"c{i}", f"container event {i} about mountain hiking"), []) for i in range(20)]
    send_raw(settings, [*events, (None, b'{"schema": 1, "id": "broken"', [])])
    volume = f"es-test-{uuid.uuid4().hex[:8]}"
    kafka = settings.kafka
    variables = {
        "EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "EMBEDSTREAM_KAFKA__TOPIC": kafka.topic,
        "EMBEDSTREAM_KAFKA__DEAD_LETTER_TOPIC": kafka.dead_letter_topic,
        "EMBEDSTREAM_KAFKA__GROUP_ID": kafka.group_id,
    }
    script = "embedstream ingest --mode drain && embedstream search --json -k 3 'walking in the hills'"
    try:
        output = docker(
            "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "-v", f"{volume}:/data",
            *(f"--env={name}={value}" for name, value in variables.items()),
            "--entrypoint", "sh", image, "-c", script,
            timeout=600,
        )  # fmt: skip
    finally:
        docker("volume", "rm", "-f", volume, check=False)
    summary, found = output.strip().splitlines()[-2:]  # the drain's summary, then the search as JSON
    assert summary == "20 points upserted, 1 dead letters"
    hits = json.loads(found)
    assert len(hits) == 3 and all(h["payload"]["id"].startswith("c") for h in hits)
    (dead,) = read_topic(settings, kafka.dead_letter_topic)
    assert dict(dead.headers)["es-dlq-reason"] == b"malformed_json"


def test_compose_ci_serves_what_the_host_produces(image: str) -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: `make docker` installs it"
    kafka_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "EMBEDSTREAM_IMAGE": image,
        "KAFKA_PORT": str(kafka_port),
        "EMBEDSTREAM_API_PORT": str(api_port),
        "QDRANT_API_KEY": "unused-here",
        "EMBEDSTREAM_API_KEYS": "[]",  # the CI override serves with --insecure
    }
    project = f"es{uuid.uuid4().hex[:8]}"
    files = ["-f", str(ROOT / "infra/compose/compose.yaml"), "-f", str(ROOT / "infra/compose/compose.ci.yaml")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([compose, "-p", project, *files, *args], env=env, capture_output=True, text=True)

    api = f"http://127.0.0.1:{api_port}"
    try:
        up = run("up", "-d", "--no-deps", "kafka", "serve-embedded")
        assert up.returncode == 0, up.stderr

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, 120), "the API never answered behind the published port"
        host = Settings.load(kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}"})
        send_raw(host, [(None, text_event(f"h{i}", f"harbour crane number {i} unloads ships"), []) for i in range(25)])

        def stored() -> bool:
            return int(httpx.get(f"{api}/spaces", timeout=5).json()["points"]) >= 25

        assert wait_for(stored, 120), "the 25 events never became points"
        found = httpx.post(f"{api}/search", json={"text": "cranes at the port", "k": 5}, timeout=30).json()
        assert {hit["payload"]["id"][0] for hit in found["hits"]} == {"h"}
        stop = run("stop", "-t", "30", "serve-embedded")
        assert stop.returncode == 0, stop.stderr
        (container,) = run("ps", "-q", "serve-embedded").stdout.split()
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container))
        assert state["ExitCode"] == 0, run("logs", "--tail", "50", "serve-embedded").stdout  # a clean SIGTERM stop
    finally:
        run("down", "-v", "--remove-orphans")
