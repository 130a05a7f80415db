"""http(s):// media against real HTTP servers on loopback: refused by default (loopback is not public), fetched
when its network is allowed, a redirect to a refused address refused, hosts allow-listed, the size cap enforced
while reading, timeouts and retries bounded, and an image event by URL through the real pipeline."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.fetch import fetch_uri
from embedstream.pipelines.media.http_fetch import address_allowed
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.schemas.settings import MediaSettings, Settings
from embedstream.workers.sample_media import sample_photos
from tests.helpers import read_topic, send_raw, stored_ids

BODY = b"\x89PNG pretend picture bytes" * 100
LIMIT = 1 << 20


class Site:
    """One HTTP server on a loopback address; counts requests by path."""

    def __init__(self, host: str, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> None:
        self.hits: Counter[str] = Counter()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                site.hits[path] += 1
                routes.get(path, lambda h: h.send_error(404))(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200, length: bool = True) -> None:
    handler.send_response(status)
    if length:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def slow(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(3)
    send(handler, BODY)


def redirect(handler: BaseHTTPRequestHandler, status: int, location: str) -> None:
    handler.send_response(status)
    handler.send_header("Location", location)
    handler.end_headers()


def endless(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.end_headers()  # no Content-Length: only reading tells the size
    for _ in range(64):
        handler.wfile.write(b"x" * 65536)


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    """A site on 127.0.0.1 and another on 127.0.0.2 (the one the redirect leads to)."""
    flaky = {"count": 0}

    def flaky_route(handler: BaseHTTPRequestHandler) -> None:
        flaky["count"] += 1
        send(handler, b"busy", 503) if flaky["count"] <= 2 else send(handler, BODY)

    other = Site("127.0.0.2", {"/secret": lambda h: send(h, b"internal")})
    main = Site(
        "127.0.0.1",
        {
            "/picture": lambda h: send(h, BODY),
            "/flaky": flaky_route,
            "/down": lambda h: send(h, b"down", 503),
            "/gone": lambda h: send(h, b"gone", 404),
            "/declared-huge": lambda h: send(h, b"x" * (LIMIT + 1)),
            "/endless": endless,
            "/slow": slow,
            "/to-other": lambda h: redirect(h, 302, f"{other.url}/secret"),
            "/relative": lambda h: redirect(h, 301, "/picture"),
        },
    )
    yield main, other
    main.close()
    other.close()


def media(**fields: object) -> MediaSettings:
    return MediaSettings.model_validate({"remote": True, "fetch_timeout_s": 1.0, "fetch_retries": 2, **fields})


def refused(uri: str, settings: MediaSettings) -> MediaError:
    with pytest.raises(MediaError) as caught:
        fetch_uri(uri, settings, LIMIT)
    return caught.value


def test_loopback_is_refused_unless_its_network_is_allowed(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    error = refused(f"{main.url}/picture", media())
    assert error.reason.value == "uri_not_allowed" and "not a public address" in str(error)
    assert main.hits["/picture"] == 0  # refused before connecting
    assert fetch_uri(f"{main.url}/picture", media(remote_networks=["127.0.0.1/32"]), LIMIT) == BODY


def test_a_redirect_is_checked_like_the_first_url(sites: tuple[Site, Site]) -> None:
    main, other = sites
    allowed = media(remote_networks=["127.0.0.1/32"])  # 127.0.0.2 stays refused
    error = refused(f"{main.url}/to-other", allowed)
    assert error.reason.value == "uri_not_allowed" and "127.0.0.2" in str(error)
    assert other.hits["/secret"] == 0
    assert fetch_uri(f"{main.url}/relative", allowed, LIMIT) == BODY  # an allowed redirect is followed


def test_hosts_outside_the_allow_list_are_refused(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    listed = media(remote_networks=["127.0.0.0/8"], remote_hosts=["media.example.com", "*.cdn.example.com"])
    assert "remote_hosts" in str(refused(f"{main.url}/picture", listed))
    assert fetch_uri(f"{main.url}/picture", media(remote_networks=["127.0.0.0/8"], remote_hosts=["127.0.0.1"]), LIMIT)


def test_size_is_capped_declared_or_not(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    allowed = media(remote_networks=["127.0.0.1/32"])
    assert refused(f"{main.url}/declared-huge", allowed).reason.value == "oversized"
    assert refused(f"{main.url}/endless", allowed).reason.value == "oversized"


def test_transient_failures_are_retried_then_dead_lettered(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    allowed = media(remote_networks=["127.0.0.1/32"])
    assert fetch_uri(f"{main.url}/flaky", allowed, LIMIT) == BODY  # two 503s, then the picture
    assert main.hits["/flaky"] == 3
    error = refused(f"{main.url}/down", allowed)
    assert error.reason.value == "fetch_failed" and "3 tries" in str(error) and main.hits["/down"] == 3
    assert refused(f"{main.url}/gone", allowed).reason.value == "fetch_failed" and main.hits["/gone"] == 1
    started = time.monotonic()
    slow = refused(f"{main.url}/slow", media(remote_networks=["127.0.0.1/32"], fetch_retries=0))
    assert slow.reason.value == "fetch_failed" and time.monotonic() - started < 2.5  # the timeout, not the server


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("169.254.169.254", False),  # cloud metadata
        ("10.0.0.5", False),
        ("100.64.1.1", False),  # shared (carrier-grade NAT)
        ("::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # loopback in IPv6 clothing
        ("224.0.0.1", False),
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
    ],
)
def test_only_public_addresses_pass_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), []) is allowed


def test_an_image_by_url_goes_through_the_pipeline(
    make_settings: Callable[..., Settings], media_models: object
) -> None:
    photo = next(iter(sample_photos().values())).read_bytes()
    photo_site = Site("127.0.0.1", {"/photo.jpg": lambda h: send(h, photo)})
    try:
        settings = make_settings(media={"remote": True, "remote_networks": ["127.0.0.1/32"]})

        def event(event_id: str, uri: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
            headers = [("es-id", event_id.encode()), ("es-modality", b"image"), ("es-uri", uri.encode())]
            return event_id.encode(), b"", headers

        send_raw(settings, [event("by-url", f"{photo_site.url}/photo.jpg"), event("internal", "http://127.0.0.2/x")])
        result = run_ingest(settings)
        assert result.points_upserted >= 1 and "by-url" in stored_ids(settings)
        (dead,) = read_topic(settings, settings.kafka.dead_letter_topic)
        context = DeadLetter.context_of(dead.headers)
        assert context["reason"] == "uri_not_allowed" and "127.0.0.2" in context["message"]
    finally:
        photo_site.close()
