"""``http(s)://`` media fetched the way a service that takes URLs from strangers must fetch them.

An event's URI is untrusted input: without care it reads the cloud's metadata service (169.254.169.254), an
admin page on the pod network or a service on loopback, and a slow or endless response ties up a worker. So:

* **Hosts.** With ``media.remote_hosts`` set, only those hosts (``name`` or ``*.domain``) are fetched.
* **Addresses.** The host is resolved here and the connection goes to the address that was checked (no second
  resolution a DNS rebinding could change). Only globally routable addresses pass: private, loopback,
  link-local (the metadata services), shared (100.64/10), reserved, multicast and IPv4-mapped forms of those are
  refused, unless an address lies in ``media.remote_networks`` (an internal media server you trust).
* **Redirects** (at most ``MAX_REDIRECTS``) are followed by hand, each target checked like the first URL.
* **Time and size.** ``media.fetch_timeout_s`` bounds each try as a whole — connect, request, redirects, the
  status line, any run of ``100 Continue``, headers, chunk framing and trailers and the body together, not each
  read (a server dripping a byte a second would otherwise hold a worker forever): every socket wait gets only
  the time left, and a watchdog shuts the socket at the deadline for the waits inside ``http.client``. The size
  cap is enforced while reading (a declared ``Content-Length`` over it is refused unread). The connection is
  closed however a try ends.
* **Retries.** Connection errors, timeouts, 429 and 5xx are retried ``media.fetch_retries`` times with
  exponential backoff, then the event is dead-lettered ``fetch_failed`` (replayable once the server is back).
  A refused URI is ``uri_not_allowed`` at once; another 4xx is ``fetch_failed`` at once.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from fnmatch import fnmatchcase
from urllib.parse import SplitResult, urljoin, urlsplit

from embedstream.pipelines.media.errors import MediaError
from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.settings import MediaSettings

MAX_REDIRECTS = 5
BACKOFF_S = 0.25
CHUNK = 64 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Transient(Exception):
    """A failure worth another try (the connection, a timeout, 429 or a 5xx)."""


def fetch_http(uri: str, media: MediaSettings, max_bytes: int) -> bytes:
    """The body of ``uri`` (http or https), within the rules above, or a ``MediaError`` saying which failed."""
    attempts = media.fetch_retries + 1
    for attempt in range(attempts):
        try:
            return _follow(uri, media, max_bytes, time.monotonic() + media.fetch_timeout_s)
        except _Transient as exc:
            if attempt + 1 == attempts:
                raise MediaError(Reason.FETCH_FAILED, f"cannot fetch {uri} ({attempts} tries): {exc}") from exc
            time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _follow(uri: str, media: MediaSettings, max_bytes: int, deadline: float) -> bytes:
    """One try: ``uri`` and its redirects, all within ``deadline`` (monotonic seconds)."""
    url = uri
    for _ in range(MAX_REDIRECTS + 1):
        parts, host, port = _split(url, uri)
        _check_host(host, media, url)
        address = _resolve(host, port, media, url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Transient(f"{uri} took longer than media.fetch_timeout_s ({media.fetch_timeout_s}s)")
        connection = _connection(parts.scheme, host, address, port, left)
        # Every wait of http.client (the status line, a run of 1xx answers, headers, chunk sizes, trailers) gets its
        # own socket timeout; the watchdog bounds them together: at the deadline it shuts the socket, and whatever
        # read is waiting ends at once.
        watchdog = threading.Timer(left, _cut, args=(connection,))
        watchdog.daemon = True
        watchdog.start()
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                name = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
                netloc = name if parts.port is None else f"{name}:{parts.port}"  # never the URL's user:password@
                connection.request("GET", path, headers={"Host": netloc, "User-Agent": "embedstream"})
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise MediaError(Reason.FETCH_FAILED, f"{url} redirects nowhere (HTTP {response.status})")
                try:
                    url = urljoin(url, location)
                except ValueError as exc:  # a Location that is no URL: checked like the event's own URI
                    raise MediaError(Reason.URI_NOT_ALLOWED, f"{url} redirects to {location!r}: {exc}") from exc
                continue
            if response.status in RETRY_STATUSES:
                raise _Transient(f"HTTP {response.status} from {url}")
            if response.status != 200:
                raise MediaError(Reason.FETCH_FAILED, f"HTTP {response.status} from {url}")
            return _read_capped(response, max_bytes, url, connection, deadline)
        except _Transient as exc:
            if time.monotonic() >= deadline:
                raise _Transient(f"{url} took longer than media.fetch_timeout_s ({media.fetch_timeout_s}s)") from exc
            raise
        finally:
            watchdog.cancel()
            connection.close()
    raise MediaError(Reason.FETCH_FAILED, f"{uri} redirects more than {MAX_REDIRECTS} times")


def _cut(connection: http.client.HTTPConnection) -> None:
    """The deadline passed: end every wait on the connection's socket (reads return, the try fails)."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _split(url: str, origin: str) -> tuple[SplitResult, str, int]:
    """``url``'s parts, host and port, or ``uri_not_allowed`` for a URL that is not a well-formed http(s) one (a
    port out of range, an unclosed ``[``, a control character): the event's fault, not a failed fetch."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise MediaError(Reason.URI_NOT_ALLOWED, f"{url!r} (from {origin!r}) is not a valid URL: {exc}") from exc
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise MediaError(Reason.URI_NOT_ALLOWED, f"{url} (from {origin}) is not an http(s) URL")
    if any(ord(c) < 33 or c in "\x7f%" for c in host):
        raise MediaError(Reason.URI_NOT_ALLOWED, f"{url!r} (from {origin!r}) has an invalid host")
    return parts, host, port


def _check_host(host: str, media: MediaSettings, url: str) -> None:
    if media.remote_hosts and not any(fnmatchcase(host.lower(), rule.lower()) for rule in media.remote_hosts):
        raise MediaError(Reason.URI_NOT_ALLOWED, f"host {host} of {url} is not in media.remote_hosts")


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are the IPv4
SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765): the last 32 bits are the IPv4
REFUSED_V6 = (
    ipaddress.ip_network("64:ff9b:1::/48"),  # RFC 8215 local-use NAT64: reaches whatever the local NAT64 serves
    ipaddress.ip_network("fec0::/10"),  # site-local (deprecated, RFC 3879): routed inside a site
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries — IPv4-mapped, IPv4-compatible (``::a.b.c.d``), IPv4-translated
    (``::ffff:0:a.b.c.d``), NAT64 (well-known prefix), 6to4 (``2002::/16``), Teredo's client — or None. Each
    reaches that IPv4 host through a translator or a tunnel, so it is judged as that host."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in NAT64 or address in SIIT:
        return low
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d (:: and ::1 are themselves)
        return low
    return None


def address_allowed(address: IpAddress, networks: list[str]) -> bool:
    """May this address be fetched: listed in ``networks``, or globally routable (so not the metadata service,
    loopback, a private or shared network). An IPv6 form that carries an IPv4 address (``embedded_ipv4``) must
    pass as that IPv4 address too, and deprecated or local-use IPv6 ranges never pass unless listed."""
    if any(address in ipaddress.ip_network(network, strict=False) for network in networks):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in refused for refused in REFUSED_V6) or address.is_site_local:
            return False
        carried = embedded_ipv4(address)
        if carried is not None:
            return address_allowed(carried, networks)
    return address.is_global and not address.is_multicast


def _resolve(host: str, port: int, media: MediaSettings, url: str) -> IpAddress:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise _Transient(f"cannot resolve {host}: {exc}") from exc
    except (UnicodeError, ValueError) as exc:  # "a..b": no name can be made of it (IDNA refuses empty labels)
        raise MediaError(Reason.URI_NOT_ALLOWED, f"{url}: {host!r} is not a valid host name ({exc})") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    refused = [a for a in addresses if not address_allowed(a, media.remote_networks)]
    if refused:  # all of them must pass: a client may pick any of them
        raise MediaError(
            Reason.URI_NOT_ALLOWED,
            f"{url}: {host} resolves to {refused[0]}, not a public address (allow it in media.remote_networks)",
        )
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the checked address, whatever the host name would resolve to now."""

    def __init__(self, address: IpAddress, port: int, timeout: float) -> None:
        super().__init__(str(address), port, timeout=timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the checked address, the certificate verified for the host name (SNI too)."""

    def __init__(self, host: str, address: IpAddress, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = str(address)

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _connection(scheme: str, host: str, address: IpAddress, port: int, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return _PinnedHTTPS(host, address, port, timeout)
    return _PinnedHTTP(address, port, timeout)


def _read_capped(
    response: http.client.HTTPResponse,
    max_bytes: int,
    url: str,
    connection: http.client.HTTPConnection,
    deadline: float,
) -> bytes:
    """The body, read a socket's worth at a time, each wait bounded by what is left of the try's time."""
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise MediaError(Reason.OVERSIZED, f"{url} declares {declared} bytes, over the limit of {max_bytes}")
    body = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Transient(f"reading {url} took longer than media.fetch_timeout_s ({len(body)} bytes read)")
            if connection.sock is not None:
                connection.sock.settimeout(left)
            chunk = response.read1(CHUNK)
            if not chunk:
                if time.monotonic() >= deadline:  # ended by the watchdog (endless trailers), not by the server
                    raise _Transient(f"reading {url} took longer than media.fetch_timeout_s")
                return bytes(body)
            body += chunk
            if len(body) > max_bytes:
                raise MediaError(Reason.OVERSIZED, f"{url} sent more than the limit of {max_bytes} bytes")
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(f"reading {url}: {type(exc).__name__}: {exc}") from exc
