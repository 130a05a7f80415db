"""The bytes of an image or audio event: inline ``data``, or a URI inside the configured limits.

``file://`` URIs must resolve (symlinks followed) inside one of ``media.roots`` — an event must not be able to
read ``/etc/passwd``. Remote URIs are read only when ``media.remote`` is on: ``http(s)://`` by ``http_fetch``
(public addresses only unless allowed, hosts allow-listed, redirects re-checked, timeouts, retries), ``s3://``
and ``gs://`` through fsspec (and the scheme's driver, e.g. s3fs). Every read is capped at the event size limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.http_fetch import fetch_http
from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.settings import MediaSettings

REMOTE_SCHEMES = ("s3", "gs", "gcs", "http", "https")


def content_bytes(envelope: Envelope, media: MediaSettings, max_bytes: int) -> bytes:
    if envelope.data is not None:
        return envelope.data
    if envelope.uri is None:
        raise MediaError(Reason.WRONG_CONTENT, f"event {envelope.id!r} has neither data nor uri")
    return fetch_uri(envelope.uri, media, max_bytes)


def fetch_uri(uri: str, media: MediaSettings, max_bytes: int) -> bytes:
    try:
        parsed = urlparse(uri)
    except ValueError as exc:  # an unclosed "[" and the like: the event's fault
        raise MediaError(Reason.URI_NOT_ALLOWED, f"{uri!r} is not a valid URI: {exc}") from exc
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if "\x00" in path:
            raise MediaError(Reason.URI_NOT_ALLOWED, f"{uri!r} names a path with a NUL byte")
        return _read_file(Path(path), media, max_bytes, uri)
    if parsed.scheme in REMOTE_SCHEMES:
        if not media.remote:
            raise MediaError(
                Reason.URI_NOT_ALLOWED,
                f"{parsed.scheme}:// URIs are off; enable them with EMBEDSTREAM_MEDIA__REMOTE=true ({uri})",
            )
        if parsed.scheme in ("http", "https"):
            return fetch_http(uri, media, max_bytes)
        return _read_remote(uri, max_bytes)
    raise MediaError(Reason.URI_NOT_ALLOWED, f"unsupported URI scheme {parsed.scheme!r} in {uri!r}")


def _read_file(path: Path, media: MediaSettings, max_bytes: int, uri: str) -> bytes:
    resolved = path.resolve()
    roots = [root.resolve() for root in media.roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "none configured (EMBEDSTREAM_MEDIA__ROOTS)"
        raise MediaError(Reason.URI_NOT_ALLOWED, f"{uri} is outside the allowed media roots: {allowed}")
    try:
        # Opened without blocking and checked by the open handle: a FIFO (or a device) inside the roots would
        # block the read forever, and a check by name could be raced by a swap between check and open.
        handle = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise MediaError(Reason.FETCH_FAILED, f"cannot read {uri}: {exc.strerror or exc}") from exc
    try:
        opened = Path(f"/proc/self/fd/{handle}")
        if opened.exists():  # what was opened, not what the name meant a moment before (a swapped symlink)
            where = Path(os.readlink(opened))
            if not any(where.is_relative_to(root) for root in roots):
                raise MediaError(Reason.URI_NOT_ALLOWED, f"{uri} led outside the allowed media roots when opened")
        facts = os.fstat(handle)
        if not stat.S_ISREG(facts.st_mode):
            raise MediaError(Reason.URI_NOT_ALLOWED, f"{uri} is not a regular file")
        if facts.st_size > max_bytes:
            raise MediaError(Reason.OVERSIZED, f"{uri} has {facts.st_size} bytes, over the limit of {max_bytes}")
        os.set_blocking(handle, True)
        with os.fdopen(handle, "rb", closefd=False) as file:
            data = file.read(max_bytes + 1)
        if len(data) > max_bytes:  # it grew since
            raise MediaError(Reason.OVERSIZED, f"{uri} is over the limit of {max_bytes} bytes")
        return data
    except OSError as exc:
        raise MediaError(Reason.FETCH_FAILED, f"cannot read {uri}: {exc.strerror or exc}") from exc
    finally:
        os.close(handle)


def _read_remote(uri: str, max_bytes: int) -> bytes:
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MediaError(Reason.FETCH_FAILED, "s3:// and gs:// need fsspec (and s3fs / gcsfs)") from exc
    try:
        with fsspec.open(uri, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except Exception as exc:  # any driver error is the same thing to the caller: this URI was not readable
        raise MediaError(Reason.FETCH_FAILED, f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
    if len(data) > max_bytes:
        raise MediaError(Reason.OVERSIZED, f"{uri} is over the limit of {max_bytes} bytes")
    return bytes(data)
