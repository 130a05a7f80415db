"""http(s):// media against real HTTP servers on loopback: refused by default (loopback is not public), fetched
when its network is allowed, a redirect to a refused address refused, hosts allow-listed, the size cap enforced
while reading, timeouts and retries bounded, and an image event by URL through the real pipeline."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from PIL import Image

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.fetch import fetch_uri
from embedstream.pipelines.media.http_fetch import address_allowed
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.schemas.settings import MediaSettings, Settings
from embedstream.workers.sample_media import sample_photos
from tests.helpers import read_topic, send_raw, settings_env, stored_ids
from tests.http_site import Site, drip

BODY = b"\x89PNG pretend picture bytes" * 100
LIMIT = 1 << 20


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


def raw_route(stall: bytes, every_s: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """Answers by hand: ``stall`` over and over, ``every_s`` apart (what a hostile server does between the
    request and a usable body)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        try:
            for _ in range(600):
                handler.wfile.write(stall)
                handler.wfile.flush()
                time.sleep(every_s)
        except OSError:
            pass

    return answer


def endless_trailers(handler: BaseHTTPRequestHandler) -> None:
    """A one-byte chunked body whose trailer section never ends."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n")
    raw_route(b"X-Trailer: " + b"y" * 1000 + b"\r\n", 0.01)(handler)


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
            "/drip": drip,
            "/endless-continue": raw_route(b"HTTP/1.1 100 Continue\r\n\r\n", 0.05),
            "/dripped-headers": raw_route(b"X", 0.3),  # a status line that never ends
            "/endless-trailers": endless_trailers,
            "/to-other": lambda h: redirect(h, 302, f"{other.url}/secret"),
            "/relative": lambda h: redirect(h, 301, "/picture"),
            "/to-bad-port": lambda h: redirect(h, 302, "http://127.0.0.1:99999/x"),
            "/to-unclosed": lambda h: redirect(h, 302, "http://[::1/x"),
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


@pytest.mark.unit
def test_loopback_is_refused_unless_its_network_is_allowed(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    error = refused(f"{main.url}/picture", media())
    assert error.reason.value == "uri_not_allowed" and "not a public address" in str(error)
    assert main.hits["/picture"] == 0  # refused before connecting
    assert fetch_uri(f"{main.url}/picture", media(remote_networks=["127.0.0.1/32"]), LIMIT) == BODY


@pytest.mark.unit
def test_a_redirect_is_checked_like_the_first_url(sites: tuple[Site, Site]) -> None:
    main, other = sites
    allowed = media(remote_networks=["127.0.0.1/32"])  # 127.0.0.2 stays refused
    error = refused(f"{main.url}/to-other", allowed)
    assert error.reason.value == "uri_not_allowed" and "127.0.0.2" in str(error)
    assert other.hits["/secret"] == 0
    assert fetch_uri(f"{main.url}/relative", allowed, LIMIT) == BODY  # an allowed redirect is followed


@pytest.mark.unit
def test_hosts_outside_the_allow_list_are_refused(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    listed = media(remote_networks=["127.0.0.0/8"], remote_hosts=["media.example.com", "*.cdn.example.com"])
    assert "remote_hosts" in str(refused(f"{main.url}/picture", listed))
    assert fetch_uri(f"{main.url}/picture", media(remote_networks=["127.0.0.0/8"], remote_hosts=["127.0.0.1"]), LIMIT)


@pytest.mark.unit
def test_size_is_capped_declared_or_not(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    allowed = media(remote_networks=["127.0.0.1/32"])
    assert refused(f"{main.url}/declared-huge", allowed).reason.value == "oversized"
    assert refused(f"{main.url}/endless", allowed).reason.value == "oversized"


@pytest.mark.unit
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


@pytest.mark.unit
def test_a_dripping_server_is_bounded_by_the_whole_fetch_not_each_read(sites: tuple[Site, Site]) -> None:
    main, _ = sites
    started = time.monotonic()
    error = refused(f"{main.url}/drip", media(remote_networks=["127.0.0.1/32"], fetch_timeout_s=2.0, fetch_retries=0))
    took = time.monotonic() - started
    assert error.reason.value == "fetch_failed" and "fetch_timeout_s" in str(error), error
    assert took < 4.0, took  # each byte came within the timeout; the whole is bounded by it


@pytest.mark.unit
@pytest.mark.parametrize("path", ["/endless-continue", "/dripped-headers", "/endless-trailers"])
def test_the_whole_answer_is_bounded_not_only_the_body(sites: tuple[Site, Site], path: str) -> None:
    """A server that never finishes its status line, repeats ``100 Continue`` or sends trailers forever:
    http.client waits inside its own loops there, each wait within the socket timeout. The try's deadline
    still ends it."""
    main, _ = sites
    started = time.monotonic()
    error = refused(f"{main.url}{path}", media(remote_networks=["127.0.0.1/32"], fetch_timeout_s=2.0, fetch_retries=0))
    assert error.reason.value == "fetch_failed" and "fetch_timeout_s" in str(error), error
    assert time.monotonic() - started < 4.0


@pytest.mark.unit
def test_a_fifo_inside_the_media_roots_is_refused_at_once(tmp_path) -> None:
    fifo = tmp_path / "never.jpg"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: none will
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        fetch_uri(fifo.as_uri(), MediaSettings(roots=[tmp_path]), LIMIT)
    assert caught.value.reason.value == "uri_not_allowed" and "not a regular file" in str(caught.value)
    assert time.monotonic() - started < 1.0


@pytest.mark.integration
def test_a_drain_with_a_dripping_url_and_a_fifo_ends(make_settings, media_models, tmp_path, sites) -> None:
    """The whole process must end: the drip's fetch is bounded, the FIFO refused, and a fetch the step gave up
    on (decode_timeout_s under fetch_timeout_s here) is abandoned on a daemon thread that cannot hold the exit."""
    main, _ = sites
    roots = tmp_path / "media"
    roots.mkdir()
    os.mkfifo(roots / "never.jpg")
    png = roots / "fine.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png)
    settings = make_settings(
        kafka={"partitions": 1},
        media={
            "roots": [str(roots)],
            "remote": True,
            "remote_networks": ["127.0.0.1/32"],
            "fetch_timeout_s": 30.0,
            "fetch_retries": 0,
            "decode_timeout_s": 2.0,
        },
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])

    def image(event_id: str, uri: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return (
            event_id.encode(),
            json.dumps({"schema": 1, "id": event_id, "modality": "image", "uri": uri}).encode(),
            [],
        )

    send_raw(  # two stuck fetches take both prepare threads: the events behind them must move to the new pool
        settings,
        [
            image("drip", f"{main.url}/drip"),
            image("drip2", f"{main.url}/drip"),
            image("fifo", (roots / "never.jpg").as_uri()),
            image("fine", png.as_uri()),
            image("fine2", png.as_uri()),
        ],
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", "ingest", "--mode", "drain"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60  # not the 30 s fetch timeout plus a wait for the abandoned thread
    assert stored_ids(settings) == {"fine", "fine2"}
    letters = read_topic(settings, settings.kafka.dead_letter_topic)
    reasons = {r.key: DeadLetter.context_of(r.headers)["reason"] for r in letters}
    assert reasons == {b"drip": "decode_timeout", b"drip2": "decode_timeout", b"fifo": "uri_not_allowed"}, reasons


@pytest.mark.unit
@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:99999/x",  # a port out of range
        "http://a..b/x",  # IDNA refuses an empty label
        "http://[::1/x",  # an unclosed IPv6 literal
        "http://exa mple.com/x",
        "file:///media/a%00b.jpg",  # a NUL byte in the path
        "/to-bad-port",  # the same, as a redirect's Location
        "/to-unclosed",
    ],
)
def test_a_malformed_uri_is_not_allowed_rather_than_undecodable(sites: tuple[Site, Site], uri: str) -> None:
    main, _ = sites
    settings = media(remote_networks=["127.0.0.1/32"], roots=["/media"], fetch_retries=0)
    error = refused(main.url + uri if uri.startswith("/") else uri, settings)
    assert error.reason.value == "uri_not_allowed", error


@pytest.mark.unit
@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("169.254.169.254", False),  # cloud metadata
        ("10.0.0.5", False),
        ("100.64.1.1", False),  # shared (carrier-grade NAT)
        ("::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # loopback in IPv6 clothing
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::a9fe:a9fe", False),  # local-use NAT64
        ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::a9fe:a9fe", False),
        ("::ffff:0:a9fe:a9fe", False),  # IPv4-translated (SIIT)
        ("2001:0:4136:e378:8000:63bf:f5fe:fe55", False),  # Teredo: client 10.1.1.170
        ("fec0::1", False),  # site-local
        ("::", False),
        ("224.0.0.1", False),
        ("64:ff9b::5db8:d70e", True),  # NAT64 of a public address
        ("2002:5db8:d70e::1", True),  # 6to4 of a public address
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
    ],
)
def test_only_public_addresses_pass_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), []) is allowed


@pytest.mark.integration
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
