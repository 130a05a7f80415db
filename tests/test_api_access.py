"""Who may use the API: keys and scopes, the rate limit, CORS, TLS, the refusal to listen beyond loopback
without keys, and the page with a key — against ``embedstream serve`` in a subprocess over a real store."""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.schemas.settings import ApiSettings, Settings
from embedstream.workers.api.auth import MAX_BUCKETS, Gate, key_hash
from embedstream.workers.broker import free_port
from tests.helpers import Server, settings_env

READ_KEY = "es_read-key-for-tests-only"
ADMIN_KEY = "es_admin-key-for-tests-only"
KEYS = [
    {"name": "app", "sha256": key_hash(READ_KEY), "scope": "read"},
    {"name": "ops", "sha256": key_hash(ADMIN_KEY), "scope": "admin"},
]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings whose store holds an empty collection (serve needs one), with these ``api`` settings."""

    def factory(**api: object) -> Settings:
        settings = make_settings(api=api)
        store = open_store(settings.qdrant)
        store.ensure_spaces([SpaceSpec("minilm", 384, "minilm@1")])
        store.close()
        return settings

    return factory


@pytest.mark.integration
def test_keys_and_scopes(api_settings: Callable[..., Settings]) -> None:
    server = Server(api_settings(keys=KEYS, metrics_public=False))
    try:
        open_page = httpx.get(f"{server.url}/", timeout=10)
        assert open_page.status_code == 200 and "embedstream" in open_page.text  # the page; its calls need the key
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        missing = httpx.get(f"{server.url}/spaces", timeout=10)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "needs a key" in missing.json()["detail"]
        wrong = httpx.get(f"{server.url}/spaces", headers={"authorization": "Bearer es_nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["detail"] == "the API key is not valid"
        bearer = httpx.get(f"{server.url}/spaces", headers={"authorization": f"Bearer {READ_KEY}"}, timeout=10)
        assert bearer.status_code == 200
        assert httpx.get(f"{server.url}/spaces", headers={"api-key": READ_KEY}, timeout=10).status_code == 200
        unknown_point = httpx.get(
            f"{server.url}/points/00000000-0000-5000-8000-000000000000", headers={"api-key": READ_KEY}, timeout=10
        )
        assert unknown_point.status_code == 404  # past the gate, the API's own answers
        metrics = httpx.get(f"{server.url}/metrics", headers={"api-key": READ_KEY}, timeout=10)
        assert metrics.status_code == 403 and "admin" in metrics.json()["detail"]
        counted = httpx.get(f"{server.url}/metrics", headers={"api-key": ADMIN_KEY}, timeout=10)
        assert counted.status_code == 200
        # every answer is counted, the gate's own denials (before any route matched) too
        assert 'embedstream_http_requests_total{endpoint="unmatched",status="401"} 2.0' in counted.text
        assert 'embedstream_http_requests_total{endpoint="/spaces",status="200"} 2.0' in counted.text
        assert 'endpoint="/points/{point_id}",status="404"} 1.0' in counted.text
    finally:
        output = server.stop()
    assert READ_KEY not in output and ADMIN_KEY not in output


@pytest.mark.integration
def test_a_key_over_its_rate_waits(api_settings: Callable[..., Settings]) -> None:
    server = Server(api_settings(keys=KEYS, rate_per_s=0.5, rate_burst=2))
    try:
        answers = [httpx.get(f"{server.url}/spaces", headers={"api-key": READ_KEY}, timeout=10) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[2].headers["retry-after"]) >= 1
        other = httpx.get(f"{server.url}/spaces", headers={"api-key": ADMIN_KEY}, timeout=10)
        assert other.status_code == 200  # each key has its own bucket
    finally:
        server.stop()


@pytest.mark.integration
def test_metrics_follow_the_keys_and_are_rate_limited(api_settings: Callable[..., Settings]) -> None:
    keyed = Server(api_settings(keys=KEYS, rate_per_s=0.5, rate_burst=2))
    try:
        assert httpx.get(f"{keyed.url}/metrics", timeout=10).status_code == 401  # keys configured: not public
        assert httpx.get(f"{keyed.url}/metrics", headers={"api-key": READ_KEY}, timeout=10).status_code == 403
        answers = [httpx.get(f"{keyed.url}/metrics", headers={"api-key": ADMIN_KEY}, timeout=10) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
    finally:
        keyed.stop()
    open_server = Server(api_settings(rate_per_s=0.5, rate_burst=2))
    try:
        answers = [httpx.get(f"{open_server.url}/metrics", timeout=10) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]  # no keys: public, and still limited
    finally:
        open_server.stop()


@pytest.mark.integration
def test_a_client_cannot_choose_the_address_its_rate_is_counted_under(api_settings: Callable[..., Settings]) -> None:
    server = Server(api_settings(rate_per_s=0.5, rate_burst=2))
    try:
        spoofed = [
            httpx.get(f"{server.url}/spaces", headers={"x-forwarded-for": f"203.0.113.{i}"}, timeout=10)
            for i in range(3)
        ]
        assert [a.status_code for a in spoofed] == [200, 200, 429]  # one bucket: the socket's address
    finally:
        server.stop()


@pytest.mark.unit
def test_the_rate_limit_table_stays_bounded() -> None:
    gate = Gate(ApiSettings(rate_per_s=0.001, rate_burst=2))
    for i in range(MAX_BUCKETS * 2):
        gate.check("/spaces", {}, f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(gate._buckets) <= MAX_BUCKETS
    assert gate.check("/spaces", {}, "10.0.0.1") is None  # forgotten: a full burst again, never an error


def raw_upload(server: Server, head: bytes, chunks: int) -> tuple[bytes, int]:
    """Send ``head`` then up to ``chunks`` MiB in HTTP chunks until the server answers; its answer's first
    line and the bytes of body sent."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        part = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        conn.sendall(head + b"%x\r\n" % len(part) + part + b"\r\n")
        sent = 0
        block = b"x" * (1 << 20)
        try:
            for _ in range(chunks):
                conn.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
                sent += len(block)
                if select.select([conn], [], [], 0)[0]:
                    break  # the server has answered (or closed)
        except OSError:  # it closed the connection under the upload: what a refusal does
            pass
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                answer += chunk
    return answer.split(b"\r\n", 1)[0], sent


@pytest.mark.integration
def test_an_upload_over_the_limit_is_refused_before_it_is_read(api_settings: Callable[..., Settings]) -> None:
    server = Server(api_settings())
    limit = 1 << 20  # the tests' pipeline.max_event_bytes is the default: check it is what the server uses
    try:
        declared = (
            b"POST /search/file HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 80000000\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.sendall(declared + b"--b\r\n")  # 80 MB declared, a few bytes sent
            first = conn.recv(65536).split(b"\r\n", 1)[0]
        assert first == b"HTTP/1.1 413 Request Entity Too Large", first
        chunked = (
            b"POST /search/file HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        status, sent = raw_upload(server, chunked, chunks=80)
        assert status == b"HTTP/1.1 413 Request Entity Too Large", status
        assert sent < 16 * limit, sent  # it stopped reading near the limit, not at 80 MB
    finally:
        server.stop()


@pytest.mark.integration
def test_cors_is_off_unless_origins_are_listed(api_settings: Callable[..., Settings]) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    closed = Server(api_settings())
    try:
        answer = httpx.options(f"{closed.url}/search", headers=preflight, timeout=10)
        assert "access-control-allow-origin" not in answer.headers
    finally:
        closed.stop()
    listed = Server(api_settings(keys=KEYS, cors_origins=["https://app.example"]))
    try:
        answer = httpx.options(f"{listed.url}/search", headers=preflight, timeout=10)
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.options(f"{listed.url}/search", headers={**preflight, "origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    finally:
        listed.stop()


@pytest.mark.integration
def test_serve_refuses_to_listen_beyond_loopback_without_keys(api_settings: Callable[..., Settings]) -> None:
    settings = api_settings()
    port = free_port()
    refused = subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--insecure" in refused.stderr
    server = Server(settings, "--host", "0.0.0.0", "--insecure")  # said out loud: it starts
    try:
        assert httpx.get(f"{server.url}/spaces", timeout=10).status_code == 200
    finally:
        assert "without API keys (--insecure)" in server.stop()


@pytest.mark.integration
def test_https_with_the_configured_certificate(api_settings: Callable[..., Settings], tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl makes the test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    trust = ssl.create_default_context(cafile=str(cert))
    server = Server(api_settings(tls_certfile=str(cert), tls_keyfile=str(key)), scheme="https", verify=trust)
    try:
        assert httpx.get(f"{server.url}/healthz", verify=trust, timeout=10).status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets nowhere
            httpx.get(server.url.replace("https", "http") + "/healthz", timeout=5).raise_for_status()
    finally:
        server.stop()


@pytest.mark.browser
def test_the_page_asks_for_the_key_once_and_uses_it_in_chromium(api_settings: Callable[..., Settings]) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium (make setup does: apt-get install chromium)"
    server = Server(api_settings(keys=KEYS))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                page = browser.new_page()
                asked: list[str] = []

                def answer(dialog: Any) -> None:
                    asked.append(dialog.message)
                    dialog.accept(READ_KEY)

                page.on("dialog", answer)
                page.goto(server.url)
                page.wait_for_function("document.querySelector('#stats').textContent.includes('points in')")
                page.fill("#query", "anything at all")
                page.press("#query", "Enter")
                page.wait_for_function("document.querySelector('#status').textContent !== 'searching…'")
                assert len(asked) == 1 and "API key" in asked[0]  # asked once; the search reused the key
            finally:
                browser.close()
    finally:
        server.stop()
